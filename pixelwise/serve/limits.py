"""Reading an upload safely: size limits while reading, shared memory budgets, and the pixel limit
before decoding.

:func:`read_upload` takes the image bytes from a multipart form (field ``file``) or a raw body
(``image/*``, ``application/octet-stream``), refusing a ``Content-Length`` over the limit before
reading anything and counting the bytes as they arrive (a chunked body has no length); the bytes
held are charged to the service's upload budget as they arrive (:class:`MemoryBudget`,
:class:`Hold`), and :class:`PerClient` caps the uploads read at once from one address (the others
wait). :func:`decode_cost` reads the image's size from its header (``Image.open`` without ``load``),
refuses images with more pixels than allowed, and estimates the memory decoding takes, which the
service reserves from its decode budget (:meth:`MemoryBudget.take`, waiting its turn) before
:func:`decode` decodes by the rules of :func:`pixelwise.data.io.read_image` (EXIF orientation, RGB
or grayscale, 16-bit scaled).

Every refusal is a :class:`RequestError` carrying its HTTP status and one line naming the problem.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ..data.io import image_array
from ..errors import PixelwiseError, first_line
from .settings import MULTIPART_SLACK

__all__ = [
    "MULTIPART_SLACK",
    "Hold",
    "MemoryBudget",
    "PerClient",
    "RequestError",
    "decode",
    "decode_cost",
    "read_upload",
]

# Bytes per pixel of Pillow's own buffer for a mode: 1 for 1/L/P, 2 for 16-bit, else 4 (32-bit
# integer and float, and every multi-band mode, which Pillow stores as 4 bytes a pixel).
_NARROW_MODES = frozenset({"1", "L", "P"})
_WORD_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
_WIDE_SINGLE = _WORD_MODES | {"I", "F"}  # scaled to 8 bits by to_uint8, one uint8 plane more


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


class MemoryBudget:
    """Bytes that concurrent requests share, on one event loop (not thread-safe: call it from the
    loop only). :meth:`try_take` takes at once or not at all; :meth:`take` waits its turn, first
    come first served, so a large request is not starved by small ones.

    Args:
        total: the bytes to share.
        flag: the setting that sets it, named in refusals (``--upload-memory-mb``...).
    """

    def __init__(self, total: int, flag: str):
        self.total = total
        self.flag = flag
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def try_take(self, n: int) -> bool:
        """Take ``n`` bytes if they fit now and nobody waits; whether it did."""
        if self._waiters or self.used + n > self.total:
            return False
        self.used += n
        return True

    async def take(self, n: int) -> int:
        """Take ``n`` bytes, waiting until they fit (cancel it to stop waiting: nothing is then
        held). More than :attr:`total` waits until nothing else is held and takes it all.

        Returns:
            The bytes taken, to :meth:`give` back.
        """
        n = min(n, self.total)
        if self.try_take(n):
            return n
        future = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.give(n)  # granted just as it was cancelled
            else:
                if entry in self._waiters:  # (a give() may have dropped it, cancelled, already)
                    self._waiters.remove(entry)
                self._wake()
            raise
        return n

    @property
    def waiting(self) -> int:
        """Requests waiting in :meth:`take`."""
        return len(self._waiters)

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken before, and wake the waiters they make room for."""
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.total:
            n, future = self._waiters.popleft()
            if not future.done():
                self.used += n
                future.set_result(None)


class Hold:
    """The bytes one request holds of a :class:`MemoryBudget`, grown without waiting and all given
    back by :meth:`close` (or leaving its ``with`` block).

    Raises:
        RequestError: 503 from :meth:`add` when the budget has no room left.
    """

    def __init__(self, budget: MemoryBudget):
        self.budget = budget
        self.held = 0

    def add(self, n: int) -> None:
        if not self.budget.try_take(n):
            raise RequestError(
                503,
                f"the server holds {self.budget.used} bytes of uploads, its limit of "
                f"{self.budget.total} ({self.budget.flag}): retry later",
                {"Retry-After": "1"},
            )
        self.held += n

    def close(self) -> None:
        self.budget.give(self.held)
        self.held = 0

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PerClient:
    """At most ``cap`` uploads read at once from one client address (0: no cap); more wait their
    turn, first come first served, without their body being read (on the event loop only)."""

    def __init__(self, cap: int):
        self.cap = cap
        self._slots: dict[str, MemoryBudget] = {}

    @property
    def active(self) -> dict[str, int]:
        """Uploads being read, by client address."""
        return {client: slots.used for client, slots in self._slots.items() if slots.used}

    @asynccontextmanager
    async def slot(self, client: str) -> AsyncIterator[None]:
        """Hold one of ``client``'s slots while the block runs, waiting for one if need be
        (cancel it to stop waiting)."""
        if not self.cap:
            yield
            return
        slots = self._slots.setdefault(client, MemoryBudget(self.cap, "--max-uploads-per-client"))
        try:
            await slots.take(1)
            try:
                yield
            finally:
                slots.give(1)
        finally:
            if not slots.used and not slots.waiting and self._slots.get(client) is slots:
                del self._slots[client]


def _too_large(size: int | None, max_bytes: int) -> RequestError:
    what = "the upload ran past" if size is None else f"the upload is {size} bytes, over"
    return RequestError(413, f"{what} the limit of {max_bytes} bytes (--max-upload-mb)")


async def _counted(
    stream: AsyncIterator[bytes], cap: int, max_bytes: int, hold: Hold | None
) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in stream:
        seen += len(chunk)
        if seen > cap:
            raise _too_large(None, max_bytes)
        if hold is not None:
            hold.add(len(chunk))
        yield chunk


async def read_upload(request: Request, max_bytes: int, hold: Hold | None = None) -> bytes:
    """The uploaded image's bytes: the multipart field ``file``, or the whole body.

    Args:
        request: the request, its body not read yet.
        max_bytes: the largest upload (a multipart body may be :data:`MULTIPART_SLACK` larger).
        hold: charged with the body's bytes as they arrive; ``None``: not counted.

    Raises:
        RequestError: 415 for another content type; 413 over ``max_bytes`` (the declared length,
            or the bytes counted while reading); 400 for a malformed multipart body or one
            without a ``file`` field; 503 when ``hold``'s budget runs out.
        starlette.requests.ClientDisconnect: the client went away before the body arrived.
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
    stream = _counted(request.stream(), cap, max_bytes, hold)
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


def _open_header(data: bytes, max_pixels: int) -> Image.Image:
    """The image in ``data``, opened (its header read, no pixel decoded) and its size checked."""
    if not data:
        raise RequestError(400, "the upload is empty (0 bytes): send an image file")
    try:
        im = Image.open(io.BytesIO(data))  # Pillow's warning is silenced by quiet_pillow()
    except UnidentifiedImageError:
        raise RequestError(
            415, f"the upload ({len(data)} bytes) is not an image in a format Pillow reads"
        ) from None
    except Image.DecompressionBombError as exc:
        raise RequestError(
            413, f"the image has too many pixels to decode ({first_line(exc)})"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise RequestError(400, f"cannot read the image header ({first_line(exc)})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise RequestError(
            413,
            f"the image is {w}×{h} = {w * h} pixels, over the limit of {max_pixels} (--max-pixels)",
        )
    if w == 0 or h == 0:
        im.close()
        raise RequestError(400, f"the image has zero size ({w}×{h})")
    return im


def decode_cost(data: bytes, *, max_pixels: int, channels: int = 3) -> tuple[int, int]:
    """What decoding ``data`` costs in memory, from the image's header alone: the most bytes it
    holds at once, and the bytes the request goes on holding until its answer is sent.

    Decoding holds Pillow's buffer, its rotated or converted copy and NumPy's copy of it (each
    ``width × height ×`` Pillow's bytes per pixel), a 16- or 32-bit image's 8-bit plane, and what
    is held after: the uint8 image (``width × height × channels``), its class map and the palette
    mask rendered from it (``width × height`` each).

    Raises:
        RequestError: as :func:`decode` does for the header (400, 413, 415).
    """
    with _open_header(data, max_pixels) as im:
        (w, h), mode = im.size, im.mode
    stored = 1 if mode in _NARROW_MODES else 2 if mode in _WORD_MODES else 4
    plane = 1 if mode in _WIDE_SINGLE else 0
    held = w * h * (channels + 2)
    return w * h * (3 * stored + plane) + held, held


def decode(data: bytes, *, max_pixels: int, channels: int = 3) -> np.ndarray:
    """Decode image bytes as uint8 H×W×channels, checking the size in the header first.

    Raises:
        RequestError: 400 for no bytes, a zero-size, truncated or corrupt image; 415 for bytes that
            are no image format Pillow reads; 413 for more than ``max_pixels`` pixels (before
            decoding them).
    """
    with _open_header(data, max_pixels) as im:
        try:
            im.load()
            im = ImageOps.exif_transpose(im) or im
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise RequestError(
                400, f"the image is truncated or corrupt ({first_line(exc)})"
            ) from None
        try:
            return image_array(im, channels, where="the image")
        except (OSError, ValueError) as exc:  # PixelwiseError included
            raise RequestError(
                400, f"cannot convert the {im.mode} image to pixels ({first_line(exc)})"
            ) from None
