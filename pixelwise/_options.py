"""Command-line options shared by :mod:`pixelwise.cli` and :mod:`pixelwise.serve.cli`.

The inference options (precision, TTA, tiling, CRF) are declared once here and added to a command by
:func:`inference_options`; the command receives them parsed into one
:class:`~pixelwise.engine.inference.InferenceConfig`. Every option defaults to ``None`` ("the
configuration's default"), so each default has one home: the dataclass it belongs to.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from .engine.inference import InferenceConfig
from .engine.tiling import TileConfig
from .engine.tta import TTAConfig

__all__ = ["AmpOption", "DeviceOption", "INFERENCE_OPTIONS", "inference_options"]

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda[:N].")]
AmpOption = Annotated[
    str | None,
    typer.Option(
        help="Autocast for the forward pass: model (the precision a bundle records as checked, "
        "bf16 for the bundled camvid, where the CPU/GPU runs it natively; float32 otherwise and "
        "for checkpoints), off (float32), bf16, fp16 (CUDA) or auto (bf16/fp16 wherever native). "
        "bf16 halves the bundled camvid model's time on CPUs with AVX-512 BF16 at the same test "
        "mIoU (docs/models/camvid.md). [default: model]",
        show_default=False,
    ),
]

_SCALES = ",".join(f"{s:g}" for s in TTAConfig.scales)


def _opt(help: str, *decls: str) -> Any:
    return typer.Option(*decls, help=help, show_default=False)


# name → annotation of each inference option, as InferenceConfig.from_options takes them
INFERENCE_OPTIONS: dict[str, Any] = {
    "amp": AmpOption,
    "crf": Annotated[
        bool | None,
        _opt(
            "Refine with the dense CRF (DeepLab v1's parameters) [default: on for deeplabv1 only].",
            "--crf/--no-crf",
        ),
    ],
    "tta": Annotated[
        bool | None,
        _opt(
            "Test-time augmentation: average the probabilities over horizontal flips and scales "
            "[default: off].",
            "--tta/--no-tta",
        ),
    ],
    "tta_scales": Annotated[
        str | None, _opt(f"TTA scales, comma-separated (implies --tta) [default: {_SCALES}].")
    ],
    "tile": Annotated[
        str | None,
        _opt(
            "auto: whole image up to --max-whole-pixels, sliding windows beyond; whole; slide "
            f"[default: {TileConfig.mode}]."
        ),
    ],
    "window": Annotated[
        int | None, _opt(f"Sliding-window side in pixels [default: {TileConfig.window}].")
    ],
    "overlap": Annotated[
        float | None,
        _opt(f"Fraction of a window shared by neighbours [default: {TileConfig.overlap:g}]."),
    ],
    "blend": Annotated[
        str | None,
        _opt(
            "Weights of overlapping windows: gaussian, linear or uniform "
            f"[default: {TileConfig.blend}]."
        ),
    ],
    "max_whole_pixels": Annotated[
        int | None,
        _opt(
            "auto tiling: largest H×W predicted as a whole image "
            f"[default: {TileConfig.max_whole_pixels}]."
        ),
    ],
}


def inference_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command every inference option (:data:`INFERENCE_OPTIONS`); the command takes
    them as one keyword argument, ``inference: InferenceConfig``, in their place."""
    hints = typing.get_type_hints(command, include_extras=True)
    kept = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for p in inspect.signature(command).parameters.values()
        if p.name != "inference"
    ]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
        for name, ann in INFERENCE_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        given = {name: kwargs.pop(name, None) for name in INFERENCE_OPTIONS}
        return command(**kwargs, inference=InferenceConfig.from_options(**given))

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept] + added
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer reads the signature above, not the command's
    return wrapper
