"""Padding to a stride multiple and resizing back: how models accept any input size.

Both skip their work only when it is *known* to be a no-op: in eager mode sizes are plain integers and
that is a plain comparison; while exporting (``torch.export`` / ONNX) sizes are symbolic, so the pad and
the resize stay in the graph (a zero pad and a same-size bilinear resize are exact no-ops) instead of
being decided once for the sample input's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

__all__ = ["pad_to_multiple", "resize_to"]


def _known_true(cond: bool | torch.SymBool | torch.Tensor) -> bool:
    """``cond`` when it is decided; for a symbolic size (exporting) only whether it is provably true.

    A tensor (``torch.jit.trace``) is read as before, for the traced input's size."""
    if isinstance(cond, torch.SymBool):
        return statically_known_true(cond)
    return bool(cond)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad the bottom/right of ``x`` so H and W are multiples of ``multiple``.

    Returns:
        The padded tensor and the original ``(H, W)`` to crop back to.

    Shape:
        x: (N, C, H, W) → (N, C, H', W') with H' = ceil(H / multiple) * multiple.
    """
    h, w = x.shape[-2:]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    if not (_known_true(ph == 0) and _known_true(pw == 0)):
        x = F.pad(x, (0, pw, 0, ph))
    return x, (h, w)


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False) to ``size``; a no-op when already that size."""
    if all(_known_true(a == b) for a, b in zip(x.shape[-2:], size, strict=True)):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
