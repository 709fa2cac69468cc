"""The one prediction path: preprocessing, model, then probabilities and labels through
:mod:`pixelwise.outputs` (softmax/argmax, or sigmoid/threshold for one-channel models) — used by
evaluate, predict and (later) the server, so what is measured is what is shipped."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .. import outputs
from ..data.transforms import build_eval_transform, to_tensor
from .checkpoint import ModelMeta, build_model, load_checkpoint
from .runtime import autocast, resolve_amp, resolve_device

__all__ = ["Segmenter", "load"]


class Segmenter:
    """A model with what it needs to be used: classes, colours, normalisation, device.

    A sigmoid model (``meta.output == "sigmoid"``) has one logit channel; its probabilities are
    ``(1 - σ, σ)`` for its two classes and its labels ``σ > meta.threshold``.

    Args:
        model: a network mapping N×C×H×W images to N×K×H×W logits (K = 1 for a sigmoid model).
        meta: its :class:`ModelMeta`.
        device: ``auto``, ``cpu``, ``cuda``...
        amp: autocast for inference (``off`` by default: float32 logits).
    """

    def __init__(
        self, model: nn.Module, meta: ModelMeta, *, device: str = "auto", amp: str = "off"
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.amp_dtype = resolve_amp(amp, self.device)
        self._transform = build_eval_transform(mean=meta.mean, std=meta.std)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, device: str = "auto", amp: str = "off"
    ) -> Segmenter:
        ckpt = load_checkpoint(path)
        meta = ModelMeta.from_dict(ckpt.get("meta", {}), where=str(path))
        return cls(build_model(meta, ckpt["model"]), meta, device=device, amp=amp)

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
        """Class indices (int64, N×H×W) from this model's logits: argmax, or the sigmoid threshold."""
        return outputs.labels(logits, self.meta.threshold)

    def predict_proba(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities: K×H×W for one image, or N×K×H×W for a list of same-size images
        (K = number of classes, also for a sigmoid model: background, foreground)."""
        single = (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8
        )
        batch = torch.stack([self.preprocess(im) for im in ([images] if single else images)])
        probs = outputs.probabilities(self.logits(batch)).cpu().numpy()
        return probs[0] if single else probs

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class-index map(s), uint8: H×W for one image, N×H×W for a list."""
        single = (
            isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8
        )
        batch = torch.stack([self.preprocess(im) for im in ([images] if single else images)])
        labels = self.labels(self.logits(batch)).to(torch.uint8).cpu().numpy()
        return labels[0] if single else labels


def load(path: str | os.PathLike[str], *, device: str = "auto") -> Segmenter:
    """Load a trained model for prediction: ``pixelwise.load("runs/camvid/best.ckpt")``."""
    return Segmenter.from_checkpoint(path, device=device)
