"""GeoTIFF (or plain TIFF) tiles: ``images/*.tif`` and one-band label rasters in ``masks/*.tif``.

Images are read by :func:`pixelwise.data.rasters.read_raster` (any sample type, planar or tiled,
BigTIFF; option ``bands`` picks bands GDAL-style, e.g. ``[4, 3, 2]``), masks by
:func:`~pixelwise.data.rasters.read_label_raster` (palette TIFFs give their indices), exactly as
``pixelwise predict`` reads and writes rasters. Without a YAML, classes come from the label values of
up to 100 masks, as for a plain folder (:func:`pixelwise.data.survey.gray_reading`): only 0 and 255
→ ``background`` / ``foreground``; else ``class_0..class_max`` (255 = unlabelled when other values
exist); splits ``all`` and ``train``/``val`` by a stable hash of the tile names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from ..rasters import RASTER_EXTENSIONS, read_label_raster, read_raster
from ..survey import gray_reading, survey_masks
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
    masks = images_in(root / "masks", RASTER_EXTENSIONS)
    survey = survey_masks(masks, lambda f: read_label_raster(f)[0])
    reading = gray_reading(survey.gray or {0: 1, 1: 1})
    stems = [p.stem for p in images_in(root / "images", RASTER_EXTENSIONS)]
    first = images_in(root / "images", RASTER_EXTENSIONS)[:1]
    channels = 3
    if first and read_raster(first[0], 3).bands < 3:
        channels = 1
    return {
        "name": root.name,
        "image_channels": channels,
        "classes": reading.classes,
        "mask": reading.mask,
        "splits": hashed_splits(stems, {"images": "images", "masks": "masks"}),
        "_notes": [reading.note] if reading.note else [],  # read by infer_spec only
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
