"""Where ``pixelwise annotate`` keeps labels: one mask file per image in the dataset's own encoding,
a version per save, and an edit history per image.

A label map travels as H×W class indices (``IGNORE_INDEX`` = unlabelled). Saving encodes it with the
dataset's mask encoding (:meth:`pixelwise.data.encodings.MaskEncoding.encode`: index, value map,
colour, binary), writes it atomically, and keeps the previous file in the history, so no save ever
loses a version. A save names the version it was edited from (the ``ETag`` the page got); when the
file changed since (another tab, another person, another tool), the save is refused with
:class:`Conflict` and nothing is written — the editor decides whether to load theirs or overwrite.

Two places to write:

* a labels folder (``--labels DIR``, the default): ``DIR/<image path relative to the dataset
  root>.png``; an image's existing dataset mask is what the editor starts from until a label is
  saved;
* the dataset itself (``--in-place``): the mask files the dataset already pairs with its images
  (format ``folders``); an image without one gets ``<its split's mask folder>/<image stem>.png``.

In a labels folder, ``dataset.yaml`` and ``<split>.txt`` lists describe the labels saved so far as
a dataset (:meth:`LabelStore.write_dataset`): ``pixelwise train`` or ``pixelwise auto`` retrain on it.

The history lives in ``<labels>/.history/<item>/`` (in place: ``<dataset root>/.pixelwise-history``):
``log.jsonl`` (one JSON line per save: time, version, the version it replaced, changed pixels, the
source) and every replaced version's file, ``<version>.png``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._atomic import write_bytes_atomic
from ..data.classes import IGNORE_INDEX
from ..data.dataset import load_pair
from ..data.formats import read_sample_image
from ..data.io import image_size, read_mask
from ..data.spec import DatasetSpec, Sample, resolve_split
from ..errors import PixelwiseError, printable

__all__ = ["Conflict", "Item", "LabelStore", "NO_VERSION"]

NO_VERSION = "none"  # the version of an image that has no saved label yet
_HISTORY = ".history"
_IN_PLACE_HISTORY = ".pixelwise-history"
# Largest image the editor opens (width × height): the page holds a few copies of its label map.
MAX_PIXELS = 64 * 2**20


class Conflict(PixelwiseError):
    """A save named a version that is no longer the current one; nothing was written."""

    def __init__(self, item: Item, given: str, current: str):
        super().__init__(
            f"{item.name}: changed since you opened it (you edited version {given}, it is now "
            f"{current}, saved elsewhere — another tab or person?): load theirs, or save yours "
            "over it"
        )
        self.current = current


@dataclass
class Item:
    """One image of the dataset: ``index`` is its id in the app (the order of the splits)."""

    index: int
    split: str
    sample: Sample
    name: str  # the image path relative to the dataset root (or its split and file name)
    label_path: Path | None  # where saves go; None: this image cannot be saved in place
    history_dir: Path


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _relative(path: Path, root: Path, split: str) -> Path:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return Path(split) / path.name


class LabelStore:
    """The images of ``spec`` (all splits, or ``splits``) and their labels.

    Args:
        spec: the dataset.
        labels_dir: the labels folder; ``None`` with ``in_place``.
        in_place: write into the dataset's own mask files (format ``folders`` only).
        splits: the splits to annotate (default: all, in the dataset's order).

    Raises:
        PixelwiseError: no images; ``in_place`` for a format whose masks are not files per image.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        labels_dir: str | os.PathLike[str] | None = None,
        *,
        in_place: bool = False,
        splits: list[str] | None = None,
    ):
        if in_place == (labels_dir is not None):
            raise PixelwiseError("give a labels folder or in_place=True (one of them)")
        if in_place and spec.format != "folders":
            raise PixelwiseError(
                f"{spec.source}: --in-place needs a dataset of mask files (format 'folders'), this "
                f"one is {spec.format!r}: write to a labels folder (--labels DIR)"
            )
        self.spec = spec
        self.in_place = in_place
        self.labels_dir = Path(labels_dir) if labels_dir is not None else None
        history_root = (
            spec.root / _IN_PLACE_HISTORY if in_place else self.labels_dir / _HISTORY  # type: ignore[operator]
        )
        self.items: list[Item] = []
        seen: set[Path] = set()
        for split in splits or list(spec.splits):
            samples, _ = resolve_split(spec, split, unlabelled=True)
            for sample in samples:
                if sample.image in seen:  # an image in two splits is one item
                    continue
                seen.add(sample.image)
                rel = _relative(sample.image, spec.root, split)
                key = rel.with_suffix("").as_posix()
                self.items.append(
                    Item(
                        index=len(self.items),
                        split=split,
                        sample=sample,
                        name=rel.as_posix(),
                        label_path=self._label_path(sample, rel, split),
                        history_dir=history_root / key,
                    )
                )
        if not self.items:
            raise PixelwiseError(f"{spec.source}: no images to annotate")
        images = {it.sample.image.resolve() for it in self.items}
        owner: dict[Path, str] = {}
        for it in self.items:
            if it.label_path is None:
                continue
            target = it.label_path.resolve()
            if target in images:
                raise PixelwiseError(
                    f"{it.label_path}: the label of {it.name} would be written over an image; "
                    "choose another labels folder"
                )
            if target in owner:  # a.jpg and a.png beside each other
                raise PixelwiseError(
                    f"{it.label_path}: the label of both {owner[target]} and {it.name}; rename "
                    "one of the images"
                )
            owner[target] = it.name
        self._locks = [threading.Lock() for _ in self.items]
        self._sizes: dict[int, tuple[int, int]] = {}
        self._dataset_lock = threading.Lock()

    def _label_path(self, sample: Sample, rel: Path, split: str) -> Path | None:
        if not self.in_place:
            return self.labels_dir / rel.with_suffix(".png")  # type: ignore[operator]
        if sample.mask is not None and sample.index is None:
            return sample.mask
        images, masks = self.spec.split(split).folders()
        if masks is None:
            return None
        for image_dir, mask_dir in zip(images, masks, strict=False):
            folder = self.spec.root / image_dir
            try:
                inner = sample.image.relative_to(folder)
            except ValueError:
                continue
            ext = self.spec.split(split).mask_ext or ".png"
            ext = ext[0] if isinstance(ext, list) else ext
            return self.spec.root / mask_dir / inner.with_suffix(ext)
        return None

    def item(self, index: int) -> Item:
        """The item with this id, or :class:`PixelwiseError`."""
        if not 0 <= index < len(self.items):
            raise PixelwiseError(f"no image {index} (0..{len(self.items) - 1})")
        return self.items[index]

    # -- reading ---------------------------------------------------------------------------

    def size(self, item: Item) -> tuple[int, int]:
        """(height, width) of the image, from its header (or, for a format Pillow cannot read, from
        the image itself)."""
        if item.index not in self._sizes:
            try:
                self._sizes[item.index] = image_size(item.sample.image)
            except PixelwiseError:
                self._sizes[item.index] = read_sample_image(item.sample, self.spec).shape[:2]
        return self._sizes[item.index]

    def image(self, item: Item) -> np.ndarray:
        """The image, H×W×C uint8, through the dataset format's reader."""
        h, w = self.size(item)
        if h * w > MAX_PIXELS:
            raise PixelwiseError(
                f"{item.name}: {w}x{h} is over the editor's {MAX_PIXELS:,} pixels; tile it first"
            )
        return read_sample_image(item.sample, self.spec)

    def saved(self, item: Item) -> bool:
        """Whether a label has been saved for this image where saves go."""
        return item.label_path is not None and item.label_path.is_file()

    def version(self, item: Item) -> str:
        """The current version of the image's label: a hash of the saved file, else ``none``."""
        if not self.saved(item):
            return NO_VERSION
        return _version(item.label_path.read_bytes())  # type: ignore[union-attr]

    def has_labels(self, item: Item) -> bool:
        """Whether the image has labels: saved, or a mask in the dataset."""
        return self.saved(item) or (item.sample.mask is not None and item.sample.mask.exists())

    def labels(self, item: Item) -> tuple[np.ndarray, str]:
        """The label map to edit (the saved one, else the dataset's mask, else all unlabelled)
        and its version."""
        with self._locks[item.index]:
            if self.saved(item):
                data = item.label_path.read_bytes()  # type: ignore[union-attr]
                return self._decode(item.label_path), _version(data)  # type: ignore[arg-type]
        if item.sample.mask is not None and item.sample.mask.exists():
            _, labels = load_pair(item.sample, self.spec)
            if labels is not None:
                return labels, NO_VERSION
        h, w = self.size(item)
        return np.full((h, w), IGNORE_INDEX, np.uint8), NO_VERSION

    def _decode(self, path: Path) -> np.ndarray:
        """A mask file of this dataset's encoding → class indices (undeclared values unlabelled)."""
        codec = self.spec.mask.codec
        labels, _ = codec.decode(read_mask(path, as_rgb=codec.reads_rgb), self.spec)
        return labels

    # -- writing ---------------------------------------------------------------------------

    def save(self, item: Item, labels: np.ndarray, expected: str, *, source: str = "manual") -> str:
        """Save ``labels`` for ``item`` if its label is still at version ``expected``; returns the
        new version.

        Raises:
            Conflict: the label changed since ``expected`` (nothing written).
            PixelwiseError: wrong size, a value that is not a class, or an encoding that cannot
                write unlabelled pixels (a binary mask, an index mask without an ignore value).
        """
        if item.label_path is None:
            raise PixelwiseError(f"{item.name}: no mask file to write in place for this image")
        if item.label_path.suffix.lower() != ".png":
            raise PixelwiseError(f"{item.label_path}: only PNG masks can be written")
        h, w = self.size(item)
        if labels.shape != (h, w):
            raise PixelwiseError(
                f"{item.name}: labels are {labels.shape[1]}x{labels.shape[0]}, the image {w}x{h}"
            )
        raw = self.spec.mask.codec.encode(labels, self.spec)
        buf = io.BytesIO()
        Image.fromarray(raw).save(buf, format="PNG")
        data = buf.getvalue()
        new = _version(data)
        with self._locks[item.index]:
            old_data = item.label_path.read_bytes() if item.label_path.is_file() else None
            current = _version(old_data) if old_data is not None else NO_VERSION
            if current != expected:
                raise Conflict(item, expected, current)
            if new == current:
                return current
            previous = self._labels_before(item, old_data)
            if old_data is not None:  # keep the version being replaced
                kept = item.history_dir / f"{current}.png"
                if not kept.exists():
                    write_bytes_atomic(kept, old_data)
            write_bytes_atomic(item.label_path, data)
            changed = int((previous != labels).sum()) if previous is not None else int(h * w)
            entry = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "version": new,
                "replaced": current,
                "changed_pixels": changed,
                "labelled_pixels": int((labels != IGNORE_INDEX).sum()),
                "source": source,
            }
            self._append_log(item, entry)
        if not self.in_place:
            self.write_dataset()
        return new

    def write_dataset(self) -> Path | None:
        """Describe the labels saved so far as a dataset pixelwise trains on: ``<labels>/
        dataset.yaml`` (the dataset's classes and mask encoding) and a ``<split>.txt`` list per
        split (image path, tab, mask path). Images inside container files (a COCO JSON, a volume)
        are left out. Returns the YAML's path (``None`` in place: the dataset already is one)."""
        if self.in_place:
            return None
        import yaml

        root = self.labels_dir
        lists: dict[str, list[str]] = {}
        for it in self.items:
            if it.sample.index is None and self.saved(it):
                mask = it.label_path.relative_to(root).as_posix()  # type: ignore[union-attr]
                lists.setdefault(it.split, []).append(f"{it.sample.image.resolve()}\t{mask}")
        spec = self.spec
        doc = {
            "name": spec.name,
            "root": ".",
            "image_channels": spec.image_channels,
            "classes": [c.model_dump(exclude_none=True, mode="json") for c in spec.classes],
            "mask": spec.mask.as_yaml(),
            "splits": {name: {"list": f"{name}.txt"} for name in lists},
        }
        with self._dataset_lock:
            for name, lines in lists.items():
                write_bytes_atomic(
                    root / f"{name}.txt",  # type: ignore[operator]
                    ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"),
                )
            head = f"# written by pixelwise annotate: the labels saved so far of {spec.source}\n"
            text = head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
            write_bytes_atomic(root / "dataset.yaml", text.encode())  # type: ignore[operator]
        return root / "dataset.yaml"  # type: ignore[operator]

    def _labels_before(self, item: Item, old: bytes | None) -> np.ndarray | None:
        if old is not None:
            return self._decode(item.label_path)  # type: ignore[arg-type]
        if item.sample.mask is not None and item.sample.mask.exists():
            return load_pair(item.sample, self.spec)[1]
        return None

    def _append_log(self, item: Item, entry: dict[str, Any]) -> None:
        log = item.history_dir / "log.jsonl"
        before = log.read_bytes() if log.is_file() else b""
        write_bytes_atomic(log, before + (json.dumps(entry) + "\n").encode())

    def history(self, item: Item) -> list[dict[str, Any]]:
        """The saves of this image, oldest first (time, version, replaced, changed pixels, ...)."""
        log = item.history_dir / "log.jsonl"
        if not log.is_file():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]

    def version_labels(self, item: Item, version: str) -> np.ndarray:
        """The label map of an earlier (or the current) version."""
        if not (len(version) == 16 and all(c in "0123456789abcdef" for c in version)):
            raise PixelwiseError(f"{printable(version)}: not a version")
        if version == self.version(item):
            return self.labels(item)[0]
        kept = item.history_dir / f"{version}.png"
        if not kept.is_file():
            raise PixelwiseError(f"{item.name}: no version {version} in its history")
        return self._decode(kept)
