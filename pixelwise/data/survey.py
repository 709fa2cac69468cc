"""What the masks of a dataset without YAML hold, from a bounded sample, and the classes read from it.

A folder with no dataset YAML gets its classes from its mask values (:func:`gray_reading`):

* only 0 and 255 (binary masks: EM membranes, retina vessels) → two classes through ``value_map``
  (0 → ``background``, 255 → ``foreground``); exact, so any other value a mask holds is reported by
  ``data validate`` instead of being silently thresholded;
* values near 0 and 255 only (lossy masks, e.g. JPEG: 0-5 and 250-255) → the ``binary`` encoding,
  thresholded at 128;
* other gray values → ``index`` classes ``class_0..class_max`` (255 = unlabelled when other values
  exist, as in VOC).

Only :data:`SURVEY_MASKS` masks, spread evenly over the sorted files, are read, so a folder of
100,000 masks is read as fast as one of 100; ``data validate`` reads every mask and flags a value the
sample missed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "SURVEY_MASKS",
    "MaskSurvey",
    "GrayReading",
    "spread",
    "survey_masks",
    "gray_reading",
    "value_ranges",
    "lossy_hint",
]

T = TypeVar("T")

SURVEY_MASKS = 100  # masks read to infer the classes of a folder without YAML
_NEAR = 32  # "near 0": 0..31; "near 255": 224..255
_NEAR_SHARE = 0.99  # share of the pixels that must lie near 0 or 255 for lossy binary masks
_THRESHOLD = 128
_YAML = "write a dataset YAML to choose otherwise"


@dataclass
class MaskSurvey:
    """The values found in the masks read: gray value → pixels, and the colours of colour masks."""

    gray: Counter[int] = field(default_factory=Counter)
    colours: set[tuple[int, int, int]] = field(default_factory=set)
    read: int = 0  # masks read
    total: int = 0  # masks there are


@dataclass(frozen=True)
class GrayReading:
    """Classes and ``mask:`` settings (YAML mappings) read from gray mask values."""

    classes: list[dict[str, Any]]
    mask: dict[str, Any]
    how: str  # for the spec's source: "binary masks: 0 → background, 255 → foreground"
    note: str | None = None  # one line for data validate / inspect, when the reading is a guess


def spread(files: Sequence[T], limit: int = SURVEY_MASKS) -> list[T]:
    """At most ``limit`` of ``files``, evenly spaced from the first to the last (one: the middle
    one; ``limit`` 0: none)."""
    n = len(files)
    if n <= limit:
        return list(files)
    if limit < 2:
        return [files[n // 2]] if limit == 1 else []
    return [files[round(i * (n - 1) / (limit - 1))] for i in range(limit)]


def survey_masks(
    files: Sequence[Path], read: Callable[[Path], np.ndarray], limit: int = SURVEY_MASKS
) -> MaskSurvey:
    """Read :func:`spread` of ``files`` and count their values (a three-channel mask whose channels
    are equal is gray)."""
    out = MaskSurvey(total=len(files))
    for f in spread(files, limit):
        raw = read(f)
        out.read += 1
        if raw.ndim == 3 and not (
            np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])
        ):
            out.colours.update(map(tuple, np.unique(raw.reshape(-1, 3), axis=0).tolist()))
            continue
        gray = raw if raw.ndim == 2 else raw[..., 0]
        values, counts = np.unique(gray, return_counts=True)
        out.gray.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    return out


def value_ranges(values: Sequence[int]) -> str:
    """Sorted integers as runs: ``0-5, 250-255`` (``0, 2`` for two apart)."""
    parts: list[str] = []
    vals = sorted(set(values))
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ", ".join(parts)


def _near_binary(gray: Mapping[int, int]) -> bool:
    """Lossy two-value masks: nearly every pixel near 0 or near 255, some of each, and values just
    under 255 (an index mask's classes 0..k with 255 unlabelled has none there)."""
    if not gray or max(gray) > 255 or min(gray) < 0:
        return False
    low = sum(n for v, n in gray.items() if v < _NEAR)
    high = sum(n for v, n in gray.items() if v >= 256 - _NEAR)
    total = sum(gray.values())
    under = any(256 - _NEAR <= v < 255 for v in gray)
    return under and low > 0 and high > 0 and low + high >= _NEAR_SHARE * total


def gray_reading(gray: Mapping[int, int]) -> GrayReading:
    """The classes a folder without YAML is read with, from its gray mask values (module docstring)."""
    values = sorted(gray)
    two = [{"name": "background", "color": [0, 0, 0]}, {"name": "foreground", "color": [255] * 3}]
    if set(values) <= {0, 255}:
        held = " and ".join(str(v) for v in values) or "no value"
        return GrayReading(
            classes=[{**two[0], "mask_value": 0}, {**two[1], "mask_value": 255}],
            mask={"encoding": "value_map"},
            how="binary masks: 0 → background, 255 → foreground",
            note=f"masks hold only {held}: read as binary (0 background, 255 foreground); {_YAML}",
        )
    if _near_binary(gray):
        t = _THRESHOLD
        return GrayReading(
            classes=two,
            mask={"encoding": "binary", "threshold": t},
            how=f"lossy binary masks: < {t} → background, >= {t} → foreground",
            note=f"masks hold values near 0 and 255 only ({value_ranges(values)}; lossy, e.g. "
            f"JPEG): read as binary with threshold {t} (< {t} background, >= {t} foreground); {_YAML}",
        )
    ignore = 255 if 255 in gray else None
    top = max(v for v in values if v != ignore)
    return GrayReading(
        classes=[{"name": f"class_{i}"} for i in range(top + 1)],
        mask={"encoding": "index", "ignore_index": ignore},
        how=f"index masks: values 0..{top} → class_0..class_{top}"
        + (", 255 → unlabelled" if ignore is not None else ""),
    )


def lossy_hint(undeclared: Mapping[str, int], num_classes: int) -> str | None:
    """One line suggesting the ``binary`` encoding when a two-class spec meets lossy masks: every
    undeclared value lies near 0 or 255 (not 0 or 255 themselves)."""
    if num_classes != 2 or not undeclared:
        return None
    if not all(k.isdigit() for k in undeclared):
        return None
    values = [int(k) for k in undeclared]
    if not all(0 < v < _NEAR or 256 - _NEAR <= v < 255 for v in values):
        return None
    return (
        f"mask values {value_ranges(values)} lie near 0 and 255 (lossy masks, e.g. JPEG): "
        f"`mask: {{encoding: binary, threshold: {_THRESHOLD}}}` reads them as two classes"
    )
