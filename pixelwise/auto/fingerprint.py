"""A dataset fingerprint: the few numbers that planning rules read, from a bounded sample.

The idea is nnU-Net's (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based
biomedical image segmentation", Nature Methods 18, 2021): summarise a dataset once (image sizes,
intensities, classes) and derive the training recipe from that summary by fixed rules
(:mod:`pixelwise.auto.plan`) instead of tuning by hand.

What is read is bounded: at most ``max_images`` labelled samples spread evenly over the split(s)
(:func:`pixelwise.data.survey.spread`), and connected components on at most ``max_component_images``
of those. Every statistic below comes from that sample, and the JSON says how many were read out of
how many there are (``sampled`` / ``sample_of``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..data.classes import IGNORE_INDEX
from ..data.formats import read_sample_image, read_sample_mask
from ..data.spec import DatasetSpec, Sample, decode_mask, load_dataset_spec, resolve_split
from ..data.survey import spread, value_ranges
from ..errors import PixelwiseError

__all__ = ["MAX_IMAGES", "MAX_COMPONENT_IMAGES", "Fingerprint", "fingerprint", "default_splits"]

MAX_IMAGES = 64  # labelled samples read for sizes, intensities and class statistics
MAX_COMPONENT_IMAGES = 16  # of those, the ones whose classes are split into connected components
_TRAIN_NAMES = ("train", "trainval", "all")


@dataclass(frozen=True)
class Fingerprint:
    """What a dataset looks like, from a bounded sample (module docstring).

    Sizes are in pixels, intensities on a 0..1 scale per channel, class lists in class-index order.
    ``class_frequency`` is each class's share of the labelled pixels, ``class_presence`` the share
    of sampled images holding at least one of its pixels; ``object_median_area`` and
    ``object_p5_area`` are the median and 5th-percentile areas of its 4-connected components
    (``None`` for a class never seen in the component sample); ``object_pixel_median_area`` is the
    area of the component that holds the median pixel of the class (components weighted by their
    area: speckles of a few pixels in an annotation barely move it, unlike the 5th percentile).
    """

    name: str
    dataset: str  # the dataset YAML or folder, for the recipe's data.dataset
    num_classes: int
    class_names: list[str]
    image_channels: int
    gray_as_rgb: bool  # three-channel images whose channels were equal in every sampled image
    splits: dict[str, dict[str, int]]  # split → {"images": n, "labelled": n with a mask}
    fingerprinted_splits: list[str]
    sampled: int
    sample_of: int
    component_images: int
    height: dict[str, float]  # min, median, max
    width: dict[str, float]
    aspect_ratio: dict[str, float]  # width / height: min, median, max
    intensity_mean: list[float]
    intensity_std: list[float]
    class_frequency: list[float]
    class_presence: list[float]
    ignored_fraction: float
    object_median_area: list[float | None]
    object_p5_area: list[float | None]
    object_pixel_median_area: list[float | None]
    mask_values: str  # raw values seen in the sampled masks, as ranges: "0, 255"
    notes: list[str] = field(default_factory=list)  # mask patterns and how the spec was read

    @property
    def has_val(self) -> bool:
        return self.splits.get("val", {}).get("labelled", 0) > 0

    @property
    def has_test(self) -> bool:
        return self.splits.get("test", {}).get("labelled", 0) > 0

    @property
    def median_size(self) -> tuple[float, float]:
        return self.height["median"], self.width["median"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PixelwiseError(f"fingerprint: unknown keys {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        return cls.from_dict(json.loads(text))


@dataclass
class _Tally:
    """Running totals over the sampled images."""

    k: int
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    sums: np.ndarray | None = None
    squares: np.ndarray | None = None
    pixels: int = 0
    gray_as_rgb: bool = True
    class_pixels: np.ndarray = field(init=False)
    present: np.ndarray = field(init=False)
    ignored: int = 0
    raw_values: Counter[int] = field(default_factory=Counter)
    areas: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        self.class_pixels = np.zeros(self.k, np.int64)
        self.present = np.zeros(self.k, np.int64)
        self.areas = [[] for _ in range(self.k)]


def default_splits(spec: DatasetSpec) -> list[str]:
    """The split a recipe trains on: ``train``, else ``trainval``, else ``all``, else the first."""
    for name in _TRAIN_NAMES:
        if name in spec.splits:
            return [name]
    return [next(iter(spec.splits))]


def _pixel_median(areas: list[int]) -> float:
    """The area of the component that holds the median pixel (components weighted by area)."""
    ordered = np.sort(np.asarray(areas, dtype=np.int64))
    cumulative = np.cumsum(ordered)
    return float(ordered[int(np.searchsorted(cumulative, cumulative[-1] / 2))])


def _split_sizes(spec: DatasetSpec) -> tuple[dict[str, dict[str, int]], dict[str, list[Sample]]]:
    sizes: dict[str, dict[str, int]] = {}
    samples: dict[str, list[Sample]] = {}
    for name in spec.splits:
        found, _ = resolve_split(spec, name)
        samples[name] = found
        sizes[name] = {"images": len(found), "labelled": sum(s.mask is not None for s in found)}
    return sizes, samples


def _add_image(t: _Tally, image: np.ndarray) -> None:
    img = image if image.ndim == 3 else image[..., None]
    t.heights.append(img.shape[0])
    t.widths.append(img.shape[1])
    flat = img.reshape(-1, img.shape[2]).astype(np.float64) / 255.0
    s, q = flat.sum(0), (flat * flat).sum(0)
    t.sums = s if t.sums is None else t.sums + s
    t.squares = q if t.squares is None else t.squares + q
    t.pixels += flat.shape[0]
    if img.shape[2] == 3 and not (
        np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
    ):
        t.gray_as_rgb = False


def _add_mask(t: _Tally, raw: np.ndarray, labels: np.ndarray, components: bool) -> None:
    if raw.ndim == 2 or (raw.ndim == 3 and raw.shape[2] == 1):
        values, counts = np.unique(raw, return_counts=True)
        t.raw_values.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
    counts = np.bincount(labels.reshape(-1), minlength=256)
    t.class_pixels += counts[: t.k]
    t.present += counts[: t.k] > 0
    t.ignored += int(counts[IGNORE_INDEX])
    if not components:
        return
    for c in np.flatnonzero(counts[: t.k]):
        lab, n = ndimage.label(labels == c)
        t.areas[c] += np.bincount(lab.reshape(-1))[1:].tolist() if n else []


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def _notes(spec: DatasetSpec, t: _Tally) -> list[str]:
    notes = list(spec.notes)
    held = set(t.raw_values)
    if held and held <= {0, 255}:
        notes.append(f"masks hold only {' and '.join(str(v) for v in sorted(held))}")
    if spec.image_channels == 3 and t.gray_as_rgb:
        notes.append("three-channel images with equal channels: grayscale stored as RGB")
    return notes


def fingerprint(
    spec: DatasetSpec | str | os.PathLike[str],
    splits: Sequence[str] | None = None,
    *,
    max_images: int = MAX_IMAGES,
    max_component_images: int = MAX_COMPONENT_IMAGES,
) -> Fingerprint:
    """Fingerprint a dataset from a bounded sample of its labelled images.

    Args:
        spec: a dataset spec, or a dataset YAML / folder (:func:`~pixelwise.data.load_dataset_spec`).
        splits: the splits to sample (default: :func:`default_splits`, the training split).
        max_images: labelled samples read, spread evenly over the splits' samples.
        max_component_images: of those, the ones split into connected components (spread too).

    Raises:
        PixelwiseError: no labelled image in the splits, or an unreadable sample (one line).
    """
    if not isinstance(spec, DatasetSpec):
        spec = load_dataset_spec(spec)
    if max_images < 1 or max_component_images < 0:
        raise PixelwiseError("fingerprint: max_images must be >= 1, max_component_images >= 0")
    chosen = list(splits) if splits else default_splits(spec)
    for name in chosen:
        spec.split(name)  # an unknown split: one line naming the choices
    sizes, by_split = _split_sizes(spec)
    labelled = [s for name in chosen for s in by_split[name] if s.mask is not None]
    if not labelled:
        raise PixelwiseError(f"dataset {spec.name!r}: no labelled images in {', '.join(chosen)}")
    picked = spread(labelled, max_images)
    with_components = set(map(id, spread(picked, max_component_images)))
    t = _Tally(k=spec.num_classes)
    for sample in picked:
        _add_image(t, read_sample_image(sample, spec))
        raw = read_sample_mask(sample, spec)
        labels, _ = decode_mask(raw, spec)
        _add_mask(t, raw, labels, id(sample) in with_components)
    return _assemble(spec, t, sizes, chosen, len(labelled), len(with_components))


def _assemble(
    spec: DatasetSpec,
    t: _Tally,
    sizes: dict[str, dict[str, int]],
    chosen: list[str],
    total: int,
    component_images: int,
) -> Fingerprint:
    if t.sums is None or t.squares is None:
        raise PixelwiseError(f"dataset {spec.name!r}: no image was read")
    mean = t.sums / t.pixels
    std = np.sqrt(np.maximum(t.squares / t.pixels - mean * mean, 0.0))
    labelled = max(1, int(t.class_pixels.sum()))
    n = len(t.heights)
    source = spec.source or str(spec.root)
    dataset = str(Path(source).resolve() if Path(source).exists() else Path(spec.root).resolve())
    return Fingerprint(
        name=spec.name,
        dataset=dataset,
        num_classes=spec.num_classes,
        class_names=spec.class_names,
        image_channels=spec.image_channels,
        gray_as_rgb=spec.image_channels == 3 and t.gray_as_rgb,
        splits=sizes,
        fingerprinted_splits=chosen,
        sampled=n,
        sample_of=total,
        component_images=component_images,
        height=_stats(t.heights),
        width=_stats(t.widths),
        aspect_ratio=_stats([w / h for h, w in zip(t.heights, t.widths, strict=True)]),
        intensity_mean=[round(float(v), 6) for v in mean],
        intensity_std=[round(float(v), 6) for v in std],
        class_frequency=[float(c) / labelled for c in t.class_pixels],
        class_presence=[float(p) / n for p in t.present],
        ignored_fraction=t.ignored / max(1, t.ignored + int(t.class_pixels.sum())),
        object_median_area=[float(np.median(a)) if a else None for a in t.areas],
        object_p5_area=[float(np.percentile(a, 5)) if a else None for a in t.areas],
        object_pixel_median_area=[_pixel_median(a) if a else None for a in t.areas],
        mask_values=value_ranges(list(t.raw_values)),
        notes=_notes(spec, t),
    )
