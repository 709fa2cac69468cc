"""Large-image formats for prediction: TIFF, BigTIFF and GeoTIFF in, georeferenced label maps out.

Aerial orthophotos and slide scans come as (Big)TIFF, often GeoTIFF. :func:`read_raster` decodes the
first page of the first series (the full-resolution level of a pyramid, the page GDAL calls band 1..n)
with ``tifffile`` and converts it to 8-bit RGB or grey by fixed, documented rules; when the file is a
GeoTIFF and ``rasterio`` is installed (``pip install 'pixelwise[geo]'``) it also returns the CRS and
affine transform, so that :func:`write_label_raster` can write a mask that lines up with its source.

Conversion rules (the same for every TIFF, so training and prediction see the same pixels):

* integers: ``pixelwise.data.io.to_uint8``; 8-bit as is, wider integers scaled by 255/65535 and
  rounded (16-bit full scale), negative values to 0; bilevel images to 0/255;
* floats: when every finite value lies in [0, 1] they are multiplied by 255, otherwise they are taken
  as 8-bit levels; then NaN becomes 0 and values are clipped to 0..255 and rounded;
* bands: RGB is bands 1, 2, 3 (the first three; a 4th band such as alpha is dropped); a one- or
  two-band image is grey (band 1); ``bands`` (1-based, as in GDAL) picks others; palette images
  go through their colour map and CMYK images are converted as Pillow does;
* grey from three bands is Pillow's ITU-R 601 luminance ``(19595 R + 38470 G + 7471 B + 2**15) >> 16``;
* the TIFF Orientation tag is applied like EXIF orientation for plain TIFFs, never for GeoTIFFs
  (or TIFFs with a world file), whose pixel grid is the one the transform describes, as GDAL's.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import tifffile
from tifffile import COMPRESSION, PHOTOMETRIC, TIFF

from .._atomic import atomic_path
from ..errors import PixelwiseError
from .io import to_uint8

__all__ = [
    "RASTER_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "CodecUnavailableError",
    "GeoRef",
    "Raster",
    "is_raster_path",
    "read_raster",
    "read_label_raster",
    "write_label_raster",
]

RASTER_EXTENSIONS = (".tif", ".tiff", ".gtif", ".gtiff")
DEFAULT_MAX_PIXELS = 1 << 31  # about 2.1 gigapixels (46,340²): 6.4 GB as 8-bit RGB in memory
_GEO_HINT = "pip install 'pixelwise[geo]'"
_GEO_TAGS = (
    33550,
    33922,
    34264,
    34735,
)  # ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeys
_WORLD_FILES = (".tfw", ".tifw", ".tiffw", ".wld")
_BIGTIFF_BYTES = 1 << 31  # label maps above 2 GiB uncompressed are written as BigTIFF
_BLOCK_ELEMENTS = 1 << 22  # elements converted at a time, to bound the float64 scratch memory
_TILE = 256
_COMPRESSION = {
    "deflate": "zlib",
    "lzw": "lzw",
    "zstd": "zstd",
    "packbits": "packbits",
    "none": None,
}

_log = logging.getLogger(__name__)
_warned_no_rasterio = False


class CodecUnavailableError(PixelwiseError):
    """The TIFF's compression needs a codec that is not installed (``imagecodecs``)."""


@dataclass(frozen=True)
class GeoRef:
    """Where a raster lies on the ground: enough for rasterio to write a raster that lines up.

    Attributes:
        crs: The coordinate reference system as WKT, or None for a transform without a CRS.
        transform: The affine transform in rasterio's ``Affine`` order ``(a, b, c, d, e, f)``:
            ``x = a·col + b·row + c``, ``y = d·col + e·row + f`` (not GDAL's ``GetGeoTransform``
            order ``(c, a, b, f, d, e)``).
        width: Raster width in pixels.
        height: Raster height in pixels.
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    def __post_init__(self) -> None:
        msg = _georef_problem(self.crs, self.transform, self.width, self.height)
        if msg:
            raise PixelwiseError(f"georeference: {msg}")
        object.__setattr__(self, "transform", tuple(float(v) for v in self.transform))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"crs", "transform" (6 numbers), "width", "height"}``."""
        return {
            "crs": self.crs,
            "transform": list(self.transform),
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "georeference") -> GeoRef:
        """Rebuild from :meth:`to_dict`'s output; ``source`` names the file in error messages.

        Raises:
            PixelwiseError: a key is missing or a value has the wrong type or size.
        """
        if not isinstance(data, Mapping):
            raise PixelwiseError(
                f"{source}: georeference must be a mapping, got {type(data).__name__}"
            )
        missing = [k for k in ("crs", "transform", "width", "height") if k not in data]
        if missing:
            raise PixelwiseError(f"{source}: georeference lacks {', '.join(missing)}")
        transform = data["transform"]
        msg = _georef_problem(data["crs"], transform, data["width"], data["height"])
        if msg:
            raise PixelwiseError(f"{source}: {msg}")
        return cls(data["crs"], tuple(transform), data["width"], data["height"])


@dataclass
class Raster:
    """A decoded raster.

    Attributes:
        image: H×W×C uint8, C the channels asked for (3 = RGB, 1 = grey).
        georef: CRS and transform when the file is a GeoTIFF and rasterio is installed, else None.
        source_dtype: The stored sample type (``"uint8"``, ``"uint16"``, ``"float32"``, ``"bool"``, ...).
        bands: The number of bands (samples per pixel) in the file.
    """

    image: np.ndarray
    georef: GeoRef | None
    source_dtype: str
    bands: int


@dataclass(frozen=True)
class _Page:
    data: np.ndarray  # H×W×S in the stored dtype
    photometric: int
    colormap: np.ndarray | None
    orientation: int
    geotagged: bool
    dtype: str


def _georef_problem(crs: Any, transform: Any, width: Any, height: Any) -> str | None:
    if crs is not None and not isinstance(crs, str):
        return f"crs must be a WKT string or null, got {type(crs).__name__}"
    try:
        values = [float(v) for v in transform]
    except (TypeError, ValueError):
        return f"transform must be 6 numbers, got {transform!r}"
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        return f"transform must be 6 finite numbers, got {transform!r}"
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            return f"{name} must be a positive integer, got {value!r}"
    return None


def _import_rasterio() -> ModuleType | None:
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


def _warn_georef_lost(path: Path) -> None:
    global _warned_no_rasterio
    if not _warned_no_rasterio:
        _warned_no_rasterio = True
        _log.warning(
            "%s is georeferenced but rasterio is not installed: its georeference (CRS and transform) is "
            "ignored, so masks written from it will not line up on a map; %s to keep it "
            "(said once)",
            path,
            _GEO_HINT,
        )


def _codec_available(compression: int) -> bool:
    return compression in TIFF.DECOMPRESSORS


def _compression_name(compression: int) -> str:
    try:
        return COMPRESSION(compression).name
    except ValueError:
        return str(compression)


def _read_page(path: Path, max_pixels: int) -> _Page:
    """Decode page 0 of series 0 after checking its size, codec and data extent."""
    try:
        tif = tifffile.TiffFile(path)
    except FileNotFoundError:
        raise PixelwiseError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PixelwiseError(f"{path}: is a directory, not a TIFF") from None
    except tifffile.TiffFileError as exc:
        raise PixelwiseError(f"{path}: not a readable TIFF ({exc})") from None
    except OSError as exc:
        raise PixelwiseError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with tif:
        try:
            page = tif.series[0].keyframe if tif.series else tif.pages.first
        except Exception as exc:  # any failure to parse a corrupt file is the file's fault
            raise PixelwiseError(f"{path}: corrupt TIFF structure ({exc})") from None
        height, width = int(page.imagelength), int(page.imagewidth)
        if height == 0 or width == 0:
            raise PixelwiseError(f"{path}: image has zero size ({width}×{height})")
        if height * width > max_pixels:
            raise PixelwiseError(
                f"{path}: {width}×{height} = {height * width:,} pixels exceeds the limit of "
                f"{max_pixels:,} (pass a larger max_pixels if the memory allows)"
            )
        if page.imagedepth > 1:
            raise PixelwiseError(
                f"{path}: volumetric TIFF pages (depth {page.imagedepth}) are not supported"
            )
        if not _codec_available(page.compression):
            raise CodecUnavailableError(
                f"{path}: {_compression_name(page.compression)} compression needs the imagecodecs "
                "package (pip install imagecodecs)"
            )
        size = tif.filehandle.size
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            if count and offset + count > size:
                raise PixelwiseError(
                    f"{path}: truncated TIFF (image data ends past the file's {size:,} bytes)"
                )
        try:
            data = page.asarray()
        except MemoryError:
            raise PixelwiseError(
                f"{path}: not enough memory to decode {width}×{height} pixels"
            ) from None
        except Exception as exc:  # codecs raise anything (zlib.error, ValueError, ...)
            raise PixelwiseError(
                f"{path}: cannot decode TIFF ({type(exc).__name__}: {exc})"
            ) from None
        tags = page.tags
        orientation = tags.valueof(274, 1)  # Orientation
        geotagged = any(code in tags for code in _GEO_TAGS)
        axes = page.axes
        photometric = int(page.photometric)
        colormap = page.colormap if photometric == PHOTOMETRIC.PALETTE else None
    if data.dtype.kind not in "biuf":
        raise PixelwiseError(f"{path}: unsupported sample type {data.dtype}")
    if axes == "YX":
        data = data[..., None]
    elif axes == "SYX":
        data = np.moveaxis(data, 0, -1)
    elif axes != "YXS":
        raise PixelwiseError(f"{path}: unsupported TIFF layout {axes!r} (expected YX, YXS or SYX)")
    return _Page(
        data=data,
        photometric=photometric,
        colormap=colormap,
        orientation=orientation if isinstance(orientation, int) else 1,
        geotagged=geotagged,
        dtype=str(data.dtype),
    )


def _georeferenced(path: Path, page: _Page) -> bool:
    """Whether GDAL may see a georeference: GeoTIFF tags, or a world file or .aux.xml beside it."""
    return page.geotagged or any(
        p.exists()
        for p in [path.with_suffix(ext) for ext in _WORLD_FILES] + [Path(f"{path}.aux.xml")]
    )


def _read_georef(path: Path, shape: tuple[int, int]) -> GeoRef | None:
    """CRS and transform through rasterio (called only for files that may have them)."""
    rasterio = _import_rasterio()
    if rasterio is None:
        _warn_georef_lost(path)
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                crs, transform, size = ds.crs, ds.transform, (ds.height, ds.width)
                gcps = ds.gcps[0]
    except rasterio.errors.RasterioError as exc:
        _log.warning("%s: rasterio cannot read the georeference (%s); it is ignored", path, exc)
        return None
    if size != shape:
        _log.warning(
            "%s: rasterio sees %s pixels, tifffile %s; the georeference is ignored",
            path,
            size,
            shape,
        )
        return None
    if transform.is_identity and gcps:
        _log.warning(
            "%s: georeferenced by ground control points, which pixelwise does not keep", path
        )
        return None
    if transform.is_identity and crs is None:
        return None
    t = (transform.a, transform.b, transform.c, transform.d, transform.e, transform.f)
    return GeoRef(crs=crs.to_wkt() if crs else None, transform=t, width=size[1], height=size[0])


def _row_blocks(arr: np.ndarray) -> Iterator[slice]:
    per_row = max(1, arr[0].size)
    step = max(1, _BLOCK_ELEMENTS // per_row)
    for start in range(0, arr.shape[0], step):
        yield slice(start, start + step)


def _convert(arr: np.ndarray) -> np.ndarray:
    """Any H×W×K samples to uint8 by the module's rules, a block of rows at a time."""
    if arr.dtype == np.uint8:
        return arr
    scale = 1.0
    if arr.dtype.kind == "f":
        lo, hi = math.inf, -math.inf
        for rows in _row_blocks(arr):
            finite = arr[rows][np.isfinite(arr[rows])]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        scale = 255.0 if 0.0 <= lo and hi <= 1.0 else 1.0
    out = np.empty(arr.shape, np.uint8)
    for rows in _row_blocks(arr):
        block = arr[rows]
        out[rows] = to_uint8(block * scale if scale != 1.0 else block)
    return out


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Pillow's ``convert("L")``: ITU-R 601-2 luma in 16-bit fixed point, H×W×3 → H×W×1."""
    out = np.empty(rgb.shape[:2] + (1,), np.uint8)
    for rows in _row_blocks(rgb):
        c = rgb[rows].astype(np.uint32)
        out[rows, :, 0] = (c[..., 0] * 19595 + c[..., 1] * 38470 + c[..., 2] * 7471 + 0x8000) >> 16
    return out


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Pillow's CMYK → RGB: ``(255 - K) - C·(255 - K)/255`` per channel, rounded as Pillow does."""
    out = np.empty(cmyk.shape[:2] + (3,), np.uint8)
    for rows in _row_blocks(cmyk):
        c = cmyk[rows].astype(np.int32)
        nk = 255 - c[..., 3:4]
        tmp = c[..., :3] * nk + 128
        out[rows] = np.clip(nk - (((tmp >> 8) + tmp) >> 8), 0, 255)
    return out


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply a TIFF/EXIF Orientation value (1–8) the way Pillow's ``exif_transpose`` does."""
    if orientation == 2:
        return arr[:, ::-1]
    if orientation == 3:
        return arr[::-1, ::-1]
    if orientation == 4:
        return arr[::-1]
    if orientation == 5:
        return arr.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(arr, -1)
    if orientation == 7:
        return arr[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(arr, 1)
    return arr


def _select_bands(path: Path, count: int, bands: Sequence[int] | None) -> list[int]:
    if bands is None:
        return [0, 1, 2] if count >= 3 else [0]
    picked = list(bands)
    if len(picked) not in (1, 3):
        raise PixelwiseError(f"{path}: bands must name 1 or 3 bands, got {picked}")
    for b in picked:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 1 <= b <= count:
            raise PixelwiseError(
                f"{path}: band {b!r} does not exist (the file has bands 1..{count})"
            )
    return [int(b) - 1 for b in picked]


def is_raster_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a TIFF by its extension (``.tif``, ``.tiff``, ``.gtif``, ``.gtiff``)."""
    return Path(path).suffix.lower() in RASTER_EXTENSIONS


def read_raster(
    path: str | os.PathLike[str],
    channels: int = 3,
    *,
    bands: Sequence[int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Raster:
    """Read a TIFF, BigTIFF or GeoTIFF as 8-bit RGB or grey, with its georeference.

    Reads page 0 of series 0 (the full-resolution image; other pages of a stack are ignored),
    interleaved or planar, in any integer or float sample type; the module docstring gives the
    conversion rules. With ``channels=3``: bands 1, 2, 3 as RGB, or band 1 repeated for one- and
    two-band images; palette images are coloured by their colour map and CMYK converted to RGB.
    With ``channels=1``: band 1 of one- and two-band images, else the luminance of bands 1–3.

    Args:
        path: The TIFF file (read by content; the extension is not checked).
        channels: 3 for RGB, 1 for grey.
        bands: 1-based band numbers (GDAL style) to use instead of the defaults: one band (grey,
            repeated for RGB) or three (RGB, luminance for grey), e.g. ``[4, 3, 2]``.
        max_pixels: Refuse images with more pixels than this (before decoding anything).

    Returns:
        The image (H×W×channels uint8), georeference, stored sample type and band count.

    Raises:
        PixelwiseError: the file is missing, not a TIFF, truncated or corrupt, of zero size, larger
            than ``max_pixels``, or ``bands`` names a band the file lacks.
        CodecUnavailableError: the compression (e.g. JPEG, LZW) needs ``imagecodecs``.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise PixelwiseError(f"{path}: channels must be 1 or 3, got {channels!r}")
    page = _read_page(path, max_pixels)
    data, count = page.data, page.data.shape[-1]
    if page.colormap is not None and bands is None:
        lut = (np.asarray(page.colormap).T // 256).astype(
            np.uint8
        )  # 16-bit entries, as Pillow reads them
        index = data[..., 0]
        rgb = lut[index.view(np.uint8) if index.dtype == bool else index]
    elif page.photometric == PHOTOMETRIC.SEPARATED and count >= 4 and bands is None:
        rgb = _cmyk_to_rgb(_convert(data[..., :4]))
    else:
        picked = _select_bands(path, count, bands)
        rgb = _convert(data[..., picked] if picked != list(range(count)) else data)
        if page.photometric == PHOTOMETRIC.MINISWHITE:
            np.subtract(255, rgb, out=rgb)
    if channels == 3 and rgb.shape[-1] == 1:
        image = np.repeat(rgb, 3, axis=2)
    elif channels == 1 and rgb.shape[-1] == 3:
        image = _luminance(rgb)
    else:
        image = rgb
    georef = None
    if _georeferenced(path, page):  # keep GDAL's pixel grid, which the transform describes
        georef = _read_georef(path, page.data.shape[:2])
    else:
        image = _orient(image, page.orientation)
    return Raster(np.ascontiguousarray(image), georef, page.dtype, count)


def read_label_raster(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, GeoRef | None]:
    """Read a one-band label map (as :func:`write_label_raster` writes it) and its georeference.

    Palette TIFFs give their indices, not their colours.

    Returns:
        The labels (H×W uint8) and the georeference (None for a plain TIFF or without rasterio).

    Raises:
        PixelwiseError: the file is unreadable (as in :func:`read_raster`), has more than one band,
            is not of integer type, or holds a value outside 0..255.
    """
    path = Path(path)
    page = _read_page(path, max_pixels)
    data = page.data
    if data.shape[-1] != 1:
        raise PixelwiseError(f"{path}: a label map has one band, this file has {data.shape[-1]}")
    if data.dtype.kind not in "biu":
        raise PixelwiseError(f"{path}: labels must be integers, the file stores {data.dtype}")
    labels = data[..., 0]
    if labels.dtype != np.uint8:
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 255):
            raise PixelwiseError(
                f"{path}: label values outside 0..255 ({labels.min()}..{labels.max()})"
            )
        labels = labels.astype(np.uint8)
    georef = None
    if _georeferenced(path, page):
        georef = _read_georef(path, data.shape[:2])
    else:
        labels = _orient(labels, page.orientation)
    return np.ascontiguousarray(labels), georef


def _check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2 or 0 in labels.shape:
        raise PixelwiseError(
            f"{path}: labels must be a non-empty H×W array, got shape {labels.shape}"
        )
    if labels.dtype.kind not in "biu":
        raise PixelwiseError(f"{path}: labels must be integers, got {labels.dtype}")
    if labels.dtype != np.uint8:
        if int(labels.min()) < 0 or int(labels.max()) > 255:
            raise PixelwiseError(
                f"{path}: label values must lie in 0..255, got {labels.min()}..{labels.max()}"
            )
        labels = labels.astype(np.uint8)
    return np.ascontiguousarray(labels)


def _check_colors(path: Path, colors: Sequence[Sequence[int]]) -> np.ndarray:
    table = np.asarray(colors)
    if table.ndim != 2 or table.shape[1] != 3 or not 1 <= len(table) <= 256:
        raise PixelwiseError(
            f"{path}: colors must be 1 to 256 [r, g, b] triples, got shape {table.shape}"
        )
    if table.dtype.kind not in "iu" or table.min() < 0 or table.max() > 255:
        raise PixelwiseError(f"{path}: colours must be integers in 0..255")
    return table.astype(np.uint8)


def _write_tiff(
    tmp: Path, labels: np.ndarray, table: np.ndarray | None, compression: str | None
) -> None:
    colormap = None
    if table is not None:
        colormap = np.zeros((3, 256), np.uint16)
        colormap[:, : len(table)] = table.T.astype(np.uint16) * 257
    tile = (_TILE, _TILE) if min(labels.shape) >= _TILE else None
    tifffile.imwrite(
        tmp,
        labels,
        bigtiff=labels.nbytes > _BIGTIFF_BYTES,
        photometric="palette" if colormap is not None else "minisblack",
        colormap=colormap,
        compression=compression,
        tile=tile,
        metadata=None,
    )


def _write_geotiff(
    tmp: Path, labels: np.ndarray, table: np.ndarray | None, georef: GeoRef, compress: str
) -> None:
    import rasterio
    from rasterio.transform import Affine

    options: dict[str, Any] = {
        "tiled": True,
        "blockxsize": _TILE,
        "blockysize": _TILE,
        "BIGTIFF": "YES" if labels.nbytes > _BIGTIFF_BYTES else "IF_SAFER",
    }
    if compress != "none":
        options["compress"] = compress
    if table is not None:
        options["photometric"] = "palette"
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):  # no .aux.xml beside the temporary file
        with rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            width=labels.shape[1],
            height=labels.shape[0],
            count=1,
            dtype="uint8",
            crs=georef.crs,
            transform=Affine(*georef.transform),
            **options,
        ) as ds:
            ds.write(labels, 1)
            if table is not None:
                ds.write_colormap(1, {i: tuple(int(v) for v in rgb) for i, rgb in enumerate(table)})


def write_label_raster(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    colors: Sequence[Sequence[int]] | None = None,
    georef: GeoRef | None = None,
    *,
    compress: str = "deflate",
) -> None:
    """Write a label map as a one-band 8-bit TIFF, atomically; a GeoTIFF when ``georef`` is given.

    With ``georef`` the file is a tiled GeoTIFF written by rasterio with the same CRS, transform and
    size as the source, so the mask lines up with it on a map. Without, it is a TIFF written by
    tifffile (tiled when both sides are at least 256 pixels). With ``colors`` the file is a palette
    TIFF whose colour map gives class ``i`` the colour ``colors[i]`` (unlisted indices are black).
    Files whose labels exceed 2 GiB are written as BigTIFF.

    Args:
        path: Destination; written to a temporary file beside it, then renamed.
        labels: H×W class indices (uint8, or integers within 0..255).
        colors: Up to 256 ``[r, g, b]`` colours, one per class.
        georef: The source raster's georeference, from :func:`read_raster`.
        compress: ``"deflate"``, ``"lzw"``, ``"zstd"``, ``"packbits"`` or ``"none"`` (without
            georef, all but deflate and none need the imagecodecs package).

    Raises:
        PixelwiseError: bad labels or colours, a georeference of another size than the labels, a
            georeference without rasterio installed, or an unknown compression.
    """
    path = Path(path)
    labels = _check_labels(path, labels)
    table = _check_colors(path, colors) if colors is not None else None
    if compress not in _COMPRESSION:
        raise PixelwiseError(
            f"{path}: unknown compression {compress!r} (use one of {', '.join(_COMPRESSION)})"
        )
    if georef is not None:
        if (georef.height, georef.width) != labels.shape:
            raise PixelwiseError(
                f"{path}: labels are {labels.shape[1]}×{labels.shape[0]} but the georeference is "
                f"{georef.width}×{georef.height}; the mask would not line up with its source"
            )
        if _import_rasterio() is None:  # checked before a temporary file exists
            raise PixelwiseError(
                f"{path}: writing a georeferenced mask needs rasterio ({_GEO_HINT})"
            )
    elif (
        compress not in ("deflate", "none")
        and COMPRESSION[compress.upper()] not in TIFF.COMPRESSORS
    ):
        raise CodecUnavailableError(
            f"{path}: {compress} compression needs the imagecodecs package (pip install imagecodecs)"
        )
    with atomic_path(path) as tmp:
        if georef is not None:
            _write_geotiff(tmp, labels, table, georef, compress)
        else:
            _write_tiff(tmp, labels, table, _COMPRESSION[compress])
