"""The one prediction path. A :class:`Segmenter` binds a loaded model (:mod:`.loading`) to an
:class:`~pixelwise.engine.inference.InferenceConfig`; :meth:`Segmenter.logits` turns a normalised
batch into logits (whole image or sliding windows, test-time augmentation, autocast), and
:meth:`Segmenter.decide` into probabilities and labels through :mod:`pixelwise.outputs`
(softmax/argmax, or sigmoid/threshold for one-channel models), refined by the dense CRF
(:mod:`pixelwise.crf`) when configured. Evaluate, predict, serve, training's validation and the
export and precision checks all go through it, so what is measured is what is shipped.

The model is a PyTorch module from a checkpoint (``.ckpt``) or a bundle, or an ONNX Runtime session
from an exported ``.onnx`` file (:mod:`pixelwise.engine.onnx_model`); :func:`load` takes any."""

from __future__ import annotations

import dataclasses
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
from .bundle import checked_amp
from .checkpoint import ModelMeta
from .inference import CRF_BY_DEFAULT, InferenceConfig, uses_crf_by_default
from .loading import LoadedModel, load_model
from .runtime import autocast, resolve_amp, resolve_device
from .tiling import TileConfig, padded_size, slide_labels, slide_logits
from .tta import TTAConfig, augmented_logits

if TYPE_CHECKING:
    from ..crf import CRFParams, DenseCRF

__all__ = [
    "CRF_BY_DEFAULT",
    "InferenceConfig",
    "LoadedModel",
    "Prediction",
    "Segmenter",
    "load",
    "uses_crf_by_default",
]

# Above this many bytes of float32 logits (K × H × W × 4) a sliding-window prediction streams labels
# row band by row band instead of holding every class's logits for the whole image; probabilities and
# the dense CRF need the whole image's logits, so they are refused beyond it.
FULL_LOGITS_BYTES = 1 << 30

# The most a network's padding may multiply an image's pixels by, beyond the whole-image limit
# (:meth:`Segmenter.check_shape`).
MAX_PADDING_FACTOR = 4

_AMP_NAMES: dict[torch.dtype | None, str] = {
    None: "off",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}


@dataclass
class Prediction:
    """One image's prediction: ``labels`` (H×W uint8 class indices) and, when asked for,
    ``probs`` (K×H×W float32 class probabilities; K = 2 for a sigmoid model)."""

    labels: np.ndarray
    probs: np.ndarray | None = None


class Segmenter:
    """A loaded model bound to how it is run: a :class:`LoadedModel` (network, :class:`ModelMeta`,
    bundle description) and an :class:`InferenceConfig` (precision, TTA, tiling, CRF), resolved
    for a device. :meth:`logits` is the one path from a normalised batch to logits that
    evaluate, predict, serve, training's validation and the export checks all take.

    A sigmoid model (``meta.output == "sigmoid"``) has one logit channel; its probabilities are
    ``(1 - σ, σ)`` for its two classes and its labels ``σ > meta.threshold``. With the dense CRF,
    :meth:`decide` turns logits and the input images into refined probabilities and labels.

    Args:
        model: a :class:`LoadedModel`, or a network mapping N×C×H×W images to N×K×H×W logits (K = 1
            for a sigmoid model) with its ``meta``.
        meta: the network's :class:`ModelMeta` (not with a :class:`LoadedModel`).
        config: how to run it; ``None``: :class:`InferenceConfig`'s defaults.
        device: ``auto``, ``cpu``, ``cuda``...
        amp, crf, tta, tiling, channels_last: shorthands that replace the matching field of
            ``config`` when given; ``crf`` may also be a :class:`~pixelwise.crf.DenseCRF` (its
            parameters are used).

    Attributes:
        config: the configuration as resolved for this model and device: ``amp`` is what the
            forward pass runs under (``off``, ``bf16``, ``fp16``), ``crf`` is true or false.
    """

    def __init__(
        self,
        model: nn.Module | LoadedModel,
        meta: ModelMeta | None = None,
        *,
        config: InferenceConfig | None = None,
        device: str | torch.device = "auto",
        amp: str | None = None,
        crf: DenseCRF | bool | None = None,
        tta: TTAConfig | None = None,
        tiling: TileConfig | None = None,
        channels_last: bool | None = None,
    ):
        loaded = model if isinstance(model, LoadedModel) else LoadedModel(model, meta)  # type: ignore[arg-type]
        if not isinstance(loaded.meta, ModelMeta):
            raise PixelwiseError("Segmenter needs the model's ModelMeta")
        config = _with_shorthands(config or InferenceConfig(), amp, crf, tta, tiling, channels_last)
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        net = loaded.model.to(self.device).eval()
        channels_last = config.channels_last and _has_conv(net)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.loaded = dataclasses.replace(loaded, model=net)
        recorded = InferenceConfig.recorded(
            loaded.recorded_inference
        )  # the bundle's own, parsed once
        amp = checked_amp(recorded.amp, self.device) if config.amp == "model" else config.amp
        self.amp_dtype = resolve_amp(amp, self.device)
        use_crf = uses_crf_by_default(loaded.meta) if config.crf is None else config.crf
        self.config = dataclasses.replace(
            config,
            amp=_AMP_NAMES[self.amp_dtype],
            crf=use_crf,
            crf_params=config.crf_params or recorded.crf_params,
            channels_last=channels_last,
        )
        self.crf = _dense_crf(self.config) if use_crf else None
        self._transform = build_eval_transform(mean=loaded.meta.mean, std=loaded.meta.std)

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
        config: InferenceConfig | None = None,
    ) -> Segmenter:
        """Load a checkpoint (``.ckpt``), an exported ONNX model (``.onnx``, run by ONNX Runtime),
        a model bundle (``NAME.json`` / ``NAME.safetensors``), or a bundled model by name
        (``"camvid"``) with :func:`~pixelwise.engine.loading.load_model`, run as ``config`` says
        (or as the keyword shorthands say: see :class:`InferenceConfig` for each)."""
        config = config or InferenceConfig(
            amp=amp, crf=crf, crf_params=crf_params, tta=tta, tiling=tiling or TileConfig()
        )
        return cls(load_model(path, device=device), config=config, device=device)

    def with_config(self, config: InferenceConfig) -> Segmenter:
        """The same loaded model run another way (shares the network; nothing is copied)."""
        return Segmenter(self.loaded, config=config, device=self.device)

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    @property
    def meta(self) -> ModelMeta:
        return self.loaded.meta

    @property
    def input_multiple(self) -> int:
        """The network pads its input's height and width to a multiple of this (1: no padding);
        whole-image vs sliding windows is decided on the padded size."""
        return max(1, int(getattr(self.model, "input_multiple", 1)))

    def check_shape(self, height: int, width: int) -> None:
        """Refuse an image so thin that padding would multiply the work: a side shorter than the
        network's input multiple, padded to it, makes the network compute on more than
        :data:`MAX_PADDING_FACTOR` times the image's pixels; beyond the whole-image limit that is
        minutes of work on padding (a 1 × 1,000,000 strip took 125 s and 3 GB whole, 6.5 minutes
        in 1 × 512 windows). Thin images up to the whole-image limit are predicted as they are.

        Raises:
            PixelwiseError: one line with the size and what to do.
        """
        padded = self.padded_pixels(height, width)
        limit = self.tiling.max_whole_pixels
        if padded > limit and padded > MAX_PADDING_FACTOR * height * width:
            m = self.input_multiple
            raise PixelwiseError(
                f"a {width}×{height} image is too thin for this model: it pads each side to a "
                f"multiple of {m}, {padded // (height * width)}× the image's pixels, beyond "
                f"{limit:,} pixels (--max-whole-pixels); crop it into pieces at least {m} pixels "
                "on each side, or resize it"
            )

    def padded_pixels(self, height: int, width: int) -> int:
        """How many pixels the network computes on for a ``height × width`` image seen whole."""
        h, w = padded_size(height, width, self.input_multiple)
        return h * w

    @property
    def amp(self) -> str:
        """What the forward pass runs under: ``off`` (float32), ``bf16`` or ``fp16``."""
        return self.config.amp

    @property
    def tta(self) -> TTAConfig | None:
        return self.config.tta

    @property
    def tiling(self) -> TileConfig:
        return self.config.tiling

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
        """Float32 logits of one forward pass of the network for a normalised N×C×H×W batch, under
        this configuration's precision: N×K×H×W, K = number of classes, or 1 for a sigmoid model."""
        batch = batch.to(self.device, non_blocking=True)
        if self.config.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            out = self.model(batch)
        return out.float().contiguous()

    @torch.no_grad()
    def window_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch seen whole: the network's, or with test-time augmentation
        the log of the averaged probabilities (softmax / sigmoid of them are the averaged
        probabilities). What each sliding window goes through."""
        if self.tta is None:
            return self.raw_logits(batch)
        return augmented_logits(
            self.raw_logits, batch, self.tta, sigmoid=self.meta.output == "sigmoid"
        )

    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The one inference path: logits for a normalised N×C×H×W batch under this configuration —
        each image whole, or in blended sliding windows when :attr:`tiling` says so for its size
        (:mod:`pixelwise.engine.tiling`), each view with test-time augmentation when configured.
        N×K×H×W float32 on :attr:`device`. Labels and probabilities follow from :meth:`decide`."""
        if batch.ndim != 4:
            raise PixelwiseError(f"logits need an N×C×H×W batch, got shape {tuple(batch.shape)}")
        self.check_shape(*batch.shape[-2:])
        if not self.tiling.use_slide(*batch.shape[-2:], self.input_multiple):
            return self.window_logits(batch)
        return torch.stack(
            [
                slide_logits(
                    im.permute(1, 2, 0).cpu().numpy(),
                    _chw,
                    self.window_logits,
                    self.meta.out_channels,
                    self.tiling,
                ).to(self.device)
                for im in batch
            ]
        )

    def image_logits(self, image: np.ndarray) -> torch.Tensor:
        """K×H×W logits of one uint8 H×W×C image (:meth:`preprocess`, then :meth:`logits`)."""
        if image.ndim == 2:
            image = image[..., None]
        return self.logits(self.preprocess(image)[None])[0]

    def _streams(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        return (
            self.tiling.use_slide(h, w, self.input_multiple)
            and self.meta.out_channels * h * w * 4 > FULL_LOGITS_BYTES
        )

    def segment(self, image: np.ndarray, *, probs: bool = False) -> Prediction:
        """Predict one uint8 H×W×C image of any size.

        Images too large to hold every class's logits at once (beyond 1 GiB of them) are predicted
        by sliding windows streamed row band by row band, so memory stays bounded; for those,
        ``probs`` and the dense CRF are refused.
        """
        if image.ndim == 2:
            image = image[..., None]
        self.check_shape(*image.shape[:2])
        if self._streams(image):
            if probs or self.crf is not None:
                h, w = image.shape[:2]
                what = "probabilities" if probs else "the dense CRF"
                raise PixelwiseError(
                    f"a {w}×{h} image is too large for {what} (they need every class's logits "
                    "for the whole image); predict labels only"
                )
            labels = slide_labels(  # windows normalised one at a time: nothing image-sized is held
                image,
                self.preprocess,
                self.window_logits,
                self.meta.out_channels,
                self.tiling,
                lambda block: self.labels(block[None])[0],
            )
            return Prediction(labels.astype(np.uint8, copy=False))
        logits = self.logits(self.preprocess(image)[None])
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
        if len(images) < 2 or len(sizes) > 1 or self._streams(images[0]):
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


def _chw(window: np.ndarray) -> torch.Tensor:
    """A window of an already normalised H×W×C image as a C×H×W tensor."""
    return torch.from_numpy(np.ascontiguousarray(window)).permute(2, 0, 1)


def _with_shorthands(
    config: InferenceConfig,
    amp: str | None,
    crf: DenseCRF | bool | None,
    tta: TTAConfig | None,
    tiling: TileConfig | None,
    channels_last: bool | None,
) -> InferenceConfig:
    changes: dict = {}
    if amp is not None:
        changes["amp"] = amp
    if crf is not None:
        changes["crf"] = crf if isinstance(crf, bool) else True
        if not isinstance(crf, bool):
            changes["crf_params"] = crf.params
    if tta is not None:
        changes["tta"] = tta
    if tiling is not None:
        changes["tiling"] = tiling
    if channels_last is not None:
        changes["channels_last"] = channels_last
    return dataclasses.replace(config, **changes) if changes else config


def _dense_crf(config: InferenceConfig) -> DenseCRF:
    from ..crf import DenseCRF

    return DenseCRF(config.crf_params)


def load(
    path: str | os.PathLike[str],
    *,
    device: str = "auto",
    crf: bool | None = None,
    tta: TTAConfig | bool | None = None,
    tiling: TileConfig | None = None,
    amp: str = "model",
    config: InferenceConfig | None = None,
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
        config: the whole :class:`InferenceConfig` instead of the keywords above.
    """
    if tta is True:
        tta = TTAConfig()
    return Segmenter.from_checkpoint(
        path, device=device, crf=crf, tta=tta or None, tiling=tiling, amp=amp, config=config
    )
