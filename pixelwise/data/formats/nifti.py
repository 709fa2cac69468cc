"""NIfTI volumes (``.nii`` / ``.nii.gz``, read with nibabel) sliced to 2D images along one axis.

Layout (the Medical Segmentation Decathlon's)::

    imagesTr/<case>.nii.gz    labelsTr/<case>.nii.gz    [dataset.json]

Each slice along ``axis`` (option, 0, 1 or 2 of the stored array; default 2) is one sample; the slice
is the stored array's 2D section as is (rows = the first remaining axis), with no reorientation to a
radiological view. Intensities become 8-bit by a fixed window: option ``window: [low, high]``, or the
volume's own minimum and maximum (default). Labels are the integer voxel values (class = value); a
``dataset.json`` with ``labels`` names the classes, otherwise they are ``class_0..class_max`` from the
values found. Splits ``all`` and ``train``/``val`` are by case, so no case is in both.

Needs ``pip install 'pixelwise[medical]'`` (nibabel).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import PixelwiseError
from . import DatasetFormat, register_format
from ._common import hashed_splits, keep_stems, merged_options

__all__ = ["volume_stem"]

_OPTIONS: dict[str, Any] = {"axis": 2, "window": None}
_EXT = (".nii.gz", ".nii")


def volume_stem(path: Path) -> str:
    name = path.name
    for ext in _EXT:
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _nib():  # noqa: ANN202
    try:
        import nibabel
    except ImportError:
        raise PixelwiseError(
            "NIfTI volumes need nibabel: pip install 'pixelwise[medical]'"
        ) from None
    return nibabel


def _volumes(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PixelwiseError(f"{folder}: folder not found")
    return sorted(
        f for f in folder.iterdir() if f.name.endswith(_EXT) and not f.name.startswith(".")
    )


class _Cache:
    """The last few decoded volumes (a slice reader would otherwise decompress a volume per slice)."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path) -> np.ndarray:
        key = str(path)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        try:
            img = _nib().load(str(path))
            arr = np.asanyarray(img.dataobj)
        except FileNotFoundError:
            raise PixelwiseError(f"{path}: file not found") from None
        except PixelwiseError:
            raise
        except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
            raise PixelwiseError(f"{path}: not a readable NIfTI volume ({exc})") from None
        while arr.ndim > 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 3:
            raise PixelwiseError(f"{path}: expected a 3-D volume, got shape {arr.shape}")
        with self.lock:
            self.items[key] = arr
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return arr


_cache = _Cache()


def _axis(spec) -> int:  # noqa: ANN001
    opts = merged_options("nifti", _OPTIONS, spec.options, str(spec.source))
    if opts["axis"] not in (0, 1, 2):
        raise PixelwiseError(f"{spec.source}: option axis must be 0, 1 or 2, got {opts['axis']!r}")
    return int(opts["axis"])


def _slice(arr: np.ndarray, axis: int, k: int, where: str) -> np.ndarray:
    if not 0 <= k < arr.shape[axis]:
        raise PixelwiseError(f"{where}: slice {k} outside 0..{arr.shape[axis] - 1} (axis {axis})")
    return np.take(arr, k, axis=axis)


def _read_image(sample, spec) -> np.ndarray:  # noqa: ANN001
    opts = merged_options("nifti", _OPTIONS, spec.options, str(spec.source))
    vol = _cache.get(sample.image)
    section = _slice(vol, _axis(spec), sample.index, str(sample.image)).astype(np.float64)
    if opts["window"] is not None:
        try:
            lo, hi = (float(v) for v in opts["window"])
        except (TypeError, ValueError):
            raise PixelwiseError(f"{spec.source}: option window must be [low, high]") from None
    else:
        lo, hi = float(np.nanmin(vol)), float(np.nanmax(vol))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    gray = np.nan_to_num((section - lo) * scale).clip(0, 255).round().astype(np.uint8)
    if spec.image_channels == 3:
        return np.repeat(gray[..., None], 3, axis=2)
    return np.ascontiguousarray(gray[..., None])


def _read_mask(sample, spec) -> np.ndarray:  # noqa: ANN001
    vol = _cache.get(sample.mask)
    section = _slice(vol, _axis(spec), sample.index, str(sample.mask))
    if section.dtype.kind == "f":
        if not np.all(np.isfinite(section)) or not np.array_equal(section, np.round(section)):
            raise PixelwiseError(f"{sample.mask}: label volume holds non-integer values")
        section = section.astype(np.int64)
    if section.size and (section.min() < 0 or section.max() > 255):
        raise PixelwiseError(
            f"{sample.mask}: label values {section.min()}..{section.max()} outside 0..255"
        )
    return np.ascontiguousarray(section.astype(np.uint8))


def _defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    merged_options("nifti", _OPTIONS, options, str(root))
    images, labels = (
        ("imagesTr", "labelsTr") if (root / "imagesTr").is_dir() else ("images", "masks")
    )
    names: list[str] | None = None
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            table = json.loads(meta.read_text(encoding="utf-8")).get("labels", {})
            pairs = sorted((int(k), str(v)) for k, v in table.items())
            if [k for k, _ in pairs] == list(range(len(pairs))):
                names = [v for _, v in pairs]
        except (OSError, ValueError, AttributeError, json.JSONDecodeError):
            names = None
    if names is None:
        top = 0
        for f in _volumes(root / labels):
            top = max(top, int(np.max(_cache.get(f), initial=0)))
        names = [f"class_{i}" for i in range(top + 1)]
    if len(names) < 2:
        names = ["background", "foreground"]
    stems = [volume_stem(f) for f in _volumes(root / images)]
    return {
        "name": root.name,
        "image_channels": 1,
        "classes": [{"name": n} for n in names],
        "mask": {"encoding": "index"},
        "splits": hashed_splits(stems, {"images": images, "masks": labels}),
    }


def _resolve(spec, name, split):  # noqa: ANN001, ANN202
    from ..spec import Sample

    if split.images is None:
        return [], [f"split {name!r}: a NIfTI split needs 'images' (and 'masks') folders"]
    axis = _axis(spec)
    nib = _nib()
    samples, problems = [], []
    masks = {volume_stem(f): f for f in _volumes(spec.root / split.masks)} if split.masks else {}
    for vol in _volumes(spec.root / split.images):
        stem = volume_stem(vol)
        mask = None
        if split.masks is not None:
            # nnU-Net names channel files <case>_0000.nii.gz; its labels are <case>.nii.gz
            mask = masks.get(stem + split.mask_suffix) or masks.get(stem.removesuffix("_0000"))
            if mask is None:
                problems.append(
                    f"{vol}: no label volume {stem}.nii(.gz) in {spec.root / split.masks}"
                )
                continue
        try:
            shape = nib.load(str(vol)).shape
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{vol}: not a readable NIfTI volume ({exc})")
            continue
        if len(shape) < 3:
            problems.append(f"{vol}: expected a 3-D volume, got shape {shape}")
            continue
        samples.extend(Sample(vol, mask, index=k) for k in range(shape[axis]))
    return keep_stems(samples, split, name, problems, stem=lambda s: volume_stem(s.image)), problems


def _detect(root: Path) -> bool:
    for d in (root / "imagesTr", root / "images"):
        if d.is_dir() and any(f.name.endswith(_EXT) for f in d.iterdir()):
            return True
    return False


register_format(
    DatasetFormat(
        name="nifti",
        description="NIfTI volumes (imagesTr/ + labelsTr/) sliced to 2D along an axis",
        defaults=_defaults,
        detect=_detect,
        resolve=_resolve,
        read_image=_read_image,
        read_mask=_read_mask,
        options=dict(_OPTIONS),
    )
)
