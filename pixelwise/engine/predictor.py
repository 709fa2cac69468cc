"""The one prediction path: preprocessing, model (whole image or sliding windows, with optional
test-time augmentation), then probabilities and labels through :mod:`pixelwise.outputs`
(softmax/argmax, or sigmoid/threshold for one-channel models), refined by the dense CRF
(:mod:`pixelwise.crf`) when the segmenter has one — used by evaluate, predict, export checks and the
server, so what is measured is what is shipped.

The model is a PyTorch module from a checkpoint (``.ckpt``) or an ONNX Runtime session from an
exported ``.onnx`` file (:mod:`pixelwise.engine.onnx_model`); :func:`load` takes either."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .. import outputs
from ..data.transforms import build_eval_transform, to_tensor
from ..errors import PixelwiseError
from .bundle import checked_amp, is_bundle_path, read_bundle, resolve_model
from .checkpoint import ModelMeta, build_model, load_checkpoint
from .runtime import autocast, resolve_amp, resolve_device
from .tiling import TileConfig, slide_labels, slide_logits
from .tta import TTAConfig, augmented_logits

if TYPE_CHECKING:
    from ..crf import CRFParams, DenseCRF

__all__ = ["CRF_BY_DEFAULT", "Prediction", "Segmenter", "load", "uses_crf_by_default"]

# Above this many bytes of float32 logits (K × H × W × 4) a sliding-window prediction streams labels
# row band by row band instead of holding every class's logits for the whole image; probabilities and
# the dense CRF need the whole image's logits, so they are refused beyond it.
FULL_LOGITS_BYTES = 1 << 30

# Architectures whose paper refines every prediction with the dense CRF: their segmenters do too
# unless told otherwise (``crf=False``, ``--no-crf``).
CRF_BY_DEFAULT = frozenset({"deeplabv1"})

_AMP_NAMES: dict[torch.dtype | None, str] = {
    None: "off",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}


def uses_crf_by_default(meta: ModelMeta) -> bool:
    """Whether a model of this architecture predicts through the dense CRF by default."""
    return meta.arch in CRF_BY_DEFAULT


@dataclass
class Prediction:
    """One image's prediction: ``labels`` (H×W uint8 class indices) and, when asked for,
    ``probs`` (K×H×W float32 class probabilities; K = 2 for a sigmoid model)."""

    labels: np.ndarray
    probs: np.ndarray | None = None


class Segmenter:
    """A model with what it needs to be used: classes, colours, normalisation, device, and how to
    run it (test-time augmentation, sliding windows).

    A sigmoid model (``meta.output == "sigmoid"``) has one logit channel; its probabilities are
    ``(1 - σ, σ)`` for its two classes and its labels ``σ > meta.threshold``.

    With a dense CRF (``crf``), every prediction is refined by it: :meth:`decide` turns logits and
    the input images into the refined probabilities and labels (for a sigmoid model, the CRF refines
    ``(1 - σ, σ)`` and the label is still ``p_1 > meta.threshold``).

    Args:
        model: a network mapping N×C×H×W images to N×K×H×W logits (K = 1 for a sigmoid model).
        meta: its :class:`ModelMeta`.
        device: ``auto``, ``cpu``, ``cuda``...
        amp: autocast for inference (``off`` by default: float32 logits; see :func:`load`).
        crf: the dense CRF to refine predictions with, or ``None``.
        tta: test-time augmentation (flips, scales; probabilities averaged), or ``None``.
        tiling: whole image or sliding windows (:class:`TileConfig`; default: whole image up to
            2048 × 2048 pixels, 512-pixel windows with 25 % overlap and Gaussian blending beyond).
        channels_last: run a PyTorch model in NHWC memory layout (faster convolutions on CPUs and
            tensor-core GPUs; same results up to float rounding).
    """

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        *,
        device: str = "auto",
        amp: str = "off",
        crf: DenseCRF | None = None,
        tta: TTAConfig | None = None,
        tiling: TileConfig | None = None,
        channels_last: bool = True,
    ):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.channels_last = channels_last and isinstance(model, nn.Module) and _has_conv(model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.meta = meta
        self.amp_dtype = resolve_amp(amp, self.device)
        self.amp = _AMP_NAMES[self.amp_dtype]  # what the forward pass runs under: off, bf16, fp16
        self.crf = crf
        self.tta = tta
        self.tiling = tiling or TileConfig()
        self._transform = build_eval_transform(mean=meta.mean, std=meta.std)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        amp: str = "model",
        crf: bool | None = None,
        crf_params: CRFParams | None = None,
        tta: TTAConfig | None = None,
        tiling: TileConfig | None = None,
    ) -> Segmenter:
        """Load a checkpoint (``.ckpt``), an exported ONNX model (``.onnx``, run by ONNX Runtime),
        a model bundle (``NAME.json`` / ``NAME.safetensors``), or a bundled model by name
        (``"camvid"``; see :mod:`pixelwise.pretrained`). An existing file wins over a bundled name.

        Args:
            path: the model file, or a bundled model's name.
            amp: autocast for the forward pass (:func:`load`); ``model`` (the default): the reduced
                precision a bundle records as checked, where the hardware runs it natively, else
                float32.
            crf: refine predictions with the dense CRF; ``None``: the architecture's default (on for
                :data:`CRF_BY_DEFAULT`, i.e. DeepLab v1).
            crf_params: its parameters; ``None``: DeepLab v1's (:class:`pixelwise.crf.CRFParams`).
            tta: test-time augmentation, or ``None``.
            tiling: whole image or sliding windows; ``None``: :class:`TileConfig`'s defaults.
        """
        path = resolve_model(path)
        info = None
        if path.suffix.lower() == ".onnx":
            from .onnx_model import load_onnx

            model, meta = load_onnx(path, device=device)
        elif is_bundle_path(path):
            model, meta, info = read_bundle(path)
        else:
            ckpt = load_checkpoint(path)
            meta = ModelMeta.from_dict(ckpt.get("meta", {}), where=str(path))
            model = build_model(meta, ckpt["model"])
        dense_crf = None
        if uses_crf_by_default(meta) if crf is None else crf:
            from ..crf import DenseCRF

            dense_crf = DenseCRF(crf_params)
        if amp == "model":
            amp = checked_amp(info, resolve_device(device))
        return cls(model, meta, device=device, amp=amp, crf=dense_crf, tta=tta, tiling=tiling)

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
    def raw_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Float32 logits of one forward pass of the model for a normalised N×C×H×W batch:
        N×K×H×W, K = number of classes, or 1 for a sigmoid model."""
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            out = self.model(batch)
        return out.float().contiguous()

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a normalised N×C×H×W batch as this segmenter predicts them: the model's, or
        with test-time augmentation the log of the averaged probabilities (a drop-in for logits:
        softmax / sigmoid of them are the averaged probabilities). N×K×H×W float32."""
        if self.tta is None:
            return self.raw_logits(batch)
        return augmented_logits(
            self.raw_logits, batch, self.tta, sigmoid=self.meta.output == "sigmoid"
        )

    def image_logits(self, image: np.ndarray) -> torch.Tensor:
        """K×H×W logits of one uint8 H×W×C image: whole image, or sliding windows when
        :attr:`tiling` says so for its size (blended, as :mod:`pixelwise.engine.tiling` describes)."""
        h, w = image.shape[:2]
        if not self.tiling.use_slide(h, w):
            return self.logits(self.preprocess(image)[None])[0]
        return slide_logits(
            image, self.preprocess, self.logits, self.meta.out_channels, self.tiling
        ).to(self.device)

    def _streams(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        return (
            self.tiling.use_slide(h, w) and self.meta.out_channels * h * w * 4 > FULL_LOGITS_BYTES
        )

    def segment(self, image: np.ndarray, *, probs: bool = False) -> Prediction:
        """Predict one uint8 H×W×C image of any size.

        Images too large to hold every class's logits at once (beyond 1 GiB of them) are predicted
        by sliding windows streamed row band by row band, so memory stays bounded; for those,
        ``probs`` and the dense CRF are refused.
        """
        if image.ndim == 2:
            image = image[..., None]
        if self._streams(image):
            if probs or self.crf is not None:
                h, w = image.shape[:2]
                what = "probabilities" if probs else "the dense CRF"
                raise PixelwiseError(
                    f"a {w}×{h} image is too large for {what} (they need every class's logits "
                    "for the whole image); predict labels only"
                )
            labels = slide_labels(
                image,
                self.preprocess,
                self.logits,
                self.meta.out_channels,
                self.tiling,
                lambda block: self.labels(block[None])[0],
            )
            return Prediction(labels.astype(np.uint8, copy=False))
        logits = self.image_logits(image)[None]
        p, labels = self._decide(logits, image[None], probs)
        return Prediction(
            labels[0].to(torch.uint8).cpu().numpy(),
            None if p is None else p[0].cpu().numpy().astype(np.float32),
        )

    def segment_batch(
        self, images: Sequence[np.ndarray], *, probs: bool = False
    ) -> list[Prediction]:
        """Predict a list of images: same-size images that fit whole go through the model as one
        batch; the others one by one (:meth:`segment`)."""
        images = [im if im.ndim == 3 else im[..., None] for im in images]
        sizes = {im.shape for im in images}
        h, w = images[0].shape[:2] if images else (0, 0)
        if len(images) < 2 or len(sizes) > 1 or self.tiling.use_slide(h, w):
            return [self.segment(im, probs=probs) for im in images]
        logits = self.logits(torch.stack([self.preprocess(im) for im in images]))
        p, labels = self._decide(logits, np.stack(images) if self.crf else None, probs)
        labels_np = labels.to(torch.uint8).cpu().numpy()
        p_np = None if p is None else p.cpu().numpy().astype(np.float32)
        return [
            Prediction(labels_np[i], None if p_np is None else p_np[i]) for i in range(len(images))
        ]

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

    def _decide(
        self, logits: torch.Tensor, images: np.ndarray | None, probs: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """:meth:`decide`, skipping the probabilities when they are not asked for and no CRF needs
        them (labels straight from the logits: the same argmax, without a softmax)."""
        if probs or self.crf is not None:
            return self.decide(logits, images)
        return None, self.labels(logits)

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
        probs = np.stack([p.probs for p in self.segment_batch(raw, probs=True)])  # type: ignore[misc]
        return probs[0] if single else probs

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Class-index map(s), uint8: H×W for one image, N×H×W for a list of same-size images."""
        single, raw = self._batch(images)
        labels = np.stack([p.labels for p in self.segment_batch(raw)])
        return labels[0] if single else labels


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def load(
    path: str | os.PathLike[str],
    *,
    device: str = "auto",
    crf: bool | None = None,
    tta: TTAConfig | bool | None = None,
    tiling: TileConfig | None = None,
    amp: str = "model",
) -> Segmenter:
    """Load a trained model for prediction: ``pixelwise.load("runs/camvid/best.ckpt")``, an
    exported ``model.onnx``, a bundle's ``NAME.json``, or a bundled model by name:
    ``pixelwise.load("camvid")`` (an existing file of that name wins).

    Args:
        path: the model file, or a bundled model's name (:func:`pixelwise.pretrained.list_bundled`).
        crf: refine with the dense CRF (``None``: the architecture's default, on for DeepLab v1).
        tta: test-time augmentation: ``True`` for horizontal flips and scales 0.75, 1, 1.25, or a
            :class:`TTAConfig`.
        tiling: whole image or sliding windows (:class:`TileConfig`).
        amp: autocast for the forward pass: ``model`` (the default: the precision the model's
            bundle records as checked — ``bf16`` for the bundled ``camvid``, same test mIoU as
            float32 — where the hardware runs it natively, float32 otherwise and for checkpoints),
            ``off`` (float32), ``bf16``, ``fp16`` (CUDA) or ``auto`` (bf16/fp16 wherever native).
            ``bf16`` roughly halves the bundled ``camvid`` model's time on CPUs with AVX-512 BF16
            (docs/models/camvid.md).
    """
    if tta is True:
        tta = TTAConfig()
    return Segmenter.from_checkpoint(
        path, device=device, crf=crf, tta=tta or None, tiling=tiling, amp=amp
    )
