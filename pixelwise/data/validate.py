"""Checks a dataset before training: every image readable, every mask present, the same size as its
image, and holding only declared values. Problems are collected for the whole split, not just the first.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import PixelwiseError
from .classes import IGNORE_INDEX
from .io import read_image, read_mask
from .spec import DatasetSpec, Sample, decode_mask, resolve_split

__all__ = ["SplitReport", "check_split", "check_dataset"]


@dataclass
class SplitReport:
    """What :func:`check_split` found."""

    split: str
    num_images: int = 0
    problems: list[str] = field(default_factory=list)
    class_pixels: np.ndarray | None = None  # labelled pixels per class
    # per class: the labelled pixels of the images in which it appears (median-frequency weights)
    class_image_pixels: np.ndarray | None = None
    ignored_pixels: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_one(
    sample: Sample, spec: DatasetSpec
) -> tuple[list[str], dict[str, int], np.ndarray | None]:
    problems: list[str] = []
    try:
        image = read_image(sample.image, spec.image_channels)
    except PixelwiseError as exc:
        return [str(exc)], {}, None
    if sample.mask is None:
        return [], {}, None
    if not sample.mask.exists():
        return [f"{sample.mask}: mask file not found (image {sample.image})"], {}, None
    try:
        labels, bad = decode_mask(read_mask(sample.mask, as_rgb=spec.mask.encoding == "rgb"), spec)
    except PixelwiseError as exc:
        return [str(exc)], {}, None
    if labels.shape != image.shape[:2]:
        problems.append(
            f"{sample.mask}: mask size {labels.shape[1]}x{labels.shape[0]} != image size "
            f"{image.shape[1]}x{image.shape[0]}"
        )
    counts = np.bincount(labels.reshape(-1), minlength=256)
    return problems, bad, counts


def check_split(spec: DatasetSpec, split: str, *, workers: int | None = None) -> SplitReport:
    """Read and check every sample of ``split`` (in parallel threads)."""
    samples, problems = resolve_split(spec, split)
    report = SplitReport(split=split, num_images=len(samples), problems=list(problems))
    bad_values: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    bad_files: dict[str, list[str]] = defaultdict(list)
    totals = np.zeros(256, dtype=np.int64)
    k = spec.num_classes
    image_totals = np.zeros(k, dtype=np.int64)
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for sample, (probs, bad, counts) in zip(
            samples, pool.map(lambda s: _check_one(s, spec), samples), strict=True
        ):
            report.problems.extend(probs)
            for value, n in bad.items():
                bad_values[value][0] += n
                bad_values[value][1] += 1
                bad_files[value].append(str(sample.mask))
            if counts is not None:
                totals += counts
                labelled = counts[:k]
                image_totals += (labelled > 0) * labelled.sum()
    for value, (pixels, nfiles) in sorted(bad_values.items()):
        files = bad_files[value]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        report.problems.append(
            f"split {split!r}: mask value {value} is not a declared class "
            f"({pixels} px in {nfiles} file(s): {shown})"
        )
    report.class_pixels = totals[:k]
    report.class_image_pixels = image_totals
    report.ignored_pixels = int(totals[IGNORE_INDEX])
    return report


def check_dataset(spec: DatasetSpec, splits: list[str]) -> list[SplitReport]:
    """Check several splits; raise one :class:`PixelwiseError` summarising every problem found."""
    reports = [check_split(spec, s) for s in splits]
    problems = [p for r in reports for p in r.problems]
    if problems:
        more = (
            f" (+{len(problems) - 1} more problem(s); `pixelwise data validate {spec.source}` "
            "lists them all)"
            if len(problems) > 1
            else ""
        )
        raise PixelwiseError(f"dataset {spec.name!r}: {problems[0]}{more}")
    return reports
