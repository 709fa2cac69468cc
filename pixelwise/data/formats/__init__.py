"""Dataset formats: one registry that says how a dataset family lays out its files and encodes labels.

A dataset YAML names its family with ``format:`` (``folders`` when omitted); a folder without YAML is
matched against every format's ``detect`` (see :func:`detect_format`). A format contributes:

* ``defaults(root, options)``: YAML-level defaults (``classes``, ``mask``, ``splits``, ...) that the
  user's own keys override, so ``format: voc`` plus a ``root`` is a whole dataset definition;
* ``resolve(spec, name, split)``: the samples of a split, when pairing is not "image folder + mask
  folder matched by stem" (VOC list files, Cityscapes suffixes, one COCO JSON for many images, ...);
* ``read_image`` / ``read_mask``: when a sample is not one image file and one mask image (a slice of
  a NIfTI volume, polygons rendered from JSON or XML, a GeoTIFF label raster).

Format options (``options:`` in the YAML, e.g. ``{axis: 2}`` for NIfTI) are checked against the names
each format declares.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import PixelwiseError

if TYPE_CHECKING:
    from ..spec import DatasetSpec, Sample, SplitSpec

__all__ = [
    "DatasetFormat",
    "register_format",
    "get_format",
    "list_formats",
    "detect_format",
    "format_options",
    "read_sample_image",
    "read_sample_mask",
]

Resolver = Callable[["DatasetSpec", str, "SplitSpec"], tuple[list["Sample"], list[str]]]


@dataclass(frozen=True)
class DatasetFormat:
    """One dataset family.

    Attributes:
        name: the ``format:`` value in a dataset YAML.
        description: one line for ``docs`` and error messages.
        defaults: ``(root, options) -> dict`` of YAML keys the user's YAML may override.
        detect: ``(root) -> bool``: the folder looks like this format (used without YAML).
        resolve: pairs the samples of a split; ``None``: paired folders / list files.
        read_image: ``(sample, spec) -> H×W×C uint8``; ``None``: read the image file.
        read_mask: ``(sample, spec) -> raw mask`` (before :func:`decode_mask`); ``None``: read the
            mask image file.
        options: the option names this format accepts, with their defaults.
        folder_rules: ``resolve`` hands its paired-folder splits to the generic rules (lists of
            folders, ``pair``, ``image_ext`` / ``mask_ext`` then apply), as VOC's does.
    """

    name: str
    description: str
    defaults: Callable[[Path, dict[str, Any]], dict[str, Any]] | None = None
    detect: Callable[[Path], bool] | None = None
    resolve: Resolver | None = None
    read_image: Callable[[Sample, DatasetSpec], np.ndarray] | None = None
    read_mask: Callable[[Sample, DatasetSpec], np.ndarray] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    folder_rules: bool = False


_REGISTRY: dict[str, DatasetFormat] = {}


def register_format(fmt: DatasetFormat) -> DatasetFormat:
    """Add a format to the registry; a duplicate name is an error."""
    if fmt.name in _REGISTRY:
        raise ValueError(f"dataset format {fmt.name!r} is already registered")
    _REGISTRY[fmt.name] = fmt
    return fmt


def list_formats() -> list[str]:
    return sorted(_REGISTRY)


def get_format(name: str) -> DatasetFormat:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PixelwiseError(
            f"unknown dataset format {name!r}; formats: {', '.join(list_formats())}"
        ) from None


def detect_format(root: str | os.PathLike[str]) -> DatasetFormat | None:
    """The first format (in a fixed order, most specific first) whose ``detect`` accepts ``root``."""
    root = Path(root)
    if not root.is_dir():
        return None
    for name in _DETECT_ORDER:
        fmt = _REGISTRY[name]
        if fmt.detect is not None and fmt.detect(root):
            return fmt
    return None


def format_options(spec: DatasetSpec) -> dict[str, Any]:
    """The spec's format options merged over the format's defaults; unknown names are an error."""
    from ._common import merged_options

    fmt = get_format(spec.format)
    return merged_options(fmt.name, fmt.options, spec.options, str(spec.source))


def read_sample_image(sample: Sample, spec: DatasetSpec) -> np.ndarray:
    """A sample's image as H×W×C uint8, through its format's reader."""
    fmt = get_format(spec.format)
    if fmt.read_image is not None:
        return fmt.read_image(sample, spec)
    from ..io import read_image

    return read_image(sample.image, spec.image_channels)


def read_sample_mask(sample: Sample, spec: DatasetSpec) -> np.ndarray:
    """A sample's raw mask (before :func:`~pixelwise.data.spec.decode_mask`), through its format."""
    fmt = get_format(spec.format)
    if fmt.read_mask is not None:
        return fmt.read_mask(sample, spec)
    from ..io import read_mask

    if sample.mask is None:
        raise PixelwiseError(f"{sample.image}: no mask")
    if not sample.mask.exists():
        raise PixelwiseError(f"{sample.mask}: mask file not found (image {sample.image})")
    return read_mask(sample.mask, as_rgb=spec.mask.codec.reads_rgb)


from . import (  # noqa: E402  (registration on import)
    ade20k,
    cityscapes,
    coco,
    folders,
    geotiff,
    nifti,
    polygons,
    voc,
)

_DETECT_ORDER = [
    "voc",
    "cityscapes",
    "ade20k",
    "camvid",
    "coco",
    "cvat",
    "labelme",
    "nifti",
    "geotiff",
]
del ade20k, cityscapes, coco, folders, geotiff, nifti, polygons, voc
