"""Checks a dataset before training: every image readable, every mask present, the same size as its
image, and holding only declared values; every region-of-interest file readable and the image's size. Problems are collected for the whole split, not just the first.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import PixelwiseError
from .classes import IGNORE_INDEX
from .dataset import load_roi
from .formats import get_format, read_sample_image, read_sample_mask
from .spec import DatasetSpec, Sample, decode_mask, resolve_split
from .survey import lossy_hint

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
    # (samples, classes): each sample's labelled pixels per class, in resolve_split's order (what
    # SegmentationDataset indexes); rare-class oversampling weighs images by it
    sample_class_pixels: np.ndarray | None = None
    # lines that explain rather than fail: e.g. a suggestion of the binary encoding for lossy masks
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _png_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a PNG whose every chunk is present with a correct CRC up to IEND, read
    without inflating its pixels; None for anything else (an eXIf orientation chunk included)."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos, size = 8, None
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            return None  # truncated
        kind = data[pos + 4 : pos + 8]
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != int.from_bytes(
            data[end - 4 : end], "big"
        ):
            return None  # corrupt
        if kind == b"IHDR" and length >= 8:
            size = (
                int.from_bytes(data[pos + 12 : pos + 16], "big"),
                int.from_bytes(data[pos + 8 : pos + 12], "big"),
            )
        elif kind == b"eXIf":
            return None  # may rotate the image: the full reader decides
        elif kind == b"IEND":
            return size
        pos = end
    return None


def _probe_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a PNG or JPEG from its header, after checking the file is whole (PNG: every
    chunk's CRC up to IEND; JPEG: the end-of-image marker) without decoding its pixels. None where
    that is not enough to be sure (other formats, anything unusual): the caller decodes the image."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            size = _png_size(path)
        elif suffix in (".jpg", ".jpeg"):
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    if im.format != "JPEG":
                        return None
                    w, h = im.size
                    orientation = im.getexif().get(0x0112, 1)
            with open(path, "rb") as fh:
                fh.seek(-2, os.SEEK_END)
                if fh.read(2) != b"\xff\xd9":
                    return None
            size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        else:
            return None
    except Exception:  # noqa: BLE001 - any doubt: the full reader decides and words the error
        return None
    if size is None or 0 in size or size[0] * size[1] > (Image.MAX_IMAGE_PIXELS or 2**62):
        return None
    return size


def _image_size(sample: Sample, spec: DatasetSpec, decode: bool) -> tuple[int, int]:
    """The image's (height, width): from its header where that is safe, else by decoding it."""
    if not decode and get_format(spec.format).read_image is None:  # one image file per sample
        size = _probe_size(sample.image)
        if size is not None:
            return size
    return read_sample_image(sample, spec).shape[:2]


def _roi_problems(sample: Sample, size: tuple[int, int]) -> list[str]:
    """The sample's region-of-interest file unreadable, or not the image's size (empty: fine)."""
    try:
        load_roi(sample, size)
    except PixelwiseError as exc:
        msg = str(exc)
        return [msg if str(sample.roi) in msg else f"{sample.roi}: {msg}"]
    return []


def _check_one(
    sample: Sample, spec: DatasetSpec, decode: bool = True
) -> tuple[list[str], dict[str, int], np.ndarray | None]:
    problems: list[str] = []
    try:
        height, width = _image_size(sample, spec, decode)
    except PixelwiseError as exc:
        return [str(exc)], {}, None
    problems += _roi_problems(sample, (height, width))
    if sample.mask is None:
        return problems, {}, None
    try:
        labels, bad = decode_mask(read_sample_mask(sample, spec), spec)
    except PixelwiseError as exc:
        msg = str(exc)
        return [*problems, msg if str(sample.mask) in msg else f"{sample.mask}: {msg}"], {}, None
    if labels.shape != (height, width):
        problems.append(
            f"{sample.where}: mask size {labels.shape[1]}x{labels.shape[0]} != image size "
            f"{width}x{height}"
        )
    counts = np.bincount(labels.reshape(-1), minlength=256)
    return problems, bad, counts


def check_split(
    spec: DatasetSpec, split: str, *, workers: int | None = None, decode_images: bool = True
) -> SplitReport:
    """Read and check every sample of ``split`` (in parallel threads).

    Args:
        spec: the dataset.
        split: the split's name.
        workers: reader threads (default: cores + 2, at most 8).
        decode_images: decode every image (what training checks). False reads the size of PNG and
            JPEG images from their headers after checking the file is whole (PNG chunk CRCs, the
            JPEG end marker), and decodes the others; masks are always decoded.
    """
    samples, problems = resolve_split(spec, split)
    report = SplitReport(split=split, num_images=len(samples), problems=list(problems))
    bad_values: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    bad_files: dict[str, list[str]] = defaultdict(list)
    totals = np.zeros(256, dtype=np.int64)
    k = spec.num_classes
    image_totals = np.zeros(k, dtype=np.int64)
    per_sample = np.zeros((len(samples), k), dtype=np.int64)
    workers = workers or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for j, (sample, (probs, bad, counts)) in enumerate(
            zip(
                samples,
                pool.map(lambda s: _check_one(s, spec, decode_images), samples),
                strict=True,
            )
        ):
            report.problems.extend(probs)
            for value, n in bad.items():
                bad_values[value][0] += n
                bad_values[value][1] += 1
                bad_files[value].append(sample.where)
            if counts is not None:
                totals += counts
                labelled = counts[:k]
                image_totals += (labelled > 0) * labelled.sum()
                per_sample[j] = labelled
    for value, (pixels, nfiles) in sorted(bad_values.items()):
        files = bad_files[value]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        report.problems.append(
            f"split {split!r}: mask value {value} is not a declared class "
            f"({pixels} px in {nfiles} file(s): {shown})"
        )
    hint = lossy_hint({v: n for v, (n, _) in bad_values.items()}, k)
    report.notes += [hint] if hint else []
    report.class_pixels = totals[:k]
    report.class_image_pixels = image_totals
    report.sample_class_pixels = per_sample
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
