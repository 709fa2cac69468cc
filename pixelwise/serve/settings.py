"""The service's settings: limits, batching and the optional bearer token, with their defaults.

Plain data without FastAPI, so the command line can build and check them before importing the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import PixelwiseError

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """How ``pixelwise serve`` admits, batches and answers requests.

    Args:
        model_name: the name ``/v1/models`` reports (the ``--model`` value, a file's name for a path).
        token: the bearer token every endpoint but ``/healthz`` and the web page requires
            (``Authorization: Bearer <token>``); ``None`` or empty: no token.
        max_batch: most images in one forward pass (same size and same options only).
        batch_wait_ms: how long the first request of a batch waits for others to join it.
        queue_size: most requests waiting beyond the batch being predicted; more get 503.
        timeout: seconds a request may wait for its prediction (queue and inference); then 504.
        max_upload_mb: largest image upload in MiB (MiB = 2**20 bytes); larger ones get 413.
        max_pixels: largest image (width × height) decoded; larger ones get 413 before decoding.
        max_regions: most regions a JSON answer lists (the largest); ``regions_total`` counts all.
    """

    model_name: str = "model"
    token: str | None = None
    max_batch: int = 8
    batch_wait_ms: float = 5.0
    queue_size: int = 32
    timeout: float = 30.0
    max_upload_mb: float = 32.0
    max_pixels: int = 4096 * 4096
    max_regions: int = 1000

    def __post_init__(self) -> None:
        if self.token == "":
            object.__setattr__(self, "token", None)
        for name in ("max_batch", "queue_size", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PixelwiseError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.max_regions, bool) or not isinstance(self.max_regions, int):
            raise PixelwiseError(f"max_regions must be an integer >= 0, got {self.max_regions!r}")
        if self.max_regions < 0:
            raise PixelwiseError(f"max_regions must be an integer >= 0, got {self.max_regions!r}")
        for name, low in (("batch_wait_ms", 0.0), ("timeout", None), ("max_upload_mb", None)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= low if low is not None else value > 0)
            if not ok:
                bound = ">= 0" if low is not None else "> 0"
                raise PixelwiseError(f"{name} must be a number {bound}, got {value!r}")

    @property
    def max_upload_bytes(self) -> int:
        """:attr:`max_upload_mb` in bytes."""
        return int(self.max_upload_mb * (1 << 20))
