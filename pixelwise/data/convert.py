"""``pixelwise data convert``: rewrite a dataset's masks in another encoding, into a new folder.

Reads every sample through the dataset's own format (index, palette, colour, binary masks; COCO,
LabelMe and CVAT polygons; NIfTI slices; GeoTIFF label rasters), optionally remaps raw mask values
(``--map 255:1``), decodes them to class indices, and writes:

* ``masks/<name>.png``: ``index`` (grey PNG, value = class, 255 = unlabelled), ``palette`` (the same
  values in a palette PNG coloured by the classes) or ``rgb`` (the class colours; unlabelled pixels
  get ``ignore_color``);
* ``images/<name>.<ext>``: the image file copied byte for byte (or written as PNG when it is not a
  file of its own, e.g. a volume slice);
* ``<split>.txt`` list files and a ``dataset.yaml`` that reads the result back.

Nothing is written over the source: the output folder must not exist (or be empty) and must not hold
the dataset. Everything is written into a temporary folder beside it and renamed into place at the
end, so a failed or interrupted run leaves no partial output. Any problem (an unreadable file, an
undeclared value) stops the run before the rename, and every problem is listed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from PIL import Image

from .._atomic import atomic_path, write_bytes_atomic, write_text_atomic
from ..errors import PixelwiseError
from .classes import IGNORE_INDEX, ClassInfo, palette_bytes
from .formats import get_format, read_sample_image, read_sample_mask
from .spec import DatasetSpec, MaskSpec, Sample, decode_mask, resolve_split
from .validate import _image_size

__all__ = ["ConvertPlan", "parse_value_map", "convert_dataset"]

MaskFormat = Literal["index", "palette", "rgb"]

# --to → the mask encoding written, and whether its PNGs carry the class colours as their palette
_OUTPUTS: dict[str, tuple[str, bool]] = {
    "index": ("index", False),
    "palette": ("index", True),
    "rgb": ("rgb", False),
}


def parse_value_map(items: Sequence[str]) -> dict[int, int]:
    """``["255:1", "128:2,64:3"]`` → ``{255: 1, 128: 2, 64: 3}`` (raw mask value → new raw value).

    Raises:
        PixelwiseError: an item is not ``A:B`` with integers in 0..65535 and 0..255.
    """
    out: dict[int, int] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            a, sep, b = part.partition(":")
            try:
                src, dst = int(a), int(b)
            except ValueError:
                src = dst = -1
            if not sep or not 0 <= src <= 65535 or not 0 <= dst <= 255:
                raise PixelwiseError(
                    f"--map {part!r}: expected OLD:NEW with integer values (OLD 0..65535, NEW 0..255)"
                )
            out[src] = dst
    return out


@dataclass
class ConvertPlan:
    """What a conversion reads and writes (the ``--dry-run`` summary)."""

    out: Path
    to: str
    samples: dict[str, int] = field(default_factory=dict)  # per split
    files: int = 0  # unique samples written
    values: Counter[int] = field(default_factory=Counter)  # output class index → pixels
    remapped: Counter[str] = field(default_factory=Counter)  # "a→b" → pixels
    problems: list[str] = field(default_factory=list)
    written: bool = False

    def summary(self, spec: DatasetSpec) -> str:
        names = {i: n for i, n in enumerate(spec.class_names)}
        names[IGNORE_INDEX] = "(unlabelled)"
        lines = [
            f"{'would write' if not self.written else 'wrote'} {self.files} image/mask pairs "
            f"({self.to} masks) into {self.out}",
            "splits: " + ", ".join(f"{k} ({v})" for k, v in self.samples.items()),
        ]
        if self.remapped:
            lines.append(
                "remapped: " + ", ".join(f"{k}: {n:,} px" for k, n in sorted(self.remapped.items()))
            )
        total = max(1, sum(self.values.values()))
        if self.values:
            lines.append(
                "output values: "
                + ", ".join(
                    f"{v} {names.get(v, '?')} {100 * n / total:.2f}%"
                    for v, n in sorted(self.values.items())
                )
            )
        lines += [f"problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _check_out(spec: DatasetSpec, out: Path) -> None:
    root = spec.root.resolve()
    dest = out.resolve()
    if dest == root or root.is_relative_to(dest):
        raise PixelwiseError(f"{out}: the output folder would hold the source dataset {spec.root}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PixelwiseError(
            f"{out}: exists and is not an empty folder; convert writes a new folder"
        )


def _unique_name(sample: Sample, taken: set[str]) -> str:
    base = sample.image.name
    for ext in (".nii.gz", ".nii"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    else:
        base = sample.image.stem
    base = re.sub(r"\s", "_", base)  # list files separate image and mask by white space
    if sample.index is not None:
        base = f"{base}_{sample.index:04d}"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def _remap(raw: np.ndarray, table: dict[int, int], counts: Counter[str]) -> np.ndarray:
    if not table:
        return raw
    if raw.ndim != 2 or raw.dtype.kind not in "ui":
        raise PixelwiseError("--map applies to grey/index masks, this mask holds colours")
    out = raw.copy() if raw.dtype == np.uint8 else raw.astype(np.int64)
    for a, b in table.items():
        hit = raw == a
        n = int(hit.sum())
        if n:
            out[hit] = b
            counts[f"{a}→{b}"] += n
    return out


def _target(spec: DatasetSpec, to: str, ignore_color: tuple[int, int, int]) -> DatasetSpec:
    """The converted dataset's definition: the same classes, coloured, in the ``--to`` encoding
    (unlabelled: ``IGNORE_INDEX`` where values are written, ``ignore_color`` where colours are).

    Raises:
        PixelwiseError: an unknown ``to``; a target that cannot write every class and unlabelled
            pixels so that they read back (``ignore_color`` a class's colour, two classes of one colour).
    """
    if to not in _OUTPUTS:
        *others, last = _OUTPUTS
        raise PixelwiseError(f"--to {to!r}: expected {', '.join(others)} or {last}")
    classes = [ClassInfo(name=c.name, color=spec.colors[i]) for i, c in enumerate(spec.classes)]
    mask = MaskSpec(encoding=_OUTPUTS[to][0], ignore_index=IGNORE_INDEX, ignore_color=ignore_color)
    target = spec.model_copy(update={"classes": classes, "mask": mask})
    if "ignore_color" in mask.codec.fields and tuple(ignore_color) in spec.colors:
        raise PixelwiseError(
            f"--ignore-color {ignore_color}: is the colour of a class; pick another for unlabelled"
        )
    try:  # every mask is then written without reading it back
        mask.codec.check_writable(target)
    except PixelwiseError as exc:
        raise PixelwiseError(f"--to {to}: {exc}") from None
    return target


def _mask_image(labels: np.ndarray, target: DatasetSpec, palette: bool) -> Image.Image:
    raw = target.mask.codec.encode(labels, target, verify=False)  # checked by check_writable
    if palette:
        im = Image.fromarray(raw, mode="P")
        im.putpalette(palette_bytes(target.colors))
        return im
    return Image.fromarray(raw, mode="RGB" if raw.ndim == 3 else "L")


def _write_image(sample: Sample, spec: DatasetSpec, dest_base: Path) -> str:
    """Copy the image file, or write the decoded image as PNG when it is not a file of its own."""
    if get_format(spec.format).read_image is None and sample.index is None:
        dest = dest_base.with_suffix(sample.image.suffix.lower())
        with atomic_path(dest) as tmp:
            shutil.copyfile(sample.image, tmp)
        return dest.name
    image = read_sample_image(sample, spec)
    dest = dest_base.with_suffix(".png")
    with atomic_path(dest) as tmp:
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(tmp, format="PNG")
    return dest.name


@dataclass(frozen=True)
class _Job:
    """What every sample of one conversion shares."""

    spec: DatasetSpec
    target: DatasetSpec  # from :func:`_target`
    palette: bool  # masks as palette PNGs
    table: dict[int, int]  # --map
    staging: Path | None  # None: a dry run


def _sample_key(s: Sample) -> tuple[str, str, int | None]:
    return (str(s.image), str(s.mask), s.index)


def _convert_one(
    s: Sample, job: _Job, base: str
) -> tuple[Counter[int], Counter[str], str | None, tuple[str, str] | None]:
    """Check, decode and write one sample as ``base``: (class histogram, remapped pixels, the
    problem or None, the written image and mask paths or None)."""
    spec, staging = job.spec, job.staging
    remapped: Counter[str] = Counter()
    try:  # the image must be whole and readable: it is copied as it is
        height, width = _image_size(s, spec, False)
    except PixelwiseError as exc:
        msg = str(exc)
        return Counter(), remapped, msg if str(s.image) in msg else f"{s.image}: {msg}", None
    try:
        raw = _remap(read_sample_mask(s, spec), job.table, remapped)
        labels, bad = decode_mask(raw, spec)
    except PixelwiseError as exc:
        msg = str(exc)
        return Counter(), remapped, msg if str(s.mask) in msg else f"{s.where}: {msg}", None
    if bad:
        vals = ", ".join(f"{v} ({n} px)" for v, n in bad.items())
        return (
            Counter(),
            remapped,
            f"{s.where}: mask values outside the declared classes: {vals}",
            None,
        )
    if labels.shape != (height, width):
        return (
            Counter(),
            remapped,
            f"{s.where}: mask size {labels.shape[1]}x{labels.shape[0]} != image size "
            f"{width}x{height}",
            None,
        )
    vals, counts = np.unique(labels, return_counts=True)
    hist = Counter(dict(zip(vals.tolist(), counts.tolist(), strict=True)))
    if staging is None:
        return hist, remapped, None, None
    try:
        image_name = _write_image(s, spec, staging / "images" / base)
    except (PixelwiseError, OSError) as exc:
        return hist, remapped, f"{s.image}: {exc}", None
    with atomic_path(staging / "masks" / f"{base}.png") as tmp:
        _mask_image(labels, job.target, job.palette).save(tmp, format="PNG")
    return hist, remapped, None, (f"images/{image_name}", f"masks/{base}.png")


def _write_lists(
    staging: Path,
    members: dict[str, list[Sample]],
    pairs: dict[tuple[str, str, int | None], tuple[str, str]],
    target: DatasetSpec,
) -> None:
    """The ``<split>.txt`` list files and ``dataset.yaml`` of the converted dataset."""
    for name, ss in members.items():
        lines = [" ".join(pairs[_sample_key(s)]) for s in ss]
        # names that are not UTF-8 keep their bytes (the list reader uses surrogateescape)
        text = "\n".join(lines) + "\n"
        write_bytes_atomic(staging / f"{name}.txt", text.encode("utf-8", "surrogateescape"))
    write_text_atomic(staging / "dataset.yaml", _dataset_yaml(target, list(members)))


def convert_dataset(
    spec: DatasetSpec,
    out: str | os.PathLike[str],
    *,
    splits: Sequence[str] | None = None,
    to: MaskFormat = "index",
    value_map: dict[int, int] | None = None,
    ignore_color: tuple[int, int, int] = (0, 0, 0),
    dry_run: bool = False,
    workers: int | None = None,
) -> ConvertPlan:
    """Convert ``splits`` (default: all) of a dataset into a new folder ``out``.

    Args:
        spec: the source dataset.
        out: the new folder.
        splits: the splits to convert; a sample in several is written once.
        to: the mask encoding written: ``index``, ``palette`` or ``rgb``.
        value_map: raw mask value → new raw value, applied before decoding (``{255: 1}``).
        ignore_color: the colour of unlabelled pixels in ``rgb`` masks.
        dry_run: read and count everything, write nothing.
        workers: reader threads.

    Returns:
        The plan, with counts and problems; ``written`` tells whether ``out`` was created.

    Raises:
        PixelwiseError: ``out`` exists and is not empty, or holds the dataset; an unknown split or
            ``to``; ``ignore_color`` is a class's colour (see :func:`_target`).
    """
    target = _target(spec, to, ignore_color)
    out = Path(out)
    _check_out(spec, out)
    table = dict(value_map or {})
    plan = ConvertPlan(out=out, to=to)
    names = list(splits or spec.splits)
    members: dict[str, list[Sample]] = {}
    for name in names:
        samples, problems = resolve_split(spec, name)
        plan.problems += problems
        members[name] = [s for s in samples if s.mask is not None]
        plan.samples[name] = len(members[name])
    unique = list({_sample_key(s): s for ss in members.values() for s in ss}.values())
    taken: set[str] = set()
    file_names = {id(s): _unique_name(s, taken) for s in unique}
    plan.files = len(unique)
    staging = None
    # folders above ``out`` that this run creates, deepest first: removed again if it fails
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    if not dry_run:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would survive the rename
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
    written: dict[int, tuple[str, str]] = {}
    job = _Job(spec, target, _OUTPUTS[to][1], table, staging)
    try:
        workers = workers or min(8, (os.cpu_count() or 1) + 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for s, (hist, remapped, problem, pair) in zip(
                unique,
                pool.map(lambda s: _convert_one(s, job, file_names[id(s)]), unique),
                strict=True,
            ):
                plan.values.update(hist)
                plan.remapped.update(remapped)
                if problem:
                    plan.problems.append(problem)
                if pair:
                    written[id(s)] = pair
        if staging is None or plan.problems:
            return plan
        pairs = {_sample_key(s): written[id(s)] for s in unique}
        _write_lists(staging, members, pairs, target)
        if out.exists():
            out.rmdir()  # empty (checked); replaced by the finished folder
        os.replace(staging, out)
        staging = None
        plan.written = True
        return plan
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not plan.written:
            for folder in made:
                try:
                    folder.rmdir()
                except OSError:
                    break


def _dataset_yaml(target: DatasetSpec, names: list[str]) -> str:
    """The converted dataset's YAML (``target`` from :func:`_target`)."""
    classes = [
        {"name": c.name, "color": list(target.colors[i])} for i, c in enumerate(target.classes)
    ]
    doc = {
        "name": target.name,
        "root": ".",
        "image_channels": target.image_channels,
        "classes": classes,
        "mask": target.mask.as_yaml(),
        "splits": {n: {"list": f"{n}.txt"} for n in names},
    }
    head = f"# written by pixelwise data convert from {target.source}\n"
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
