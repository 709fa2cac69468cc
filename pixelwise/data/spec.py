"""Dataset definition: one YAML file names the root, the classes, the mask encoding and the splits.

Example (CamVid)::

    name: camvid
    root: ../../../shared/data/camvid     # relative paths are relative to this YAML file
    image_channels: 3
    classes:
      - {name: sky, color: [128, 128, 128]}
      - ...
    mask: {encoding: index, ignore_index: 11}
    splits:
      train: {list: train.txt}            # lines of "image mask", relative to root
      val: {images: val, masks: valannot} # or paired folders matched by file stem

Mask encodings: ``index`` (pixel value = class id), ``value_map`` (each class's ``mask_value``, e.g. EM
masks 0 → 0, 255 → 1), ``rgb`` (colour-coded masks through the class colours), ``binary`` (lossy 0/255
masks such as JPEG, thresholded); each is an object in :mod:`pixelwise.data.encodings`. A folder holding ``images/`` and ``masks/`` needs no YAML at all: see
:func:`infer_spec`. ``format:`` names a dataset family (VOC, Cityscapes, COCO, NIfTI, ...) whose
defaults fill in the rest: see :mod:`pixelwise.data.formats`.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import PixelwiseError, first_line, pydantic_message
from .classes import ClassInfo, default_colors
from .encodings import MaskEncoding, expected_encodings, get_encoding, list_encodings
from .io import IMAGE_EXTENSIONS, read_mask

__all__ = [
    "MaskSpec",
    "SplitSpec",
    "DatasetSpec",
    "Sample",
    "load_dataset_spec",
    "infer_spec",
    "decode_mask",
    "encode_mask",
    "resolve_split",
]


class MaskSpec(BaseModel):
    """How mask files encode classes."""

    model_config = ConfigDict(extra="forbid")

    encoding: str = "index"  # a registered mask encoding (pixelwise.data.encodings)
    ignore_index: int | None = None  # raw value meaning "unlabelled" (index, value_map)
    ignore_color: tuple[int, int, int] | None = None  # colour meaning "unlabelled" (rgb)
    threshold: int = 128  # binary: value >= threshold is class 1
    # more raw values meaning "unlabelled" (index, value_map), e.g. Cityscapes' non-train label ids
    ignore_values: list[int] = Field(default_factory=list)

    @field_validator("encoding", mode="before")
    @classmethod
    def _registered(cls, value: object) -> object:
        if not (isinstance(value, str) and value in list_encodings()):
            # the message pydantic gives a Literal, so a typo reads the same as ever
            raise PydanticCustomError(
                "literal_error", "Input should be {expected}", {"expected": expected_encodings()}
            )
        return value

    @property
    def codec(self) -> MaskEncoding:
        """The encoding object ``encoding`` names: it decodes, encodes and describes masks."""
        return get_encoding(self.encoding)

    def as_yaml(self) -> dict[str, Any]:
        """The ``mask:`` mapping of a dataset YAML: ``encoding`` and the keys its encoding reads that
        differ from their defaults (tuples as lists, as YAML has them)."""
        values = self.model_dump(include=set(self.codec.fields), exclude_defaults=True)
        plain = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return {"encoding": self.encoding, **plain}


class SplitSpec(BaseModel):
    """One split: a list file of ``image mask`` lines, or paired folders matched by stem."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    list_file: str | list[str] | None = Field(default=None, alias="list")  # YAML key: list
    images: str | None = None
    masks: str | None = None
    mask_suffix: str = ""  # mask stem = image stem + suffix (e.g. "_mask")
    stems: list[str] | None = None  # keep only these image stems (explicit sub-splits)

    @model_validator(mode="after")
    def _one_source(self) -> SplitSpec:
        if (self.list_file is None) == (self.images is None):
            raise ValueError("a split needs exactly one of 'list' or 'images'")
        return self


class DatasetSpec(BaseModel):
    """A dataset: where it is, its classes, how masks encode them, and its splits."""

    model_config = ConfigDict(extra="forbid")

    name: str = "dataset"
    root: Path
    format: str = "folders"  # a registered dataset format (pixelwise.data.formats)
    options: dict[str, Any] = Field(default_factory=dict)  # the format's options, e.g. {axis: 2}
    image_channels: Literal[1, 3] = 3
    classes: list[ClassInfo]
    mask: MaskSpec = MaskSpec()
    splits: dict[str, SplitSpec]
    source: str | None = None  # the YAML file or folder it came from (set on loading)

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if not self.classes:
            raise ValueError("at least one class is needed")
        if len(self.classes) > 255:
            raise ValueError("at most 255 classes are supported")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate class names in {names}")
        self.mask.codec.check(self)
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        fallback = default_colors(self.num_classes)
        return [c.color or fallback[i] for i, c in enumerate(self.classes)]

    def split(self, name: str) -> SplitSpec:
        if name not in self.splits:
            raise PixelwiseError(
                f"dataset {self.name!r} ({self.source}) has no split {name!r}; "
                f"splits: {', '.join(self.splits)}"
            )
        return self.splits[name]


@dataclass(frozen=True)
class Sample:
    """One image and its labels: ``index`` picks an item inside a container file (a COCO or CVAT
    image id, a slice of a volume) where the format has one."""

    image: Path
    mask: Path | None
    index: int | None = None

    @property
    def where(self) -> str:
        """The mask file for messages, with the item inside it (``ann.json [item 3]``)."""
        return f"{self.mask}" + (f" [item {self.index}]" if self.index is not None else "")


def load_dataset_spec(path: str | os.PathLike[str]) -> DatasetSpec:
    """Load a dataset YAML, or infer a spec from a folder of ``images/`` and ``masks/``."""
    p = Path(path)
    if p.is_dir():
        return infer_spec(p)
    if not p.exists():
        raise PixelwiseError(f"{p}: dataset file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PixelwiseError(f"{p}: invalid YAML ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise PixelwiseError(f"{p}: expected a mapping with root, classes and splits")
    if "root" in raw and isinstance(raw["root"], str):
        root = Path(os.path.expanduser(os.path.expandvars(raw["root"])))
        raw["root"] = root if root.is_absolute() else (p.parent / root)
    raw.setdefault("root", p.parent)
    if "format" in raw or "options" in raw:
        raw = _with_format_defaults(raw, str(p))
    try:
        spec = DatasetSpec(**{**raw, "source": str(p)})
    except ValidationError as exc:
        raise PixelwiseError(pydantic_message(exc, str(p))) from None
    if not spec.root.is_dir():
        raise PixelwiseError(f"{p}: dataset root {spec.root} is not a folder")
    return spec


def _with_format_defaults(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The YAML mapping with its format's defaults filled in under the user's own keys."""
    from .formats import get_format
    from .formats._common import merged_options

    try:
        fmt = get_format(str(raw.get("format", "folders")))
    except PixelwiseError as exc:
        raise PixelwiseError(f"{where}: {exc}") from None
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise PixelwiseError(f"{where}: options must be a mapping, got {options!r}")
    merged_options(fmt.name, fmt.options, options, where)
    if fmt.defaults is None:
        return raw
    root = Path(raw["root"])
    if not root.is_dir():
        raise PixelwiseError(f"{where}: dataset root {root} is not a folder")
    return {**fmt.defaults(root, dict(options)), **raw}


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PixelwiseError(f"{folder}: folder not found")
    return sorted(
        f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
    )


def _unreadable_links(folder: Path) -> list[str]:
    """Problems for image-named symbolic links that lead nowhere (broken, or a loop)."""
    if not folder.is_dir():
        return []
    return [
        f"{f}: {'symbolic link loop' if f.is_symlink() and _loops(f) else 'broken symbolic link'}"
        ", not an image"
        for f in sorted(folder.iterdir())
        if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_symlink() and not f.exists()
    ]


def _loops(link: Path) -> bool:
    try:
        link.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop so
        return True
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def resolve_split(spec: DatasetSpec, name: str) -> tuple[list[Sample], list[str]]:
    """The samples of a split, and the problems found while pairing them (e.g. a missing mask)."""
    split = spec.split(name)
    if spec.format != "folders":
        from .formats import get_format

        fmt = get_format(spec.format)
        if fmt.resolve is not None:
            samples, problems = fmt.resolve(spec, name, split)
            if not samples:
                problems.append(f"split {name!r} of {spec.source}: no images (empty split)")
            return samples, problems
    root = spec.root
    samples: list[Sample] = []
    problems: list[str] = []
    list_files = [split.list_file] if isinstance(split.list_file, str) else split.list_file or []
    for rel in list_files:
        list_file = root / rel
        if not list_file.is_file():
            raise PixelwiseError(f"{list_file}: split list file not found (split {name!r})")
        # surrogateescape: a file name that is not UTF-8 maps to the same bytes on disk
        text = list_file.read_text(encoding="utf-8", errors="surrogateescape")
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields or line.lstrip().startswith("#"):
                continue
            if len(fields) > 2:
                problems.append(f"{list_file}:{lineno}: expected 'image [mask]', got {line!r}")
                continue
            image = root / fields[0]
            mask = root / fields[1] if len(fields) == 2 else None
            samples.append(Sample(image, mask))
    if split.images is not None:
        images = _list_images(root / split.images)  # type: ignore[operator]
        problems.extend(_unreadable_links(root / split.images))  # type: ignore[operator]
        if split.masks is not None:
            problems.extend(_unreadable_links(root / split.masks))
        masks: dict[str, Path] = {}
        if split.masks is not None:
            masks = {m.stem: m for m in _list_images(root / split.masks)}
        for img in images:
            mask = None
            if split.masks is not None:
                mask = masks.get(img.stem + split.mask_suffix)
                if mask is None:
                    problems.append(
                        f"{img}: no mask named {img.stem + split.mask_suffix}.* "
                        f"in {root / split.masks}"
                    )
                    continue
            samples.append(Sample(img, mask))
    if split.stems is not None:
        wanted = set(split.stems)
        found = {s.image.stem for s in samples}
        missing = sorted(wanted - found)
        if missing:
            problems.append(f"split {name!r}: stems not found: {', '.join(missing[:10])}")
        samples = [s for s in samples if s.image.stem in wanted]
    if not samples:
        problems.append(f"split {name!r} of {spec.source}: no images (empty split)")
    return samples, problems


def decode_mask(raw: np.ndarray, spec: DatasetSpec) -> tuple[np.ndarray, dict[str, int]]:
    """Map a raw mask to class indices (uint8, ``IGNORE_INDEX`` for unlabelled), by the spec's encoding.

    Returns:
        The label map and ``{undeclared value: pixel count}`` (empty when the mask is valid). Undeclared
        pixels are set to ``IGNORE_INDEX`` in the label map.
    """
    return spec.mask.codec.decode(raw, spec)


def encode_mask(labels: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Class indices (``IGNORE_INDEX`` for unlabelled) → the raw mask in the spec's encoding, which
    :func:`decode_mask` reads back as ``labels`` (else :class:`PixelwiseError`)."""
    return spec.mask.codec.encode(labels, spec)


def _stable_fold(stem: str, k: int = 5) -> int:
    return int(hashlib.md5(stem.encode("utf-8")).hexdigest(), 16) % k


def infer_spec(folder: str | os.PathLike[str]) -> DatasetSpec:
    """A spec for a folder without YAML.

    Layouts: ``folder/images`` + ``folder/masks`` (split into ``train``/``val`` 80/20 by a stable hash of
    the file stem, plus ``all``), or ``folder/<split>/images`` + ``folder/<split>/masks`` for each split.
    Classes come from the mask values: only 0 and 255 → binary ``value_map`` (0 background, 255
    foreground); other gray values → ``index`` classes 0..max (255 means unlabelled when other values
    exist); colour masks → one class per colour found. ``spec.source`` says what was inferred.
    """
    root = Path(folder)
    from .formats import detect_format

    fmt = detect_format(root)
    if fmt is not None and fmt.defaults is not None:
        raw = fmt.defaults(root, {})
        source = f"{root} (detected format {fmt.name!r})"
        try:
            return DatasetSpec(
                **{"name": root.name, **raw, "root": root, "format": fmt.name, "source": source}
            )
        except ValidationError as exc:
            raise PixelwiseError(pydantic_message(exc, source)) from None
    splits: dict[str, SplitSpec] = {}
    if (root / "images").is_dir() and (root / "masks").is_dir():
        stems = [p.stem for p in _list_images(root / "images")]
        val = [s for s in stems if _stable_fold(s) == 0]
        train = [s for s in stems if _stable_fold(s) != 0]
        splits["all"] = SplitSpec(images="images", masks="masks")
        if train and val:
            splits["train"] = SplitSpec(images="images", masks="masks", stems=train)
            splits["val"] = SplitSpec(images="images", masks="masks", stems=val)
    else:
        for sub in sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []:
            if (sub / "images").is_dir() and (sub / "masks").is_dir():
                splits[sub.name] = SplitSpec(images=f"{sub.name}/images", masks=f"{sub.name}/masks")
    if not splits:
        raise PixelwiseError(
            f"{root}: not a dataset YAML and no images/ + masks/ folders (or <split>/images + "
            "<split>/masks) inside"
        )
    mask_files = sorted({m for s in splits.values() for m in _list_images(root / s.masks)})  # type: ignore[operator]
    if not mask_files:
        raise PixelwiseError(f"{root}: the masks folder holds no images")
    gray_values: set[int] = set()
    colours: set[tuple[int, int, int]] = set()
    channels = 1
    for m in mask_files:
        raw = read_mask(m)
        if raw.ndim == 3 and not (
            np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 0], raw[..., 2])
        ):
            colours.update(map(tuple, np.unique(raw.reshape(-1, 3), axis=0).tolist()))
        else:
            gray_values.update(np.unique(raw if raw.ndim == 2 else raw[..., 0]).tolist())
    first = _list_images(root / next(iter(splits.values())).images)  # type: ignore[operator]
    if first:
        from PIL import Image

        with Image.open(first[0]) as im:
            channels = 1 if im.mode in ("L", "I;16", "I", "1") else 3
    if colours:
        colours.update((v, v, v) for v in gray_values)
        ordered = sorted(colours)
        classes = [ClassInfo(name=f"class_{i}", color=c) for i, c in enumerate(ordered)]
        mask = MaskSpec(encoding="rgb")
        how = f"{len(ordered)} mask colours → classes class_0..class_{len(ordered) - 1}"
    elif gray_values <= {0, 255}:
        classes = [
            ClassInfo(name="background", color=(0, 0, 0), mask_value=0),
            ClassInfo(name="foreground", color=(255, 255, 255), mask_value=255),
        ]
        mask = MaskSpec(encoding="value_map")
        how = "binary masks: 0 → background, 255 → foreground"
    else:
        ignore = 255 if 255 in gray_values else None
        top = max(v for v in gray_values if v != ignore)
        classes = [ClassInfo(name=f"class_{i}") for i in range(top + 1)]
        mask = MaskSpec(encoding="index", ignore_index=ignore)
        how = f"index masks: values 0..{top} → class_0..class_{top}" + (
            ", 255 → unlabelled" if ignore is not None else ""
        )
    split_note = ", ".join(f"{k}" for k in splits)
    return DatasetSpec(
        name=root.name,
        root=root,
        image_channels=channels,
        classes=classes,
        mask=mask,
        splits=splits,
        source=f"{root} (inferred: {how}; splits {split_note}; images "
        f"{'grayscale' if channels == 1 else 'RGB'})",
    )
