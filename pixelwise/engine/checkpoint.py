"""Checkpoints: one file, written atomically, loaded without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` of plain containers and tensors only, so ``torch.load(weights_only=True)``
reads it; anything else (a pickled class, a code payload) is refused. ``meta`` records what is needed to
rebuild and use the model: architecture, its arguments, classes, colours, normalisation, and whether
it is a softmax or a one-channel sigmoid model. Fields added later have defaults, so older checkpoints
still load.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from ..errors import PixelwiseError
from ..registry import create_model

__all__ = ["FORMAT", "ModelMeta", "save_checkpoint", "load_checkpoint", "build_model"]

FORMAT = "pixelwise.checkpoint/1"


@dataclass
class ModelMeta:
    """Everything beside the weights that using a model needs."""

    arch: str
    num_classes: int
    in_channels: int
    class_names: list[str]
    colors: list[list[int]]
    mean: list[float]
    std: list[float]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    output: str = "softmax"  # "softmax", or "sigmoid": one logit channel for a 2-class dataset
    threshold: float = 0.5  # sigmoid: class 1 where σ(logit) > threshold

    def __post_init__(self) -> None:
        if self.output not in ("softmax", "sigmoid"):
            raise PixelwiseError(
                f"model output must be 'softmax' or 'sigmoid', got {self.output!r}"
            )
        if self.output == "sigmoid" and self.num_classes != 2:
            raise PixelwiseError(
                f"a sigmoid (one-channel) model needs exactly 2 classes, got {self.num_classes}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise PixelwiseError(
                f"threshold must lie strictly between 0 and 1, got {self.threshold}"
            )

    @property
    def out_channels(self) -> int:
        """Logit channels of the network: 1 for a sigmoid model, else one per class."""
        return 1 if self.output == "sigmoid" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "checkpoint") -> ModelMeta:
        try:
            return cls(**d)
        except (TypeError, PixelwiseError) as exc:
            raise PixelwiseError(f"{where}: malformed model metadata ({exc})") from None


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` (plain containers and tensors) atomically: temp file, fsync, rename."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); raise one clear line if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise PixelwiseError(f"{p}: checkpoint not found")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise PixelwiseError(
            f"{p}: refused to load: the file holds objects other than tensors and plain data "
            f"({first[:200]})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types on garbage input
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PixelwiseError(f"{p}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise PixelwiseError(f"{p}: not a pixelwise checkpoint (expected format {FORMAT})")
    return ckpt


def build_model(meta: ModelMeta, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Rebuild the architecture from ``meta`` and load ``state_dict`` when given."""
    kwargs = dict(meta.model_kwargs)
    if state_dict is not None:
        kwargs.pop("encoder_weights", None)  # pretrained weights come from the state dict instead
    model = create_model(
        meta.arch, num_classes=meta.out_channels, in_channels=meta.in_channels, **kwargs
    )
    if state_dict is not None:
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as exc:
            first = (
                str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else "shape mismatch"
            )
            raise PixelwiseError(
                f"weights do not match architecture {meta.arch!r} {meta.model_kwargs}: {first[:200]}"
            ) from None
        if missing or unexpected:
            raise PixelwiseError(
                f"weights do not match architecture {meta.arch!r}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
    return model
