"""Class definitions: names, display colours, and the internal ignore label."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["IGNORE_INDEX", "ClassInfo", "default_colors", "palette_bytes"]

IGNORE_INDEX = 255
"""Internal label for unlabelled pixels. Every dataset's own void value is mapped to it on reading."""


class ClassInfo(BaseModel):
    """One class: its name, display colour and (for ``value_map`` masks) its value in the mask files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    color: tuple[int, int, int] | None = None
    mask_value: int | None = Field(default=None, description="value in the mask files (value_map)")


def default_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colours (golden-ratio hues) for classes that declare none."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.65, 0.95 if i % 2 == 0 else 0.7)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def palette_bytes(colors: Sequence[Sequence[int]]) -> list[int]:
    """A 256-entry PIL palette: class colours first, black for the rest (255 = ignore)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i, c in enumerate(colors[:255]):
        pal[i] = c
    return pal.reshape(-1).tolist()
