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
      train: {list: train.txt}            # lines "image mask" (or "image<TAB>mask"), relative to root
      val: {images: val, masks: valannot} # or paired folders matched by file stem
      extra: {images: [a/img, b/img], masks: [a/gt, b/gt]}   # several folders, paired by position
      ct: {images: scans, masks: scans, image_ext: .jpg, mask_ext: .png}   # one folder: x.jpg + x.png
      drive: {images: im, masks: gt, pair: {image: "{id}_image", mask: "{id}_label"}}
      fov: {images: im, masks: gt, roi: fov, pair: {roi: "{id}_mask"}}   # scored inside the ROI only

Mask encodings: ``index`` (pixel value = class id), ``value_map`` (each class's ``mask_value``, e.g. EM
masks 0 → 0, 255 → 1), ``rgb`` (colour-coded masks through the class colours), ``binary`` (lossy 0/255
masks such as JPEG, thresholded); each is an object in :mod:`pixelwise.data.encodings`. A folder holding ``images/`` and ``masks/`` needs no YAML at all: see
:func:`infer_spec`. ``format:`` names a dataset family (VOC, Cityscapes, COCO, NIfTI, ...) whose
defaults fill in the rest: see :mod:`pixelwise.data.formats`.
"""

from __future__ import annotations

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
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..errors import PixelwiseError, first_line, pydantic_message
from .classes import ClassInfo, default_colors
from .encodings import MaskEncoding, expected_encodings, get_encoding, list_encodings
from .io import read_mask
from .pairing import (
    ID,
    PairSpec,
    check_pattern,
    list_entries,
    list_images,
    normalise_exts,
    pair_folder,
    same_folder_problem,
)
from .survey import gray_reading, survey_masks

__all__ = [
    "MaskSpec",
    "PairSpec",
    "SplitPair",
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


class SplitPair(PairSpec):
    """A split's name patterns: :class:`PairSpec`'s, and the region-of-interest files' (``roi``,
    default ``{id}``: the image's id), e.g. DRIVE's ``{id}_training_mask``."""

    roi: str = ID

    @field_validator("roi")
    @classmethod
    def _valid_roi(cls, value: str) -> str:
        return check_pattern(value, "pair.roi")


class SplitSpec(BaseModel):
    """One split: list files (``image``, ``image<TAB>mask`` or ``image mask`` lines), or paired
    folders (one or several, paired by position) whose files pair by name (:mod:`.pairing`).

    ``roi`` names region-of-interest folders (``roi[i]`` pairs with ``images[i]``, by ``pair.roi``);
    list files give an ROI as a third column (``image<TAB>mask<TAB>roi``). Pixels outside an ROI
    (value 0) are ignored by training and every score."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    list_file: str | list[str] | None = Field(default=None, alias="list")  # YAML key: list
    images: str | list[str] | None = None  # a folder, or several: images[i] pairs with masks[i]
    masks: str | list[str] | None = None
    mask_suffix: str = ""  # mask stem = image stem + suffix (e.g. "_mask"): pair.mask "{id}_mask"
    pair: SplitPair | None = None  # name patterns with one {id}: {image: "{id}_image", mask: ...}
    roi: str | list[str] | None = None  # region-of-interest folders: roi[i] pairs with images[i]
    image_ext: list[str] | None = None  # read only these extensions as images (".jpg" or a list)
    mask_ext: list[str] | None = None  # ... and as masks
    stems: list[str] | None = None  # keep only these image stems (explicit sub-splits)

    @field_validator("image_ext", "mask_ext", mode="before")
    @classmethod
    def _exts(cls, value: object, info) -> object:  # noqa: ANN001 - pydantic's ValidationInfo
        return normalise_exts(value, info.field_name)

    @model_validator(mode="after")
    def _one_source(self) -> SplitSpec:
        if (self.list_file is None) == (self.images is None):
            raise ValueError("a split needs exactly one of 'list' or 'images'")
        if self.images is None:
            used = [
                k for k in ("masks", "roi", "pair", "image_ext", "mask_ext") if getattr(self, k)
            ]
            if used:
                raise ValueError(
                    f"{used[0]} applies to paired folders (images:), not to list files"
                )
            return self
        if self.pair is not None and self.mask_suffix:
            raise ValueError(
                "give pair or mask_suffix, not both (mask_suffix: _L is pair.mask '{id}_L')"
            )
        if self.mask_suffix:
            check_pattern(ID + self.mask_suffix, "mask_suffix")
        images, masks = self.folders()
        if masks is not None and len(masks) != len(images):
            raise ValueError(
                f"{len(images)} image folder(s) but {len(masks)} mask folder(s): list one mask "
                "folder per image folder (images[i] pairs with masks[i])"
            )
        rois = self.roi_folders()
        if rois is not None and len(rois) != len(images):
            raise ValueError(
                f"{len(images)} image folder(s) but {len(rois)} roi folder(s): list one roi "
                "folder per image folder (images[i] pairs with roi[i])"
            )
        return self

    def roi_folders(self) -> list[str] | None:
        """The region-of-interest folders (``None``: no ROI), as a list."""
        return [self.roi] if isinstance(self.roi, str) else self.roi

    def check_shared_folders(self) -> None:
        """Raise ``ValueError`` when images and masks share a folder and nothing says which files
        are masks (generic paired folders only: a LabelMe JSON beside its image is no image)."""
        images, masks = self.folders()
        for img, mask in zip(images, masks or [], strict=False):
            if os.path.normpath(img) == os.path.normpath(mask):
                why = same_folder_problem(img, self.patterns(), self.image_ext, self.mask_ext)
                if why:
                    raise ValueError(why)

    def folders(self) -> tuple[list[str], list[str] | None]:
        """The image folders and their mask folders (``None``: no masks), as lists."""
        images = [self.images] if isinstance(self.images, str) else list(self.images or [])
        masks = [self.masks] if isinstance(self.masks, str) else self.masks
        return images, masks

    def patterns(self) -> tuple[str, str]:
        """The image and mask name patterns (``mask_suffix`` is a mask pattern ``{id}<suffix>``)."""
        if self.pair is not None:
            return self.pair.image, self.pair.mask
        return ID, ID + self.mask_suffix

    @property
    def custom_pairing(self) -> bool:
        """Uses what only the generic paired-folder rules read (several folders, pair, extensions)."""
        several = not isinstance(self.images, str | None) or not isinstance(self.masks, str | None)
        custom = (self.pair, self.image_ext, self.mask_ext, self.roi)
        return several or any(v is not None for v in custom)


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
    # lines saying how a folder without YAML was read ("masks hold only 0 and 255: ..."), for
    # `data validate` and `data inspect`: not a YAML key
    _notes: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DatasetSpec:
        if not self.classes:
            raise ValueError("at least one class is needed")
        self._generic_pairing()
        if len(self.classes) > 255:
            raise ValueError("at most 255 classes are supported")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate class names in {names}")
        self.mask.codec.check(self)
        return self

    def _generic_pairing(self) -> None:
        """Several folders, ``pair`` and extensions are read by the generic paired-folder rules
        only: a format that pairs its own files refuses them."""
        from .formats import get_format

        try:
            fmt = get_format(self.format)
        except PixelwiseError:  # an unknown format is reported where it is read
            return
        for name, split in self.splits.items():
            if split.roi is not None and fmt.resolve is not None:
                raise ValueError(
                    f"split {name!r}: roi needs format 'folders' (format {fmt.name!r} pairs its "
                    "own files)"
                )
            if fmt.resolve is None or fmt.folder_rules:
                try:
                    split.check_shared_folders()
                except ValueError as exc:
                    raise ValueError(f"split {name!r}: {exc}") from None
            elif split.custom_pairing:
                raise ValueError(
                    f"split {name!r}: format {fmt.name!r} pairs its own files; lists of folders, "
                    "pair, image_ext, mask_ext and roi need format 'folders'"
                )

    @property
    def notes(self) -> list[str]:
        """How a dataset without YAML was read, one line each (empty for a YAML)."""
        return list(self._notes)

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
    roi: Path | None = None  # region of interest: pixels where it is 0 are ignored

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
    defaults = fmt.defaults(root, dict(options))
    defaults.pop("_notes", None)  # how a folder without YAML was read: this one has a YAML
    return {**defaults, **raw}


def resolve_split(
    spec: DatasetSpec, name: str, *, unlabelled: bool = False
) -> tuple[list[Sample], list[str]]:
    """The samples of a split, and the problems found while pairing them (e.g. a missing mask);
    with ``unlabelled``, images of mask-folder splits without a mask are samples (mask ``None``)
    rather than problems."""
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
            fields = list_entries(line, root)
            if len(fields) > (3 if "\t" in line else 2):  # a third column: tab-separated
                problems.append(
                    f"{list_file}:{lineno}: expected 'image', 'image<TAB>mask', 'image mask' or "
                    f"'image<TAB>mask<TAB>roi', got {line!r} (separate paths holding spaces with "
                    "a tab)"
                )
            elif fields:
                paths = [root / f for f in fields] + [None, None]
                samples.append(Sample(paths[0], paths[1], roi=paths[2]))
    images, masks = split.folders()
    for i, folder in enumerate(images):
        mask_folder = root / masks[i] if masks is not None else None
        pairs, found = pair_folder(
            root / folder,
            mask_folder,
            split.patterns(),
            split.image_ext,
            split.mask_ext,
            unlabelled=unlabelled,
        )
        problems += found
        rois = _roi_pairs(root, split, i, problems)
        samples += [Sample(img, mask, roi=rois.get(img)) for img, mask in pairs]
    if split.stems is not None:
        wanted = set(split.stems)
        found_stems = {s.image.stem for s in samples}
        missing = sorted(wanted - found_stems)
        if missing:
            problems.append(f"split {name!r}: stems not found: {', '.join(missing[:10])}")
        samples = [s for s in samples if s.image.stem in wanted]
    if not samples:
        problems.append(f"split {name!r} of {spec.source}: no images (empty split)")
    return samples, problems


def _roi_pairs(root: Path, split: SplitSpec, i: int, problems: list[str]) -> dict[Path, Path]:
    """Image → ROI file for ``images[i]`` and ``roi[i]``, paired as masks are (by ``pair.image``
    and ``pair.roi``); the pairing's problems not already in ``problems`` are added to it."""
    folders = split.roi_folders()
    if folders is None:
        return {}
    images, _ = split.folders()
    pattern = split.pair.roi if split.pair is not None else ID
    pairs, found = pair_folder(
        root / images[i], root / folders[i], (split.patterns()[0], pattern), split.image_ext
    )
    problems += [f"roi: {p}" for p in found if p not in problems]
    return {img: roi for img, roi in pairs if roi is not None}


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
    Classes come from the values of up to :data:`~.survey.SURVEY_MASKS` masks spread over the folder:
    only 0 and 255 → binary ``value_map`` (0 background, 255 foreground); values near 0 and 255 only
    (lossy, e.g. JPEG) → ``binary`` thresholded at 128; other gray values → ``index`` classes 0..max
    (255 means unlabelled when other values exist); colour masks → one class per colour found.
    ``spec.source`` says what was inferred, and ``spec.notes`` says it in one line where the reading
    is a guess (binary masks).
    """
    root = Path(folder)
    from .formats import detect_format

    fmt = detect_format(root)
    if fmt is not None and fmt.defaults is not None:
        raw = fmt.defaults(root, {})
        notes = raw.pop("_notes", [])  # how the format read a folder without YAML (geotiff)
        source = f"{root} (detected format {fmt.name!r})"
        try:
            spec = DatasetSpec(
                **{"name": root.name, **raw, "root": root, "format": fmt.name, "source": source}
            )
        except ValidationError as exc:
            raise PixelwiseError(pydantic_message(exc, source)) from None
        spec._notes = list(notes)
        return spec
    splits: dict[str, SplitSpec] = {}
    if (root / "images").is_dir() and (root / "masks").is_dir():
        stems = [p.stem for p in list_images(root / "images")]
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
    mask_files = sorted({m for s in splits.values() for m in list_images(root / s.masks)})  # type: ignore[operator]
    if not mask_files:
        raise PixelwiseError(f"{root}: the masks folder holds no images")
    survey = survey_masks(mask_files, read_mask)
    channels = 1
    first = list_images(root / next(iter(splits.values())).images)  # type: ignore[operator]
    if first:
        from PIL import Image

        with Image.open(first[0]) as im:
            channels = 1 if im.mode in ("L", "I;16", "I", "1") else 3
    notes: list[str] = []
    if survey.colours:
        colours = survey.colours | {(v, v, v) for v in survey.gray}
        ordered = sorted(colours)
        classes: list[Any] = [ClassInfo(name=f"class_{i}", color=c) for i, c in enumerate(ordered)]
        mask: Any = MaskSpec(encoding="rgb")
        how = f"{len(ordered)} mask colours → classes class_0..class_{len(ordered) - 1}"
    else:
        reading = gray_reading(survey.gray)
        classes, mask, how = reading.classes, reading.mask, reading.how
        notes += [reading.note] if reading.note else []
    if survey.read < survey.total:
        how = f"from {survey.read} of {survey.total} masks, {how}"
    split_note = ", ".join(f"{k}" for k in splits)
    spec = DatasetSpec(
        name=root.name,
        root=root,
        image_channels=channels,
        classes=classes,
        mask=mask,
        splits=splits,
        source=f"{root} (inferred: {how}; splits {split_note}; images "
        f"{'grayscale' if channels == 1 else 'RGB'})",
    )
    spec._notes = notes
    return spec
