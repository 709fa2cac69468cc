"""The service's settings: limits, batching and the optional bearer token, with their defaults.

Plain data without FastAPI, so the command line can build and check them before importing the server.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from ..errors import PixelwiseError

__all__ = ["MULTIPART_SLACK", "ServeSettings", "is_loopback"]

# Bytes a multipart body may carry beyond the file itself (boundaries, part headers, small fields).
MULTIPART_SLACK = 64 * 1024
MIB = 1 << 20


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only:
    ``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServeSettings:
    """How ``pixelwise serve`` admits, batches and answers requests.

    Args:
        model_name: the name ``/v1/models`` reports (the ``--model`` value, a file's name for a path).
        token: the bearer token every endpoint but ``/healthz`` and the web page requires
            (``Authorization: Bearer <token>``); ``None`` or empty: no token.
        host: the address the server is bound to (``--host``). Set, and without a token, a request
            must name this host, ``localhost`` or a loopback address in its ``Host`` header
            (against DNS rebinding); ``None`` (an app run by another ASGI server): no check.
        max_batch: most images in one forward pass (same size and same options only).
        batch_wait_ms: how long the first request of a batch waits for others to join it.
        queue_size: most requests waiting beyond the batch being predicted; more get 503.
        timeout: seconds an upload may take to arrive (then 408), and seconds a request may then
            wait for its prediction (decode memory, queue and inference; then 503 or 504).
        max_upload_mb: largest image upload in MiB (MiB = 2**20 bytes); larger ones get 413.
        max_pixels: largest image (width × height) decoded; larger ones get 413 before decoding.
        max_regions: most regions a JSON answer lists (the largest); ``regions_total`` counts all.
        max_uploads_per_client: most uploads read at once from one client address; more wait their
            turn (within ``timeout``), unread. 0: no cap.
        upload_memory_mb: most MiB of request bodies held at once (arriving, or waiting to be
            decoded); a body that would pass it gets 503. Never less than one largest upload.
        decode_memory_mb: most MiB of decoding work and decoded images held at once, estimated
            from each image's header before decoding; a request waits (up to ``timeout``) for room.
    """

    model_name: str = "model"
    token: str | None = None
    host: str | None = None
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    queue_size: int = 32
    timeout: float = 30.0
    max_upload_mb: float = 32.0
    max_pixels: int = 4096 * 4096
    max_regions: int = 1000
    max_uploads_per_client: int = 8
    upload_memory_mb: float = 256.0
    decode_memory_mb: float = 1024.0

    def __post_init__(self) -> None:
        if self.token == "":
            object.__setattr__(self, "token", None)
        for name in ("max_batch", "queue_size", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PixelwiseError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("max_regions", "max_uploads_per_client"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PixelwiseError(f"{name} must be an integer >= 0, got {value!r}")
        positive = ("timeout", "max_upload_mb", "upload_memory_mb", "decode_memory_mb")
        for name, low in (("batch_wait_ms", 0.0), *((n, None) for n in positive)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= low if low is not None else value > 0)
            if not ok:
                bound = ">= 0" if low is not None else "> 0"
                raise PixelwiseError(f"{name} must be a number {bound}, got {value!r}")

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * MIB)

    @property
    def upload_memory_bytes(self) -> int:
        """:attr:`upload_memory_mb` in bytes, at least one largest (multipart) upload."""
        return max(int(self.upload_memory_mb * MIB), self.max_upload_bytes + MULTIPART_SLACK)

    @property
    def decode_memory_bytes(self) -> int:
        """:attr:`decode_memory_mb` in bytes."""
        return int(self.decode_memory_mb * MIB)
