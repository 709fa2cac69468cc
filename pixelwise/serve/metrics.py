"""Prometheus metrics of one app, in a registry of its own (two apps in one process never mix):

* ``pixelwise_requests_total{endpoint, status}`` — answered requests;
* ``pixelwise_request_seconds{endpoint}`` — latency histogram, from the request's arrival to the
  end of its answer;
* ``pixelwise_queue_depth`` — requests waiting for the model (gauge, read when scraped);
* ``pixelwise_upload_bytes``, ``pixelwise_decode_bytes`` — bytes held of the upload and the decode
  memory budgets (gauges, read when scraped);
* ``pixelwise_batch_size`` — images per forward pass (histogram);
* ``pixelwise_batch_seconds`` — time of one forward pass with its pre- and post-processing.

``endpoint`` is the route's path (``/v1/segment``...) or ``other`` for paths the app does not serve,
so a scanner cannot grow the label set. ``status`` 499 counts clients that went away before their
request arrived (nothing was sent to them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "ServeMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _batch_buckets(max_batch: int) -> tuple[float, ...]:
    if max_batch <= 16:
        return tuple(float(b) for b in range(1, max_batch + 1))
    sizes = {1, max_batch}
    b = 2
    while b < max_batch:
        sizes.add(b)
        b *= 2
    return tuple(float(b) for b in sorted(sizes))


class ServeMetrics:
    """The service's counters, gauges and histograms.

    Args:
        endpoints: the paths that get their own ``endpoint`` label.
        max_batch: the largest batch (the batch size histogram has a bucket per size up to 16).
        queue_depth: returns the number of waiting requests when scraped.
        upload_bytes: returns the bytes of uploads held when scraped.
        decode_bytes: returns the bytes held for decoding and decoded images when scraped.
    """

    def __init__(
        self,
        endpoints: Iterable[str],
        max_batch: int,
        queue_depth: Callable[[], int],
        *,
        upload_bytes: Callable[[], int] = lambda: 0,
        decode_bytes: Callable[[], int] = lambda: 0,
    ):
        self.registry = CollectorRegistry(auto_describe=True)
        self.endpoints = frozenset(endpoints)
        self.requests = Counter(
            "pixelwise_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pixelwise_request_seconds",
            "Time from a request's arrival to the end of its answer.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "pixelwise_queue_depth",
            "Requests waiting for the model (not counting the batch being predicted).",
            registry=self.registry,
        )
        self.queue_depth.set_function(lambda: float(queue_depth()))
        for name, text, read in (
            ("pixelwise_upload_bytes", "Bytes of uploads held (--upload-memory-mb).", upload_bytes),
            (
                "pixelwise_decode_bytes",
                "Bytes held for decoding and decoded images (--decode-memory-mb).",
                decode_bytes,
            ),
        ):
            gauge = Gauge(name, text, registry=self.registry)
            gauge.set_function(lambda read=read: float(read()))
        self.batch_size = Histogram(
            "pixelwise_batch_size",
            "Images per forward pass.",
            buckets=_batch_buckets(max_batch),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "pixelwise_batch_seconds",
            "Time of one forward pass, pre- and post-processing included.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def endpoint(self, path: str) -> str:
        """The ``endpoint`` label of a request path."""
        return path if path in self.endpoints else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        """Count one forward pass of ``size`` images."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
