"""Reading images and masks with explicit conversions, and writing outputs atomically.

Images: EXIF orientation is applied; grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit images
are converted explicitly to 8-bit RGB (or 8-bit grayscale when one channel is asked for). 16-bit images
are scaled by 255/65535. Empty, truncated or unreadable files, decompression bombs and symbolic-link
loops raise :class:`PixelwiseError` naming the file (docs/reliability.md).
TIFFs (including BigTIFF, planar, multi-band and float) go through :func:`pixelwise.data.rasters.read_raster`,
so training and prediction convert them by the same rules.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .._atomic import atomic_path
from ..errors import PixelwiseError

__all__ = [
    "IMAGE_EXTENSIONS",
    "image_array",
    "read_image",
    "read_mask",
    "image_size",
    "write_png",
    "to_uint8",
]

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".gif",
    ".ppm",
    ".pgm",
)


def _open(path: str | os.PathLike[str]) -> Image.Image:
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise PixelwiseError(f"{p}: empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                return ImageOps.exif_transpose(im) or im
    except FileNotFoundError:
        raise PixelwiseError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise PixelwiseError(f"{p}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise PixelwiseError(f"{p}: not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PixelwiseError(f"{p}: image too large to decode safely ({exc})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PixelwiseError(f"{p}: symbolic link loop, not an image") from None
        raise PixelwiseError(f"{p}: cannot decode image ({exc})") from None
    except (SyntaxError, ValueError) as exc:
        raise PixelwiseError(f"{p}: cannot decode image ({exc})") from None


# 16-bit value → 8 bits, rounded to nearest: round(v · 255/65535) = round(v / 257) = (v + 128) // 257
# (v / 257 is never half-way between integers, so no tie-breaking rule is involved).
_SCALE16 = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8 (wider integers by 255/65535 whatever their content,
    floats clipped to 0..255).

    No float64 scratch: a wider integer array is clipped to 0..65535 and looked up in a 65,536-entry
    table (16-bit arrays index it directly, with no temporary); a float array is clipped and rounded
    in one float32 working copy (float64 for float64 input). The results are those of scaling in
    float64 and rounding half to even, bit for bit.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.itemsize == 1:  # int8: scaled by 255/255, negatives clipped to 0
            return np.maximum(arr, 0).astype(np.uint8)
        if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
            return _SCALE16[arr]
        return _SCALE16[np.clip(arr, 0, min(65535, np.iinfo(arr.dtype).max))]
    if np.issubdtype(arr.dtype, np.floating):
        work = arr.astype(np.float32 if arr.dtype.itemsize <= 4 else arr.dtype)  # a copy
        np.fmax(work, 0, out=work)  # NaN → 0 (fmax and fmin pass over NaN), -inf → 0
        np.fmin(work, 255, out=work)  # +inf → 255
        return np.rint(work, out=work).astype(np.uint8)  # rint: half to even, as round
    return np.nan_to_num(arr.astype(np.float64)).clip(0, 255).round().astype(np.uint8)


def read_image(path: str | os.PathLike[str], channels: int = 3) -> np.ndarray:
    """Read an image as uint8 H×W×channels (channels 3 = RGB, 1 = grayscale).

    Raises:
        PixelwiseError: the file is missing, unreadable, truncated or too large.
    """
    # imported here: rasters imports this module
    from .rasters import CodecUnavailableError, is_raster_path, read_raster

    if is_raster_path(path):
        try:
            return read_raster(path, channels).image
        except CodecUnavailableError:
            pass  # without imagecodecs, Pillow's libtiff still decodes JPEG and LZW TIFFs
    return image_array(_open(path), channels, where=str(path))


def image_array(im: Image.Image, channels: int = 3, *, where: str = "image") -> np.ndarray:
    """A decoded Pillow image as uint8 H×W×channels by :func:`read_image`'s conversions (16-bit and
    float scaled, palette/RGBA/CMYK to RGB or grayscale); ``where`` names it in errors. The caller
    applies the EXIF orientation (``ImageOps.exif_transpose``) first, as :func:`read_image` does.

    Raises:
        PixelwiseError: the image has zero width or height.
    """
    if im.width == 0 or im.height == 0:
        raise PixelwiseError(f"{where}: image has zero size")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = to_uint8(np.asarray(im))
        arr = gray[..., None] if channels == 1 else np.repeat(gray[..., None], 3, axis=2)
        return np.ascontiguousarray(arr)
    target = "L" if channels == 1 else "RGB"
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != target:
        im = im.convert(target)
    arr = np.asarray(im)
    if channels == 1:
        arr = arr[..., None]
    return np.ascontiguousarray(arr)


def read_mask(path: str | os.PathLike[str], *, as_rgb: bool = False) -> np.ndarray:
    """Read a mask's raw values: H×W for index/palette/grayscale masks, H×W×3 for colour masks.

    Palette PNGs give their palette indices (the VOC convention), not their colours, unless
    ``as_rgb`` is set (colour-coded datasets), which gives every mask as H×W×3 colours.
    """
    im = _open(path)
    if as_rgb:
        return np.asarray(im.convert("RGB"))
    if im.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I;16N", "I"):
        return np.asarray(im)
    if im.mode == "1":
        return np.asarray(im).astype(np.uint8) * 255
    if im.mode == "LA":
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) after EXIF orientation, read from the header where possible."""
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112, 1)
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise PixelwiseError(f"{path}: cannot read image header ({exc})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def write_png(path: str | os.PathLike[str], image: Image.Image | np.ndarray) -> None:
    """Write a PNG atomically (temporary file, then rename)."""
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
