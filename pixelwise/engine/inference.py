"""How a model is run: one frozen :class:`InferenceConfig` — precision, test-time augmentation,
tiling and the dense CRF with their parameters — defined once and parsed from every place a user
states it: the command line's options (:meth:`InferenceConfig.from_options`, shared by ``predict``,
``evaluate``, ``demo`` and ``serve``), the service's query parameters
(:meth:`InferenceConfig.with_options`) and a bundle's recorded ``inference`` block
(:meth:`InferenceConfig.recorded`). A :class:`~pixelwise.engine.predictor.Segmenter` binds one to a
loaded model; its ``logits`` is the one function every caller reaches logits through.

The defaults of each part live in its own dataclass (:class:`TileConfig`, :class:`TTAConfig`,
:class:`~pixelwise.crf.CRFParams`); an option left unset (``None``) keeps them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PixelwiseError
from .runtime import AMP_CHOICES
from .tiling import TileConfig
from .tta import TTAConfig

if TYPE_CHECKING:
    from ..crf import CRFParams
    from .checkpoint import ModelMeta

__all__ = ["CRF_BY_DEFAULT", "InferenceConfig", "parse_scales", "uses_crf_by_default"]

# Architectures whose paper refines every prediction with the dense CRF: their segmenters do too
# unless told otherwise (``crf=False``, ``--no-crf``).
CRF_BY_DEFAULT = frozenset({"deeplabv1"})


def uses_crf_by_default(meta: ModelMeta) -> bool:
    """Whether a model of this architecture predicts through the dense CRF by default."""
    return meta.arch in CRF_BY_DEFAULT


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.75,1,1.25"`` → ``(0.75, 1.0, 1.25)`` (TTA scales as the command line and the service
    take them)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise PixelwiseError(
            f"TTA scales (--tta-scales) {text!r}: expected comma-separated numbers such as "
            "0.75,1,1.25"
        ) from None


@dataclass(frozen=True)
class InferenceConfig:
    """How a loaded model is run. Frozen and hashable: the service batches together only requests
    with equal configurations.

    Args:
        amp: autocast of the forward pass: ``model`` (the precision the model's bundle records as
            checked, where the hardware runs it natively; float32 otherwise and for checkpoints),
            ``off`` (float32), ``bf16``, ``fp16`` (CUDA) or ``auto`` (bf16/fp16 wherever native).
        tta: test-time augmentation (flips, scales; probabilities averaged), or ``None``.
        tiling: whole image or sliding windows (:class:`TileConfig`).
        crf: refine with the dense CRF; ``None``: the architecture's default (on for DeepLab v1).
        crf_params: the CRF's parameters; ``None``: DeepLab v1's (:class:`~pixelwise.crf.CRFParams`).
        channels_last: run a PyTorch model in NHWC memory layout (faster convolutions on CPUs and
            tensor-core GPUs; the same results up to float rounding).
    """

    amp: str = "model"
    tta: TTAConfig | None = None
    tiling: TileConfig = field(default_factory=TileConfig)
    crf: bool | None = None
    crf_params: CRFParams | None = None
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_CHOICES:
            raise PixelwiseError(f"amp {self.amp!r}: expected one of {', '.join(AMP_CHOICES)}")
        if self.tta is not None and not isinstance(self.tta, TTAConfig):
            raise PixelwiseError(f"tta must be a TTAConfig or None, got {self.tta!r}")
        if not isinstance(self.tiling, TileConfig):
            raise PixelwiseError(f"tiling must be a TileConfig, got {self.tiling!r}")
        if self.crf not in (None, True, False):
            raise PixelwiseError(f"crf must be true, false or unset, got {self.crf!r}")

    # ---- parsing ---------------------------------------------------------------------------------

    @classmethod
    def from_options(cls, **options: Any) -> InferenceConfig:
        """The configuration the inference options of the command line state (``--amp``,
        ``--crf``, ``--tta``, ``--tta-scales``, ``--tile``, ``--window``, ``--overlap``,
        ``--blend``, ``--max-whole-pixels``; the keywords of :meth:`with_options`): the defaults,
        with the options that are given (not ``None``) changed."""
        return cls().with_options(**options)

    def with_options(
        self,
        *,
        amp: str | None = None,
        crf: bool | None = None,
        tta: bool | None = None,
        tta_scales: str | None = None,
        tile: str | None = None,
        window: int | None = None,
        overlap: float | None = None,
        blend: str | None = None,
        max_whole_pixels: int | None = None,
    ) -> InferenceConfig:
        """This configuration with the options that are given (not ``None``) changed: what the
        service does with a request's query parameters. ``tta=True`` keeps this configuration's
        TTA if it has one (else :class:`TTAConfig`'s defaults); ``tta_scales`` implies TTA."""
        tta_cfg = self.tta
        if tta is False:
            tta_cfg = None
        elif tta or tta_scales is not None:
            tta_cfg = tta_cfg or TTAConfig()
            if tta_scales is not None:
                tta_cfg = dataclasses.replace(tta_cfg, scales=parse_scales(tta_scales))
        tiling = {
            k: v
            for k, v in dict(
                mode=tile,
                window=window,
                overlap=overlap,
                blend=blend,
                max_whole_pixels=max_whole_pixels,
            ).items()
            if v is not None
        }
        return dataclasses.replace(
            self,
            amp=self.amp if amp is None else amp,
            crf=self.crf if crf is None else crf,
            tta=tta_cfg,
            tiling=dataclasses.replace(self.tiling, **tiling) if tiling else self.tiling,
        )

    @classmethod
    def recorded(cls, inference: dict[str, Any] | None) -> InferenceConfig:
        """The configuration a bundle's ``inference`` block records (``{"amp": "bf16", "check":
        {...}}``; checked by :func:`pixelwise.engine.bundle.bundle_info`): its precision, and the
        dense CRF's parameters when it records them (``"crf": {...}``). ``None`` or ``{}``: the
        defaults with float32."""
        inference = inference or {}
        params = None
        if isinstance(inference.get("crf"), dict):
            from ..crf import CRFParams

            params = CRFParams(**inference["crf"])
        return cls(amp=inference.get("amp", "off"), crf_params=params)

    # ---- what it says ----------------------------------------------------------------------------

    def describe(self) -> str:
        """One line for the command line's report: what differs from plain float32 whole-image
        prediction (``""`` when nothing does). ``crf=None`` (the architecture's default, not yet
        resolved for a model) is not mentioned."""
        parts = [] if self.amp in ("off", "model") else [f"autocast {self.amp}"]
        if self.tta is not None:
            parts.append(
                f"TTA: {'flips × ' if self.tta.flip else ''}scales "
                + ", ".join(f"{s:g}" for s in self.tta.scales)
            )
        t = self.tiling
        windows = f"{t.window}-pixel windows, overlap {t.overlap:g}, {t.blend} blending"
        if t.mode == "slide":
            parts.append(f"tiling slide: {windows}")
        elif t.mode == "auto" and t != TileConfig():  # the default needs no mention
            parts.append(f"tiling auto: whole up to {t.max_whole_pixels:,} pixels, then {windows}")
        if self.crf:
            from ..crf import CRFParams

            p = self.crf_params or CRFParams()
            parts.append(
                f"dense CRF: {p.iterations} iterations, Gaussian sxy {p.gaussian_sxy:g} "
                f"w {p.gaussian_weight:g}, bilateral sxy {p.bilateral_sxy:g} "
                f"srgb {p.bilateral_srgb:g} w {p.bilateral_weight:g}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what an evaluation report and the service's answers record."""
        return {
            "amp": self.amp,
            "tta": None if self.tta is None else dataclasses.asdict(self.tta),
            "tiling": dataclasses.asdict(self.tiling),
            "crf": self.crf,
            "crf_params": None if self.crf_params is None else dataclasses.asdict(self.crf_params),
        }
