"""The one prediction path: preprocessing, model, then probabilities and labels through
:mod:`pixelwise.outputs` (softmax/argmax, or sigmoid/threshold for one-channel models), refined by the
dense CRF (:mod:`pixelwise.crf`) when the segmenter has one — used by evaluate, predict and (later) the
server, so what is measured is what is shipped."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .. import outputs
from ..data.transforms import build_eval_transform, to_tensor
from ..errors import PixelwiseError
from .checkpoint import ModelMeta, build_model, load_checkpoint
from .runtime import autocast, resolve_amp, resolve_device

if TYPE_CHECKING:
    from ..crf import CRFParams, DenseCRF

__all__ = ["CRF_BY_DEFAULT", "Segmenter", "load", "uses_crf_by_default"]

# Architectures whose paper refines every prediction with the dense CRF: their segmenters do too
# unless told otherwise (``crf=False``, ``--no-crf``).
CRF_BY_DEFAULT = frozenset({"deeplabv1"})


def uses_crf_by_default(meta: ModelMeta) -> bool:
    """Whether a model of this architecture predicts through the dense CRF by default."""
    return meta.arch in CRF_BY_DEFAULT


class Segmenter:
    """A model with what it needs to be used: classes, colours, normalisation, device.

    A sigmoid model (``meta.output == "sigmoid"``) has one logit channel; its probabilities are
    ``(1 - σ, σ)`` for its two classes and its labels ``σ > meta.threshold``.

    With a dense CRF (``crf``), every prediction is refined by it: :meth:`decide` turns logits and
    the input images into the refined probabilities and labels (for a sigmoid model, the CRF refines
    ``(1 - σ, σ)`` and the label is still ``p_1 > meta.threshold``).

    Args:
        model: a network mapping N×C×H×W images to N×K×H×W logits (K = 1 for a sigmoid model).
        meta: its :class:`ModelMeta`.
        device: ``auto``, ``cpu``, ``cuda``...
        amp: autocast for inference (``off`` by default: float32 logits).
        crf: the dense CRF to refine predictions with, or ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        *,
        device: str = "auto",
        amp: str = "off",
        crf: DenseCRF | None = None,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.amp_dtype = resolve_amp(amp, self.device)
        self.crf = crf
        self._transform = build_eval_transform(mean=meta.mean, std=meta.std)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        amp: str = "off",
        crf: bool | None = None,
        crf_params: CRFParams | None = None,
    ) -> Segmenter:
        """Load a checkpoint.

        Args:
            crf: refine predictions with the dense CRF; ``None``: the architecture's default (on for
                :data:`CRF_BY_DEFAULT`, i.e. DeepLab v1).
            crf_params: its parameters; ``None``: DeepLab v1's (:class:`pixelwise.crf.CRFParams`).
        """
        ckpt = load_checkpoint(path)
        meta = ModelMeta.from_dict(ckpt.get("meta", {}), where=str(path))
        dense_crf = None
        if uses_crf_by_default(meta) if crf is None else crf:
            from ..crf import DenseCRF

            dense_crf = DenseCRF(crf_params)
        return cls(build_model(meta, ckpt["model"]), meta, device=device, amp=amp, crf=dense_crf)

    @property
    def class_names(self) -> list[str]:
        return self.meta.class_names

    @property
    def colors(self) -> list[list[int]]:
        return self.meta.colors

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H×W×C image → normalised C×H×W float tensor."""
        return to_tensor(self._transform(image=image)["image"])

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 raw logits for a normalised N×C×H×W batch (on this segmenter's device): N×K×H×W,
        K = number of classes, or 1 for a sigmoid model."""
        batch = batch.to(self.device, non_blocking=True)
        with autocast(self.device, self.amp_dtype):
            out = self.model(batch)
        return out.float()

    def labels(self, logits: torch.Tensor) -> torch.Tensor:
        """Class indices (int64, N×H×W) from this model's logits: argmax, or the sigmoid threshold
        (without the CRF; :meth:`decide` applies it)."""
        return outputs.labels(logits, self.meta.threshold)

    def decide(
        self, logits: torch.Tensor, images: np.ndarray | torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (N×K×H×W float32) and labels (N×H×W int64) from this model's logits, refined
        by the dense CRF when this segmenter has one — then ``images``, the uint8 N×H×W×C inputs
        the logits came from, are required.

        K is the number of classes, also for a sigmoid model (background, foreground).
        """
        if self.crf is None:
            return outputs.probabilities(logits), self.labels(logits)
        if images is None:
            raise PixelwiseError(
                "this segmenter refines predictions with the dense CRF, which needs the images"
            )
        if images.ndim == 3:
            images = images[..., None]  # N×H×W grayscale
        out = self.crf(images, logits=outputs.two_class_logits(logits.float()))
        probs, labels = out.probs, out.labels
        if self.meta.output == "sigmoid":
            labels = (probs[:, 1] > self.meta.threshold).long()
        return probs, labels

    def _batch(self, images: np.ndarray | Sequence[np.ndarray]) -> tuple[bool, np.ndarray]:
        single = (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8
        )
        raw = [images] if single else list(images)
        return single, raw

    def predict_proba(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities: K×H×W for one image, or N×K×H×W for a list of same-size images
        (K = number of classes, also for a sigmoid model: background, foreground)."""
        single, raw = self._batch(images)
        logits = self.logits(torch.stack([self.preprocess(im) for im in raw]))
        probs = self.decide(logits, _stack_uint8(raw) if self.crf else None)[0].cpu().numpy()
        return probs[0] if single else probs

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class-index map(s), uint8: H×W for one image, N×H×W for a list."""
        single, raw = self._batch(images)
        logits = self.logits(torch.stack([self.preprocess(im) for im in raw]))
        labels = self.decide(logits, _stack_uint8(raw) if self.crf else None)[1]
        labels = labels.to(torch.uint8).cpu().numpy()
        return labels[0] if single else labels


def _stack_uint8(images: list[np.ndarray]) -> np.ndarray:
    """Same-size uint8 images as one N×H×W×C array (grayscale H×W gets C = 1)."""
    return np.stack([im if im.ndim == 3 else im[..., None] for im in images])


def load(
    path: str | os.PathLike[str], *, device: str = "auto", crf: bool | None = None
) -> Segmenter:
    """Load a trained model for prediction: ``pixelwise.load("runs/camvid/best.ckpt")``.

    ``crf``: refine with the dense CRF (``None``: the architecture's default, on for DeepLab v1)."""
    return Segmenter.from_checkpoint(path, device=device, crf=crf)
