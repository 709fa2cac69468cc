"""``pixelwise data export-labels`` and ``import-labels``: a dataset's masks to and from a label file.

Export reads every sample of the chosen splits through the dataset's own format and encoding (as
``data convert`` does), and writes one file: each image once (by file name; its path relative to
the dataset root where file names collide), its classes as the format's regions; unlabelled pixels
get no region, and so do the classes given in ``skip``. Images without a mask are exported without
labels, ready to be labelled in the tool.

Import reads a file back, matches each of its images to a dataset image by file name, paints its
regions over unlabelled pixels (or over ``unlabelled``, a class), and writes the mask in the
dataset's own encoding into a new folder, at the mask's path relative to the dataset root (the
image's for formats whose masks are not image files), as PNG. Nothing is written when any image
fails: the masks go into a temporary folder beside ``out`` that is renamed into place at the end.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
from PIL import Image

from ..._atomic import atomic_folder, atomic_path
from ...errors import PixelwiseError, first_line
from ..classes import IGNORE_INDEX
from ..formats import get_format, read_sample_image, read_sample_mask
from ..io import image_size
from ..spec import DatasetSpec, Sample, decode_mask, resolve_split
from ._base import (
    ExportClass,
    ExportImage,
    LabelFormat,
    LabelledImage,
    check_labels,
    get_label_format,
    list_label_formats,
)

__all__ = [
    "DEFAULT_IMAGE_PREFIX",
    "ExportReport",
    "ImportReport",
    "detect_label_format",
    "export_classes",
    "export_labels",
    "import_labels",
]

DEFAULT_IMAGE_PREFIX = "/data/local-files/?d="
"""Label Studio's ``data.image`` is this + the image's path relative to the dataset root: the URL of
a file served by Label Studio's local storage whose document root is the dataset root."""

_UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(.+)")  # Label Studio renames uploads "<8 hex>-<name>"


@dataclass
class ExportReport:
    """What :func:`export_labels` wrote (or, with problems, would have)."""

    out: Path
    to: str
    images: int = 0
    without_masks: int = 0  # images exported without labels (no mask)
    regions: int = 0  # class regions written (one per class per image)
    class_images: Counter[str] = field(default_factory=Counter)  # class → images it is in
    problems: list[str] = field(default_factory=list)
    written: bool = False

    def summary(self) -> str:
        """Lines for the terminal; problems last, one per line, as ``problem: ...``."""
        title = get_label_format(self.to).title
        if not self.written:
            lines = [f"nothing written to {self.out} ({len(self.problems)} problem(s))"]
            return "\n".join(lines + [f"problem: {p}" for p in self.problems])
        lines = [
            f"wrote {self.images} images, {self.regions} class regions ({title}) to {self.out}"
        ]
        if self.class_images:
            lines.append(
                "images per class: "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.class_images.items()))
            )
        if self.without_masks:
            lines.append(f"{self.without_masks} images have no mask: exported without labels")
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


@dataclass
class ImportReport:
    """What :func:`import_labels` wrote (or, with problems, would have)."""

    source: Path
    out: Path
    fmt: str
    masks: int = 0  # masks written
    dataset_images: int = 0  # images of the splits matched against
    unlabelled_pixels: int = 0  # pixels no region covered (written as unlabelled)
    pixels: int = 0
    problems: list[str] = field(default_factory=list)
    written: bool = False

    def summary(self) -> str:
        """Lines for the terminal; problems last, one per line, as ``problem: ...``."""
        title = get_label_format(self.fmt).title
        if not self.written:
            lines = [f"nothing written into {self.out} ({len(self.problems)} problem(s))"]
            return "\n".join(lines + [f"problem: {p}" for p in self.problems])
        lines = [f"wrote {self.masks} masks from {self.source} ({title}) into {self.out}"]
        if self.dataset_images > self.masks:
            lines.append(
                f"{self.dataset_images - self.masks} of the dataset's {self.dataset_images} "
                "images have no labels in the file: no mask written for them"
            )
        if self.pixels:
            share = 100 * self.unlabelled_pixels / self.pixels
            lines.append(f"unlabelled pixels: {self.unlabelled_pixels:,} ({share:.2f}%)")
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


def detect_label_format(path: str | os.PathLike[str]) -> str:
    """The exchange format of a file, from its first characters: ``<`` CVAT XML, ``[`` Label
    Studio tasks, ``{`` COCO JSON.

    Raises:
        PixelwiseError: unreadable, or none of them.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise PixelwiseError(f"{path}: file not found") from None
    except OSError as exc:
        raise PixelwiseError(f"{path}: cannot read ({exc.strerror})") from None
    text = head.lstrip("\ufeff \t\r\n")
    for name in list_label_formats():
        if get_label_format(name).sniff(text):
            return name
    raise PixelwiseError(
        f"{path}: not a COCO JSON, CVAT XML or Label Studio JSON; give the format with --from "
        f"({', '.join(list_label_formats())})"
    )


def export_classes(spec: DatasetSpec, skip: Sequence[str] = ()) -> list[ExportClass]:
    """The dataset's classes less ``skip``, with their colours.

    Raises:
        PixelwiseError: a name in ``skip`` is not a class.
    """
    unknown = [n for n in skip if n not in spec.class_names]
    if unknown:
        raise PixelwiseError(
            f"--skip {unknown[0]!r}: not a class of the dataset ({', '.join(spec.class_names)})"
        )
    return [
        ExportClass(i, c.name, tuple(int(v) for v in spec.colors[i]))  # type: ignore[arg-type]
        for i, c in enumerate(spec.classes)
        if c.name not in skip
    ]


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form; its file name when it lies outside."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        try:
            rel = path.resolve().relative_to(root.resolve())
        except ValueError:
            return path.name
    return PurePosixPath(*rel.parts).as_posix() if ".." not in rel.parts else path.name


def _samples(spec: DatasetSpec, splits: Sequence[str] | None) -> tuple[list[Sample], list[str]]:
    """The samples of ``splits`` (default: all), each image once, and the pairing problems.

    Raises:
        PixelwiseError: an unknown split; a format whose samples are not image files (volumes).
    """
    fmt = get_format(spec.format)
    seen: dict[str, Sample] = {}
    problems: list[str] = []
    for name in splits or list(spec.splits):
        found, probs = resolve_split(spec, name)
        problems += probs
        for s in found:
            if s.index is not None and fmt.read_image is not None:
                raise PixelwiseError(
                    f"{spec.source}: format {spec.format!r} has no image file per sample "
                    "(slices of volumes); label files need one"
                )
            seen.setdefault(str(s.image), s)
    return list(seen.values()), problems


def _size(sample: Sample, spec: DatasetSpec) -> tuple[int, int]:
    """The image's (height, width), from its header where the format reads image files."""
    if get_format(spec.format).read_image is None:
        return image_size(sample.image)
    return read_sample_image(sample, spec).shape[:2]


def _inputs(spec: DatasetSpec, samples: Sequence[Sample]) -> list[Path]:
    paths = [spec.root]
    if spec.source and Path(spec.source).is_file():
        paths.append(Path(spec.source))
    for s in samples:
        paths += [p for p in (s.image, s.mask, s.roi) if p is not None]
    return paths


# ------------------------------------------------------------------------------------------ export


def _file_names(spec: DatasetSpec, samples: Sequence[Sample]) -> Counter[str]:
    """How many images of the whole dataset (every split) have each file name: an image whose name
    another image shares is exported by its path, so that importing against every split finds it."""
    try:
        everything, _ = _samples(spec, None)
    except PixelwiseError:  # another split cannot be listed: the exported ones decide
        everything = list(samples)
    found = {str(s.image): s.image.name for s in [*everything, *samples]}
    return Counter(found.values())


def _export_images(
    spec: DatasetSpec, samples: Sequence[Sample], prefix: str
) -> tuple[list[ExportImage], list[str]]:
    """Each sample's id, name and URL (size 0 until read); problems: two images of one name."""
    names = _file_names(spec, samples)
    out, problems, taken = [], [], {}
    for k, s in enumerate(samples, 1):
        rel = _rel(s.image, spec.root)
        name = s.image.name if names[s.image.name] == 1 else rel
        if name in taken:
            problems.append(f"{s.image}: exports as {name!r}, as {taken[name]} does")
        taken[name] = s.image
        out.append(ExportImage(k, name, prefix + quote(rel, safe="/"), 0, 0))
    return out, problems


def _export_one(
    sample: Sample,
    image: ExportImage,
    spec: DatasetSpec,
    fmt: LabelFormat,
    classes: list[ExportClass],
) -> tuple[Any, set[int], str | None]:
    """One image's record and the class indices present, or a problem."""
    try:
        height, width = _size(sample, spec)
        labels = None
        if sample.mask is not None:
            labels, bad = decode_mask(read_sample_mask(sample, spec), spec)
            if bad:
                vals = ", ".join(f"{v} ({n} px)" for v, n in bad.items())
                return (
                    None,
                    set(),
                    f"{sample.where}: mask values outside the declared classes: {vals}",
                )
            if labels.shape != (height, width):
                return (
                    None,
                    set(),
                    f"{sample.where}: mask size {labels.shape[1]}x{labels.shape[0]} != image size "
                    f"{width}x{height}",
                )
        image = ExportImage(image.id, image.name, image.url, width, height)
        record = fmt.image_record(image, labels, classes)
    except PixelwiseError as exc:
        msg = str(exc)
        where = str(sample.mask if sample.mask is not None else sample.image)
        return None, set(), msg if where in msg or str(sample.image) in msg else f"{where}: {msg}"
    present = set(np.unique(labels).tolist()) if labels is not None else set()
    return record, present, None


def export_labels(
    spec: DatasetSpec,
    out: str | os.PathLike[str],
    *,
    to: str,
    splits: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    image_prefix: str = DEFAULT_IMAGE_PREFIX,
    overwrite: bool = False,
    workers: int | None = None,
) -> ExportReport:
    """Write the masks of ``splits`` (default: all) as one label file of format ``to``.

    Args:
        spec: the dataset.
        out: the file to write (JSON or XML).
        to: ``coco``, ``cvat`` or ``labelstudio``.
        splits: the splits exported; an image in several is exported once.
        skip: classes given no regions (e.g. a background the tool should not show).
        image_prefix: Label Studio: ``data.image`` is this + the image's path relative to the root.
        overwrite: replace ``out`` if it exists.
        workers: reader threads.

    Returns:
        The report; ``written`` tells whether ``out`` was written (not when any image failed).

    Raises:
        PixelwiseError: an unknown format, split or class; ``out`` exists (without ``overwrite``),
            is a folder, or is one of the dataset's files.
    """
    fmt = get_label_format(to)
    out = Path(out)
    classes = export_classes(spec, skip)
    samples, problems = _samples(spec, splits)
    if out.is_dir():
        raise PixelwiseError(f"{out}: is a folder; --out names the file to write")
    if out.exists():
        dest = out.resolve()
        if any(p.resolve() == dest for p in _inputs(spec, samples)):
            raise PixelwiseError(f"{out}: is a file of the dataset; write the export elsewhere")
        if not overwrite:
            raise PixelwiseError(f"{out}: exists; give --overwrite to replace it")
    report = ExportReport(out=out, to=fmt.name, images=len(samples), problems=problems)
    images, clashes = _export_images(spec, samples, image_prefix)
    report.problems += clashes
    names = {c.index: c.name for c in classes}
    records = []
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        results = pool.map(
            lambda si: _export_one(si[0], si[1], spec, fmt, classes),
            zip(samples, images, strict=True),
        )
        for s, (record, present, problem) in zip(samples, results, strict=True):
            if problem:
                report.problems.append(problem)
                continue
            records.append(record)
            report.without_masks += s.mask is None
            kept = [names[i] for i in present if i in names]
            report.regions += len(kept)
            report.class_images.update(kept)
    if report.problems:
        return report
    data = fmt.document(records, classes, spec.name)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    report.written = True
    return report


# ------------------------------------------------------------------------------------------ import


def _image_key(name: str) -> str:
    """A file's image name or URL as a relative POSIX path (a local-files URL's ``d`` parameter,
    else the URL's path, percent-decoded)."""
    if "://" in name or "?" in name or name.startswith("/data/"):
        parts = urlsplit(name)
        d = parse_qs(parts.query).get("d")
        name = d[0] if d else unquote(parts.path)
    name = name.replace("\\", "/")
    while name.startswith(("./", "/")):
        name = name[1:] if name.startswith("/") else name[2:]
    return name


class _Names:
    """Dataset images by relative path and by file name."""

    def __init__(self, spec: DatasetSpec, samples: Sequence[Sample]) -> None:
        self.rel = {id(s): _rel(s.image, spec.root) for s in samples}
        self.by_rel = {self.rel[id(s)]: s for s in samples}
        self.by_name: dict[str, list[Sample]] = defaultdict(list)
        for s in samples:
            self.by_name[s.image.name].append(s)

    def find(self, name: str) -> Sample | str:
        """The sample a file's image name stands for, or why there is none."""
        key = _image_key(name)
        if key in self.by_rel:
            return self.by_rel[key]
        base = key.rsplit("/", 1)[-1]
        found = self.by_name.get(base, [])
        upload = _UPLOAD_PREFIX.fullmatch(base)
        if not found and upload:
            found = self.by_name.get(upload.group(1), [])
        if len(found) > 1:  # one whose path ends the name, or whose path the name ends
            found = [
                s
                for s in found
                if key.endswith("/" + self.rel[id(s)]) or self.rel[id(s)].endswith("/" + key)
            ]
        if len(found) == 1:
            return found[0]
        if found or self.by_name.get(base):
            return (
                f"image {name!r} matches several dataset images; name it by its path, or match "
                "against one split (--split)"
            )
        return f"image {name!r} is not an image of the dataset"


def _mask_path(sample: Sample, spec: DatasetSpec) -> PurePosixPath:
    """Where an imported mask goes inside the output folder: the sample's mask file's path
    relative to the root (its image's where masks are not image files of their own), as .png."""
    own = sample.mask is not None and get_format(spec.format).read_mask is None
    rel = PurePosixPath(_rel(sample.mask if own else sample.image, spec.root))  # type: ignore[arg-type]
    return rel.with_suffix(".png")


def _png(raw: np.ndarray, dest: Path) -> None:
    if raw.dtype not in (np.uint8, np.uint16):
        raise PixelwiseError(f"mask values up to {int(raw.max())} do not fit a 16-bit PNG")
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw).save(dest, format="PNG")


@dataclass(frozen=True)
class _Job:
    """What every image of one import shares."""

    spec: DatasetSpec
    classes: dict[str, int]
    background: int
    staging: Path


def _import_one(
    im: LabelledImage, sample: Sample, dest: PurePosixPath, job: _Job
) -> tuple[int, int, str | None]:
    """Paint, encode and write one mask: (pixels, unlabelled pixels, problem)."""
    try:
        height, width = _size(sample, job.spec)
        if im.width and (im.width, im.height) != (width, height):
            return (
                0,
                0,
                (
                    f"{im.where}: size {im.width}x{im.height}, the dataset image {sample.image} "
                    f"{width}x{height}"
                ),
            )
        canvas = np.full((height, width), job.background, np.uint8)
        for r in im.regions:
            r.paint(canvas, job.classes[r.label])
        unlabelled = int((canvas == IGNORE_INDEX).sum())
        try:
            raw = job.spec.mask.codec.encode(canvas, job.spec)
        except PixelwiseError as exc:
            hint = "; give a class for them (--unlabelled CLASS)" if unlabelled else ""
            return 0, 0, f"{im.where}: {first_line(exc)}{hint}"
        _png(raw, job.staging / dest)
    except PixelwiseError as exc:
        msg = str(exc)
        return (
            0,
            0,
            msg if str(im.where) in msg or str(sample.image) in msg else f"{im.where}: {msg}",
        )
    except OSError as exc:
        return 0, 0, f"{im.where}: cannot write its mask {dest} ({exc.strerror or exc})"
    return height * width, unlabelled, None


class _Abort(Exception):
    """Problems were found: leave nothing written."""


def import_labels(
    path: str | os.PathLike[str],
    spec: DatasetSpec,
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    splits: Sequence[str] | None = None,
    unlabelled: str | None = None,
    overwrite: bool = False,
    workers: int | None = None,
) -> ImportReport:
    """Write the masks a label file gives into a new folder, in the dataset's own encoding.

    Args:
        path: the COCO JSON, CVAT XML or Label Studio JSON.
        spec: the dataset whose images the file labels (matched by file name).
        out: the folder written (must not exist, or be empty, unless ``overwrite``).
        fmt: ``coco``, ``cvat`` or ``labelstudio``; ``None``: detected from the file's content.
        splits: match against these splits' images (default: all).
        unlabelled: a class for the pixels no region covers (default: unlabelled).
        overwrite: replace ``out`` as a whole if it exists.
        workers: writer threads.

    Returns:
        The report; ``written`` tells whether ``out`` was written (not when any image failed).

    Raises:
        PixelwiseError: the file is malformed or names a class the dataset lacks; ``unlabelled``
            is not a class; ``out`` is a file, is not empty (without ``overwrite``), or would
            replace the dataset's files or the label file.
    """
    path = Path(path)
    out = Path(out)
    label_format = (
        get_label_format(fmt) if fmt is not None else get_label_format(detect_label_format(path))
    )
    images = label_format.read(path)
    check_labels(images, spec.class_names, path)
    classes = {c.name: i for i, c in enumerate(spec.classes)}
    if unlabelled is not None and unlabelled not in classes:
        raise PixelwiseError(
            f"--unlabelled {unlabelled!r}: not a class of the dataset ({', '.join(classes)})"
        )
    samples, problems = _samples(spec, splits)
    if out.exists():
        if not out.is_dir():
            raise PixelwiseError(f"{out}: is a file; --out names a folder for the masks")
        dest = out.resolve()
        for p in [*_inputs(spec, samples), path]:
            if p.resolve().is_relative_to(dest):
                raise PixelwiseError(f"{out}: holds {p}, an input; write the masks elsewhere")
        if any(out.iterdir()) and not overwrite:
            raise PixelwiseError(f"{out}: exists and is not empty; give --overwrite to replace it")
    report = ImportReport(path, out, label_format.name, problems=problems)
    report.dataset_images = len(samples)
    names = _Names(spec, samples)
    jobs: list[tuple[LabelledImage, Sample, PurePosixPath]] = []
    claimed: dict[str, str] = {}
    for im in images:
        found = names.find(im.name)
        if isinstance(found, str):
            report.problems.append(f"{im.where}: {found}")
            continue
        dest = _mask_path(found, spec)
        if str(dest) in claimed:
            report.problems.append(
                f"{im.where}: labels {found.image} again (as {claimed[str(dest)]})"
            )
            continue
        claimed[str(dest)] = im.where
        jobs.append((im, found, dest))
    if report.problems:
        return report
    background = IGNORE_INDEX if unlabelled is None else classes[unlabelled]
    # folders above ``out`` that this run creates, deepest first: removed again if it fails
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        with atomic_folder(out) as staging:
            job = _Job(spec, classes, background, staging)
            with ThreadPoolExecutor(
                max_workers=workers or min(8, (os.cpu_count() or 1) + 2)
            ) as pool:
                for pixels, unl, problem in pool.map(lambda j: _import_one(*j, job), jobs):
                    if problem:
                        report.problems.append(problem)
                    report.pixels += pixels
                    report.unlabelled_pixels += unl
            if report.problems:
                raise _Abort
            report.masks = len(jobs)
    except _Abort:
        report.pixels = report.unlabelled_pixels = 0
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
        return report
    report.written = True
    return report
