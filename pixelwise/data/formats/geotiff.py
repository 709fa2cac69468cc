"""GeoTIFF (or plain TIFF) tiles: ``images/*.tif`` and one-band label rasters in ``masks/*.tif``.

Images are read by :func:`pixelwise.data.rasters.read_raster` (any sample type, planar or tiled,
BigTIFF; option ``bands`` picks bands GDAL-style, e.g. ``[4, 3, 2]``), masks by
:func:`~pixelwise.data.rasters.read_label_raster` (palette TIFFs give their indices), exactly as
``pixelwise predict`` reads and writes rasters. Without a YAML, classes are ``class_0..class_max`` of
the label values found (255 = unlabelled when other values exist) and the splits ``all`` and
``train``/``val`` by a stable hash of the tile names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..rasters import RASTER_EXTENSIONS, read_label_raster, read_raster
from . import DatasetFormat, register_format
from ._common import hashed_splits, images_in, merged_options

__all__: list[str] = []

_OPTIONS: dict[str, Any] = {"bands": None}


def _read_image(sample, spec) -> np.ndarray:  # noqa: ANN001
    opts = merged_options("geotiff", _OPTIONS, spec.options, str(spec.source))
    return read_raster(sample.image, spec.image_channels, bands=opts["bands"]).image


def _read_mask(sample, spec) -> np.ndarray:  # noqa: ANN001
    from ...errors import PixelwiseError

    if sample.mask is None or not sample.mask.exists():
        raise PixelwiseError(f"{sample.mask}: mask file not found (image {sample.image})")
    return read_label_raster(sample.mask)[0]


def _defaults(root: Path, options: dict[str, Any]) -> dict[str, Any]:
    merged_options("geotiff", _OPTIONS, options, str(root))
    values: set[int] = set()
    for f in images_in(root / "masks", RASTER_EXTENSIONS):
        values.update(np.unique(read_label_raster(f)[0]).tolist())
    ignore = 255 if 255 in values and len(values) > 1 else None
    top = max([v for v in values if v != ignore] or [1])
    stems = [p.stem for p in images_in(root / "images", RASTER_EXTENSIONS)]
    first = images_in(root / "images", RASTER_EXTENSIONS)[:1]
    channels = 3
    if first and read_raster(first[0], 3).bands < 3:
        channels = 1
    return {
        "name": root.name,
        "image_channels": channels,
        "classes": [{"name": f"class_{i}"} for i in range(top + 1)],
        "mask": {"encoding": "index", "ignore_index": ignore},
        "splits": hashed_splits(stems, {"images": "images", "masks": "masks"}),
    }


def _detect(root: Path) -> bool:
    if not ((root / "images").is_dir() and (root / "masks").is_dir()):
        return False
    files = [f for f in (root / "images").iterdir() if f.is_file()]
    masks = sorted(f for f in (root / "masks").iterdir() if f.is_file())
    if not files or not masks:
        return False
    if not all(f.suffix.lower() in RASTER_EXTENSIONS for f in [*files, *masks]):
        return False
    try:  # one-band label rasters; colour TIFF masks stay with the generic folder rules
        with tifffile.TiffFile(masks[0]) as tif:
            return tif.pages[0].samplesperpixel == 1
    except Exception:  # noqa: BLE001 - not a readable TIFF: not this format
        return False


register_format(
    DatasetFormat(
        name="geotiff",
        description="GeoTIFF / TIFF tiles: images/*.tif + one-band label rasters masks/*.tif",
        defaults=_defaults,
        detect=_detect,
        read_image=_read_image,
        read_mask=_read_mask,
        options=dict(_OPTIONS),
    )
)
