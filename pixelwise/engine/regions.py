"""What a class-index map contains: pixels per class, connected regions, and COCO-style run lengths.

:func:`regions_summary` counts each class's pixels and finds its connected regions — 8-connected
components (pixels touching by an edge or a corner belong to one region), labelled with
``scipy.ndimage.label`` (scipy comes with albumentations, a core dependency), one class at a time
within that class's bounding box. :func:`labels_rle` encodes each class present as COCO's
uncompressed run-length encoding (column-major, first run counting zeros), which
``pycocotools.mask.frPyObjects`` reads; :func:`rle_decode` turns one back into a mask.

Pure numpy and scipy, no model: ``pixelwise serve`` returns these as JSON.

::

    summary = regions_summary(labels, seg.class_names)
    summary["classes"]  # [{"index": 3, "name": "road", "pixels": 1200, "fraction": 0.25}, ...]
    summary["regions"]  # [{"class": "road", "index": 3, "bbox": [0, 40, 480, 360], "area": 1100}, ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import PixelwiseError

__all__ = ["labels_rle", "regions_summary", "rle_decode", "rle_encode"]

# 8-connectivity: the 3 × 3 neighbourhood, corners included.
_EIGHT = np.ones((3, 3), dtype=bool)


def _check_labels(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise PixelwiseError(
            f"labels must be an H×W integer class-index map, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise PixelwiseError(
            f"labels hold class indices {labels.min()}..{labels.max()}, "
            f"but {len(class_names)} class names were given"
        )
    return labels


def regions_summary(
    labels: np.ndarray, class_names: Sequence[str], *, max_regions: int | None = None
) -> dict[str, Any]:
    """Classes present with their pixel counts, and every class's 8-connected regions.

    Args:
        labels: H×W class indices (any integer type), each below ``len(class_names)``.
        class_names: the model's class names, by index.
        max_regions: keep only this many regions (the largest); ``None`` keeps all.

    Returns:
        ``{"width", "height", "classes", "regions", "regions_total"}``: ``classes`` lists the classes
        present in index order as ``{"index", "name", "pixels", "fraction"}`` (fraction of the image's
        pixels); ``regions`` lists ``{"class", "index", "bbox", "area"}`` largest first (ties: class
        index, then the order in which a row-by-row scan meets them), where ``bbox`` is
        ``[x0, y0, x1, y1]`` with exclusive ends (the region's pixels lie in columns
        ``x0 <= x < x1`` and rows ``y0 <= y < y1``) and ``area`` its pixel count;
        ``regions_total`` counts the regions before ``max_regions`` cut the list.
    """
    labels = _check_labels(labels, class_names)
    if max_regions is not None and max_regions < 0:
        raise PixelwiseError(f"max_regions must be >= 0 or None, got {max_regions}")
    h, w = labels.shape
    counts = np.bincount(labels.reshape(-1), minlength=len(class_names))
    classes = [
        {
            "index": int(i),
            "name": class_names[i],
            "pixels": int(counts[i]),
            "fraction": float(counts[i]) / (h * w),
        }
        for i in np.flatnonzero(counts)
    ]
    found: list[tuple[int, int, int, list[int]]] = []  # (-area, class, scan order, bbox)
    # one pass for every class's bounding box (find_objects' label k + 1 is class k)
    boxes = ndimage.find_objects(labels.astype(np.int32) + 1) if labels.size else []
    for i, box in enumerate(boxes):
        if box is None:
            continue
        ys, xs = box
        # ndimage.label numbers regions in the order a row-by-row scan meets them
        comp, n = ndimage.label(labels[box] == i, structure=_EIGHT)
        areas = np.bincount(comp.reshape(-1), minlength=n + 1)
        for j, (ry, rx) in enumerate(ndimage.find_objects(comp)):
            bbox = [
                xs.start + rx.start,
                ys.start + ry.start,
                xs.start + rx.stop,
                ys.start + ry.stop,
            ]
            found.append((-int(areas[j + 1]), i, j, bbox))
    found.sort(key=lambda r: r[:3])
    total = len(found)
    if max_regions is not None:
        found = found[:max_regions]
    regions = [
        {"class": class_names[i], "index": i, "bbox": bbox, "area": -neg}
        for neg, i, _, bbox in found
    ]
    return {
        "width": int(w),
        "height": int(h),
        "classes": classes,
        "regions": regions,
        "regions_total": total,
    }


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed run-length encoding of a binary H×W mask.

    The mask is read column by column (Fortran order, as COCO does); ``counts`` alternate runs of
    0 and 1 and always start with a run of 0 (of length 0 when the first pixel is set).

    Returns:
        ``{"size": [height, width], "counts": [run, run, ...]}``.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise PixelwiseError(f"rle_encode needs an H×W mask, got shape {mask.shape}")
    flat = mask.astype(bool).reshape(-1, order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], change, [flat.size])))
    if flat.size and flat[0]:
        counts = np.concatenate(([0], counts))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts.tolist()}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """The binary H×W mask (bool) of an uncompressed RLE from :func:`rle_encode`."""
    h, w = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise PixelwiseError(f"RLE counts add up to {counts.sum()}, not {h}×{w} = {h * w} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((h, w), order="F")


def labels_rle(labels: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One COCO RLE per class present, in index order:
    ``[{"index", "name", "size": [H, W], "counts": [...]}, ...]`` (see :func:`rle_encode`)."""
    labels = _check_labels(labels, class_names)
    present = np.flatnonzero(np.bincount(labels.reshape(-1), minlength=len(class_names)))
    return [{"index": int(i), "name": class_names[i], **rle_encode(labels == i)} for i in present]
