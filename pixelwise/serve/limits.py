"""Reading an upload safely: size limits while reading, and the pixel limit before decoding.

:func:`read_upload` takes the image bytes from a multipart form (field ``file``) or a raw body
(``image/*``, ``application/octet-stream``), refusing a ``Content-Length`` over the limit before
reading anything and counting the bytes as they arrive (a chunked body has no length). :func:`decode`
reads the image's size from its header (``Image.open`` without ``load``) and refuses images with
more pixels than allowed before their pixels are decoded, then decodes by the rules of
:func:`pixelwise.data.io.read_image` (EXIF orientation, RGB or grayscale, 16-bit scaled).

Every refusal is a :class:`RequestError` carrying its HTTP status and one line naming the problem.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncIterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..data.io import image_array
from ..errors import PixelwiseError

__all__ = ["MULTIPART_SLACK", "RequestError", "decode", "read_upload"]

# Bytes a multipart body may carry beyond the file itself (boundaries, part headers, small fields).
MULTIPART_SLACK = 64 * 1024


class RequestError(PixelwiseError):
    """A request the service refuses: an HTTP status and one line saying why.

    Args:
        status: the HTTP status code (400, 413, 415, 422...).
        message: what was wrong, naming the value.
        headers: extra response headers (``Retry-After``...).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _too_large(size: int | None, max_bytes: int) -> RequestError:
    what = "the upload ran past" if size is None else f"the upload is {size} bytes, over"
    return RequestError(413, f"{what} the limit of {max_bytes} bytes (--max-upload-mb)")


async def _counted(stream: AsyncIterator[bytes], cap: int, max_bytes: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > cap:
            raise _too_large(None, max_bytes)
        yield chunk


async def read_upload(request: Request, max_bytes: int) -> bytes:
    """The uploaded image's bytes: the multipart field ``file``, or the whole body.

    Raises:
        RequestError: 415 for another content type; 413 over ``max_bytes`` (the declared length,
            or the bytes counted while reading); 400 for a malformed multipart body or one
            without a ``file`` field.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = media == "multipart/form-data"
    if not (multipart or media.startswith("image/") or media in ("", "application/octet-stream")):
        raise RequestError(
            415,
            f"Content-Type {media!r} is not accepted: send the image as multipart/form-data "
            "(field 'file'), image/* or application/octet-stream",
        )
    cap = max_bytes + (MULTIPART_SLACK if multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None:
        value = declared.strip()
        if not (value.isascii() and value.isdigit()):  # "²".isdigit() is True, int("²") fails
            raise RequestError(400, f"Content-Length {declared!r} is not a number of bytes")
        if int(value) > cap:
            raise _too_large(int(value), max_bytes)
    stream = _counted(request.stream(), cap, max_bytes)
    if not multipart:
        return b"".join([chunk async for chunk in stream])
    parser = MultiPartParser(request.headers, stream, max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise RequestError(400, f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RequestError(400, "the multipart body has no file field named 'file'")
        data = await upload.read()
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise _too_large(len(data), max_bytes)
    return data


def quiet_pillow() -> None:
    """Silence Pillow's DecompressionBombWarning for the whole process (the server's choice: it
    checks ``max_pixels`` itself before decoding; Pillow's hard limit still raises). A process-wide
    filter, set once, because ``warnings.catch_warnings`` is not thread-safe and decoding runs in
    worker threads."""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode(data: bytes, *, max_pixels: int, channels: int = 3) -> np.ndarray:
    """Decode image bytes as uint8 H×W×channels, checking the size in the header first.

    Raises:
        RequestError: 400 for no bytes, a zero-size, truncated or corrupt image; 415 for bytes that
            are no image format Pillow reads; 413 for more than ``max_pixels`` pixels (before
            decoding them).
    """
    if not data:
        raise RequestError(400, "the upload is empty (0 bytes): send an image file")
    try:
        im = Image.open(io.BytesIO(data))  # Pillow's warning is silenced by quiet_pillow()
    except UnidentifiedImageError:
        raise RequestError(
            415, f"the upload ({len(data)} bytes) is not an image in a format Pillow reads"
        ) from None
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"the image has too many pixels to decode ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise RequestError(400, f"cannot read the image header ({exc})") from None
    with im:
        w, h = im.size
        if w * h > max_pixels:
            raise RequestError(
                413,
                f"the image is {w}×{h} = {w * h} pixels, over the limit of {max_pixels} "
                "(--max-pixels)",
            )
        if w == 0 or h == 0:
            raise RequestError(400, f"the image has zero size ({w}×{h})")
        try:
            im.load()
            im = ImageOps.exif_transpose(im) or im
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise RequestError(400, f"the image is truncated or corrupt ({exc})") from None
        try:
            return image_array(im, channels, where="the image")
        except (OSError, ValueError) as exc:  # PixelwiseError included
            raise RequestError(
                400, f"cannot convert the {im.mode} image to pixels ({exc})"
            ) from None
