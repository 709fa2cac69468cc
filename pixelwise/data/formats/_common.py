"""Helpers shared by the format readers: polygon and RLE rendering, pairing files, default splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.path import Path as _MplPath

from ...errors import PixelwiseError
from ..classes import IGNORE_INDEX

if TYPE_CHECKING:
    from ..spec import DatasetSpec, Sample, SplitSpec

__all__ = [
    "fill_polygon",
    "fill_ellipse",
    "decode_coco_rle",
    "hashed_splits",
    "keep_stems",
    "merged_options",
    "class_lookup",
    "file_head",
]


def fill_polygon(canvas: np.ndarray, points: Sequence[Sequence[float]], value: int) -> None:
    """Set the pixels of ``canvas`` whose centre lies inside the polygon to ``value``.

    Coordinates are continuous image coordinates with pixel ``(row r, column c)`` covering
    ``[c, c + 1) × [r, r + 1)`` (COCO's, LabelMe's and CVAT's convention), so pixel ``(r, c)`` is
    inside when its centre ``(c + 0.5, r + 0.5)`` is; the even-odd rule decides self-intersections.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3 or not np.isfinite(pts).all():
        return
    h, w = canvas.shape[:2]
    c0 = max(0, int(np.floor(pts[:, 0].min() - 0.5)))
    c1 = min(w - 1, int(np.ceil(pts[:, 0].max() - 0.5)))
    r0 = max(0, int(np.floor(pts[:, 1].min() - 0.5)))
    r1 = min(h - 1, int(np.ceil(pts[:, 1].max() - 0.5)))
    if c0 > c1 or r0 > r1:
        return
    cols, rows = np.meshgrid(np.arange(c0, c1 + 1), np.arange(r0, r1 + 1))
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    inside = _MplPath(pts, closed=False).contains_points(centres).reshape(rows.shape)
    canvas[r0 : r1 + 1, c0 : c1 + 1][inside] = value


def fill_ellipse(
    canvas: np.ndarray, cx: float, cy: float, rx: float, ry: float, value: int
) -> None:
    """Set the pixels whose centre lies inside the axis-aligned ellipse (a circle when rx == ry)."""
    if rx <= 0 or ry <= 0:
        return
    rows, cols = np.ogrid[: canvas.shape[0], : canvas.shape[1]]
    inside = ((cols + 0.5 - cx) / rx) ** 2 + ((rows + 0.5 - cy) / ry) ** 2 <= 1.0
    canvas[inside] = value


def _rle_counts_from_string(s: str) -> list[int]:
    """COCO's compressed RLE string: each count in 5-bit groups (+48, 0x20 = more, 0x10 = sign),
    counts after the second stored as differences from the count two before."""
    counts: list[int] = []
    p = 0
    data = s.encode("ascii")
    while p < len(data):
        x = 0
        k = 0
        more = True
        while more:
            if p >= len(data):
                raise ValueError("truncated RLE string")
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_coco_rle(rle: dict[str, Any], where: str) -> np.ndarray:
    """A COCO run-length encoding (``{"size": [h, w], "counts": [...] or "..."}``) as an H×W bool
    array. Runs alternate background/foreground, starting with background, in column-major order."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
        if isinstance(counts, bytes):
            counts = counts.decode("ascii")
        runs = (
            _rle_counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PixelwiseError(f"{where}: invalid RLE ({exc})") from None
    if any(r < 0 for r in runs) or sum(runs) != h * w:
        raise PixelwiseError(f"{where}: RLE runs cover {sum(runs)} pixels, the mask has {h}x{w}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(w, h).T


def stable_fold(stem: str, k: int = 5) -> int:
    return int(hashlib.md5(stem.encode("utf-8")).hexdigest(), 16) % k


def hashed_splits(stems: Iterable[str], base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``all``, plus ``train``/``val`` (about 80/20 by a stable hash of each stem), as YAML dicts."""
    stems = sorted(set(stems))
    val = [s for s in stems if stable_fold(s) == 0]
    train = [s for s in stems if stable_fold(s) != 0]
    splits: dict[str, dict[str, Any]] = {"all": dict(base)}
    if train and val:
        splits["train"] = {**base, "stems": train}
        splits["val"] = {**base, "stems": val}
    return splits


def keep_stems(
    samples: list[Sample],
    split: SplitSpec,
    name: str,
    problems: list[str],
    stem: Callable[[Sample], str] = lambda s: s.image.stem,
) -> list[Sample]:
    """Apply a split's ``stems`` filter (as :func:`~pixelwise.data.spec.resolve_split` does)."""
    if split.stems is None:
        return samples
    wanted = set(split.stems)
    missing = sorted(wanted - {stem(s) for s in samples})
    if missing:
        problems.append(f"split {name!r}: stems not found: {', '.join(missing[:10])}")
    return [s for s in samples if stem(s) in wanted]


def merged_options(
    fmt_name: str, defaults: dict[str, Any], given: dict[str, Any], where: str
) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise PixelwiseError(
            f"{where}: format {fmt_name!r} has no option {unknown[0]!r} "
            f"(options: {', '.join(defaults) or 'none'})"
        )
    return {**defaults, **given}


def class_lookup(spec: DatasetSpec) -> dict[str, int]:
    """Class name → index for rendering named shapes; ``__ignore__`` → the ignore label."""
    table = {c.name: i for i, c in enumerate(spec.classes)}
    table.setdefault("__ignore__", IGNORE_INDEX)
    return table


def file_head(path: Path, size: int) -> str | None:
    """The first ``size`` characters of a UTF-8 text file, for format detection; ``None`` when it
    cannot be read or is not UTF-8 there."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(size)
    except (OSError, UnicodeDecodeError):
        return None


def images_in(folder: Path, extensions: Sequence[str]) -> list[Path]:
    if not folder.is_dir():
        raise PixelwiseError(f"{folder}: folder not found")
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in extensions and f.is_file())
