"""The HTTP service: a FastAPI app around one loaded :class:`~pixelwise.engine.Segmenter`.

``create_app(segmenter, settings)`` builds it; ``pixelwise serve`` runs it with uvicorn, and tests
use it through FastAPI's ``TestClient`` (``with TestClient(app) as client:`` runs its start-up).
Every prediction goes through ``Segmenter.segment_batch``, the path ``pixelwise predict`` takes, in
one worker thread fed by the micro-batcher (:mod:`pixelwise.serve.batching`); uploads are read and
decoded under the limits of :mod:`pixelwise.serve.limits`. Endpoints, options and status codes are
described in ``docs/serve.md``.

An upload is read (within ``--timeout``, at most ``--max-uploads-per-client`` at once from one
address while others wait, its bytes charged to the upload memory budget) before its request takes
an admission slot, so clients that send slowly hold none; decoding then waits for room in the decode
memory budget, and runs in a few threads of its own.

Every error answer is JSON ``{"error": "<one line>"}``; the middleware of
:mod:`pixelwise.serve.middleware` logs unexpected errors with their traceback (a bare 500 for the
client), counts clients that went away as 499, answers ``HEAD`` and checks ``Host`` and the token.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..engine.inference import InferenceConfig
from ..engine.predictor import Segmenter
from ..engine.regions import labels_rle, regions_summary
from ..engine.visualize import mask_image, overlay_with_legend
from ..errors import PixelwiseError
from .batching import MicroBatcher, QueueFull, Stopped
from .limits import (
    Hold,
    MemoryBudget,
    PerClient,
    RequestError,
    decode,
    decode_cost,
    quiet_pillow,
    read_upload,
)
from .metrics import CONTENT_TYPE, ServeMetrics
from .middleware import HEAD_FLAG, Auth, Head, HostCheck, Observe, error_response
from .schemas import ErrorBody, ModelList, SegmentResult, Status
from .settings import ServeSettings

__all__ = ["PAGE_HEADERS", "add_error_handlers", "create_app", "page_route", "png_bytes"]

log = logging.getLogger("pixelwise.serve")

# The web page and its files: public (no token), served with these headers.
_PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_PUBLIC = frozenset({"/healthz", *_PAGE_FILES})
_SEGMENT_OPTIONS = ("format", "mask", "overlay", "crf", "tta", "tile")

Loader = Callable[[], Segmenter]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Empty, truncated or corrupt image; malformed multipart body.",
        401: "Missing or wrong bearer token (when the server has one).",
        413: "Upload over --max-upload-mb, or image over --max-pixels.",
        408: "The upload did not arrive within --timeout seconds.",
        415: "Not an image, or a content type other than multipart, image/*, octet-stream.",
        421: "A server without a token: the Host header names no loopback host nor --host.",
        422: "An unsupported option value, or an unknown option.",
        503: "The queue, the upload or the decode memory is full (see Retry-After), or the "
        "model is not ready.",
        504: "No prediction within --timeout seconds.",
    }.items()
}
_SEGMENT_OK = {
    "description": "The class-index PNG (palette = class colours), the overlay PNG "
    "(overlay=true), or JSON (format=json).",
    "content": {
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": SegmentResult.model_json_schema()},
    },
}
_SEGMENT_BODY = {
    "required": True,
    "description": "The image: a multipart form with the field 'file', or the raw "
    "bytes as the body.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # fast; label maps compress well anyway
    return buf.getvalue()


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body")]
        given = repr(err["input"])[:60] if "input" in err else ""
        where = f"{'.'.join(loc)}={given}" if given and loc else ".".join(loc)
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _summary(config: InferenceConfig) -> dict[str, Any]:
    """What an answer says about how it was predicted (``crf``, ``tta``, ``tile``): the query
    parameters' values, resolved for the served model."""
    return {"crf": bool(config.crf), "tta": config.tta is not None, "tile": config.tiling.mode}


def page_route(content: bytes, media_type: str) -> Callable[[], Any]:
    async def page() -> Response:
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    return page


class _Service:
    """What the endpoints share: the segmenter, its option variants, the batcher and the metrics."""

    def __init__(self, segmenter: Segmenter | Loader, settings: ServeSettings, paths: list[str]):
        self.settings = settings
        self.segmenter: Segmenter | None = None
        self._loader: Loader | None = None
        if isinstance(segmenter, Segmenter) or not callable(segmenter):
            self.segmenter = segmenter
        else:
            self._loader = segmenter
        self.load_failed = False
        self.batcher = MicroBatcher(
            self._predict,
            max_batch=settings.max_batch,
            wait_s=settings.batch_wait_ms / 1000,
            queue_size=settings.queue_size,
            on_batch=self._on_batch,
        )
        self.uploads = PerClient(settings.max_uploads_per_client)
        self.upload_memory = MemoryBudget(settings.upload_memory_bytes, "--upload-memory-mb")
        self.decode_memory = MemoryBudget(settings.decode_memory_bytes, "--decode-memory-mb")
        self.metrics = ServeMetrics(
            paths,
            settings.max_batch,
            lambda: self.batcher.depth,
            upload_bytes=lambda: self.upload_memory.used,
            decode_bytes=lambda: self.decode_memory.used,
        )
        self._variants: dict[InferenceConfig, Segmenter] = {}
        self._admitted = 0  # requests between admission and their prediction (event loop only)
        # Decoding is CPU work: more threads than cores do not make it faster, and every thread
        # that allocates large buffers gets a malloc arena of its own that keeps freed memory.
        self._decoders: ThreadPoolExecutor | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.batcher.start()
        self._decoders = ThreadPoolExecutor(
            min(4, os.cpu_count() or 1), thread_name_prefix="pixelwise-decode"
        )
        if self.segmenter is None and self._loader is not None:
            threading.Thread(target=self._load, name="pixelwise-load", daemon=True).start()
        try:
            yield
        finally:
            await run_in_threadpool(self.batcher.stop)
            self._decoders.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        try:
            seg = self._loader()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - reported by /readyz, traceback in the log
            log.exception("the model failed to load")
            self.load_failed = True
            return
        self.segmenter = seg
        log.info("model %s loaded", self.settings.model_name)

    @property
    def ready(self) -> bool:
        return self.segmenter is not None and self.batcher.running

    def require_ready(self) -> Segmenter:
        if self.segmenter is None or not self.batcher.running:
            what = "failed to load" if self.load_failed else "is not ready yet"
            raise RequestError(503, f"the model {what}", {"Retry-After": "5"})
        return self.segmenter

    # ---- admission and options ----------------------------------------------------------------

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Admit one request while fewer than a full batch plus a full queue are in flight."""
        capacity = self.settings.queue_size + self.settings.max_batch
        if self._admitted >= capacity:
            raise RequestError(
                503,
                f"the server is busy: {self._admitted} requests in flight (--queue-size "
                f"{self.settings.queue_size} + --max-batch {self.settings.max_batch})",
                {"Retry-After": str(self.batcher.retry_after())},
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    def options(
        self, seg: Segmenter, crf: bool | None, tta: bool | None, tile: str | None
    ) -> InferenceConfig:
        """The configuration a request's query parameters ask for: the served one, with the
        parameters that are given changed (:meth:`InferenceConfig.with_options`)."""
        return seg.config.with_options(crf=crf, tta=tta, tile=tile)

    def _variant(self, config: InferenceConfig) -> Segmenter:
        """The segmenter predicting under ``config``: the loaded one, or the same model bound to
        ``config`` (made once, in the worker thread; the network is shared, not copied)."""
        seg = self.segmenter
        if seg is None:
            raise Stopped("the model is not ready")
        if config == seg.config:
            return seg
        if config not in self._variants:
            self._variants[config] = seg.with_config(config)
        return self._variants[config]

    def _predict(self, images: list[np.ndarray], config: InferenceConfig) -> list[np.ndarray]:
        return [p.labels for p in self._variant(config).segment_batch(images)]

    async def segment(
        self,
        request: Request,
        *,
        fmt: str,
        mask: str,
        overlay: bool,
        crf: bool | None,
        tta: bool | None,
        tile: str | None,
    ) -> Response:
        """``POST /v1/segment``: check the options, read the upload (before taking an admission
        slot: a slow sender holds none), take a slot, decode the image within the decode memory
        budget, predict it through the batcher under the configuration the options ask for, and
        render the answer (the decoded image's share of the budget is held until then)."""
        unknown = sorted(set(request.query_params) - set(_SEGMENT_OPTIONS))
        if unknown:
            raise RequestError(
                422,
                f"unknown option {unknown[0]!r} (options: {', '.join(_SEGMENT_OPTIONS)})",
            )
        if mask == "rle" and fmt != "json":
            raise RequestError(422, "mask=rle needs format=json (format=png returns the mask)")
        seg = self.require_ready()
        options = self.options(seg, crf, tta, tile)
        with Hold(self.upload_memory) as upload:
            data = await self._receive(request, upload)
            with self.admit():
                deadline = asyncio.get_running_loop().time() + self.settings.timeout
                image, held = await self._decode(data, seg, deadline)
                upload.close()
                del data
                try:
                    labels = await self._prediction(image, options, deadline)
                except BaseException:
                    self.decode_memory.give(held)
                    raise
        try:
            return await run_in_threadpool(
                self.render,
                seg,
                image,
                labels,
                fmt=fmt,
                mask=mask,
                overlay=overlay,
                options=options,
            )
        finally:
            self.decode_memory.give(held)

    async def _receive(self, request: Request, hold: Hold) -> bytes:
        """The upload's bytes, charged to ``hold``, read as one of at most
        ``--max-uploads-per-client`` from the client's address (waiting for a turn), all within
        ``--timeout`` (then 408). Turns go first come, first served, and every upload ahead ends
        by its own deadline, so a request always gets its turn before its deadline."""
        client = request.client.host if request.client else "unknown"

        async def read() -> bytes:
            async with self.uploads.slot(client):
                return await read_upload(request, self.settings.max_upload_bytes, hold)

        try:
            return await asyncio.wait_for(read(), self.settings.timeout)
        except asyncio.TimeoutError:
            raise RequestError(
                408, f"the upload did not arrive within {self.settings.timeout:g} s (--timeout)"
            ) from None

    async def _decode(self, data: bytes, seg: Segmenter, deadline: float) -> tuple[np.ndarray, int]:
        """``data`` decoded once the decode memory budget has room for its cost, estimated from
        its header (waiting until ``deadline``, then 503); the image, and the bytes of the budget
        it goes on holding (the image's, its class map's and its mask's), to give back after the
        answer."""
        channels, limit = seg.meta.in_channels, self.settings.max_pixels
        cost, held = await run_in_threadpool(decode_cost, data, max_pixels=limit, channels=channels)
        left = deadline - asyncio.get_running_loop().time()
        try:
            taken = await asyncio.wait_for(self.decode_memory.take(cost), left)
        except asyncio.TimeoutError:
            raise RequestError(
                503,
                f"the server is busy: decoding had no room in --decode-memory-mb "
                f"{self.settings.decode_memory_mb:g} within {self.settings.timeout:g} s",
                {"Retry-After": str(self.batcher.retry_after())},
            ) from None
        work = functools.partial(decode, data, max_pixels=limit, channels=channels)
        try:
            image = await asyncio.get_running_loop().run_in_executor(self._decoders, work)
        except BaseException:
            self.decode_memory.give(taken)
            raise
        keep = min(taken, held)
        self.decode_memory.give(taken - keep)
        return image, keep

    async def _prediction(
        self, image: np.ndarray, options: InferenceConfig, deadline: float
    ) -> np.ndarray:
        """The class map of ``image`` from the batcher, by ``deadline`` (then 504)."""
        left = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self.batcher.submit(image, options), left)
        except asyncio.TimeoutError:
            raise RequestError(
                504, f"no prediction within {self.settings.timeout:g} s (--timeout)"
            ) from None
        except QueueFull as exc:
            raise RequestError(
                503,
                f"the queue is full ({self.settings.queue_size} waiting, --queue-size)",
                {"Retry-After": str(exc.retry_after)},
            ) from None
        except Stopped as exc:
            raise RequestError(503, str(exc), {"Retry-After": "5"}) from None
        except RequestError:
            raise
        except PixelwiseError as exc:  # the image and the options do not go together
            raise RequestError(422, str(exc)) from None

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.observe_batch(size, seconds)

    # ---- answers ------------------------------------------------------------------------------

    def render(
        self,
        seg: Segmenter,
        image: np.ndarray,
        labels: np.ndarray,
        *,
        fmt: str,
        mask: str,
        overlay: bool,
        options: InferenceConfig,
    ) -> Response:
        colors, names = seg.colors, seg.class_names
        over = overlay_with_legend(image, labels, colors, names) if overlay else None
        if fmt == "png":
            png = png_bytes(over if over is not None else mask_image(labels, colors))
            return Response(png, media_type="image/png")
        body = {"model": self.settings.model_name}
        body.update(regions_summary(labels, names, max_regions=self.settings.max_regions))
        if mask == "rle":
            body["mask"] = {"encoding": "rle", "data": labels_rle(labels, names)}
        else:
            data = base64.b64encode(png_bytes(mask_image(labels, colors))).decode("ascii")
            body["mask"] = {"encoding": "png_base64", "data": data}
        if over is not None:
            body["overlay"] = {
                "encoding": "png_base64",
                "data": base64.b64encode(png_bytes(over)).decode("ascii"),
            }
        body["inference"] = _summary(self._variant(options).config)
        return Response(
            json.dumps(body, separators=(",", ":")).encode(), media_type="application/json"
        )

    def model_list(self, seg: Segmenter) -> dict[str, Any]:
        meta, s = seg.meta, self.settings
        return {
            "models": [
                {
                    "name": s.model_name,
                    "arch": meta.arch,
                    "dataset": meta.dataset,
                    "in_channels": meta.in_channels,
                    "input_size": None,  # pixelwise models take any size (they pad inside)
                    "output": meta.output,
                    "classes": [
                        {"index": i, "name": n, "color": list(c)}
                        for i, (n, c) in enumerate(zip(meta.class_names, meta.colors, strict=True))
                    ],
                    "defaults": _summary(seg.config),
                }
            ],
            "limits": {
                "max_upload_bytes": s.max_upload_bytes,
                "max_pixels": s.max_pixels,
                "max_batch": s.max_batch,
                "queue_size": s.queue_size,
                "timeout_s": s.timeout,
                "max_regions": s.max_regions,
                "max_uploads_per_client": s.max_uploads_per_client,
                "upload_memory_bytes": s.upload_memory_bytes,
                "decode_memory_bytes": s.decode_memory_bytes,
            },
        }


def add_error_handlers(app: FastAPI) -> None:
    """Every error answer is JSON ``{"error": "<one line>"}``."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, str(exc), exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        method = "HEAD" if request.scope.get(HEAD_FLAG) else request.method
        message = {
            404: f"no such endpoint: {request.url.path}",
            405: f"method {method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))


def create_app(
    segmenter: Segmenter | Callable[[], Segmenter], settings: ServeSettings | None = None
) -> FastAPI:
    """The service's FastAPI app.

    Args:
        segmenter: the loaded model, or a function loading it: it then loads in a thread at
            start-up while ``/healthz`` answers and ``/readyz`` says 503.
        settings: limits, batching and token; ``None``: :class:`ServeSettings`' defaults.

    Returns:
        The app; its start-up (lifespan) starts the worker thread, its shutdown stops it.
    """
    settings = settings or ServeSettings()
    quiet_pillow()
    paths = ["/v1/segment", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json"]
    service = _Service(segmenter, settings, [*paths, *_PAGE_FILES])
    app = FastAPI(
        title="pixelwise",
        version=__version__,
        description="Semantic segmentation: every pixel of an image gets a class label.",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; /openapi.json stays
        redoc_url=None,
        lifespan=service.lifespan,
    )
    app.state.service = service
    add_error_handlers(app)

    @app.post(
        "/v1/segment",
        summary="Segment one image",
        response_model=None,
        responses={200: _SEGMENT_OK, **_ERRORS},
        openapi_extra={"requestBody": _SEGMENT_BODY},
    )
    async def segment(
        request: Request,
        format: Annotated[
            Literal["png", "json"],
            Query(description="png: the class-index PNG; json: classes, regions and the mask."),
        ] = "png",
        mask: Annotated[
            Literal["png", "rle"],
            Query(description="JSON mask encoding: png (base64 PNG) or rle (COCO, per class)."),
        ] = "png",
        overlay: Annotated[
            bool,
            Query(description="png: return the overlay PNG instead; json: add it (base64)."),
        ] = False,
        crf: Annotated[
            bool | None, Query(description="Dense CRF refinement [default: the server's].")
        ] = None,
        tta: Annotated[
            bool | None, Query(description="Test-time augmentation [default: the server's].")
        ] = None,
        tile: Annotated[
            Literal["auto", "whole", "slide"] | None,
            Query(description="Whole image or sliding windows [default: the server's]."),
        ] = None,
    ) -> Response:
        return await service.segment(
            request, fmt=format, mask=mask, overlay=overlay, crf=crf, tta=tta, tile=tile
        )

    @app.get(
        "/v1/models", response_model=ModelList, responses={401: _ERRORS[401], 503: _ERRORS[503]}
    )
    async def models() -> dict[str, Any]:
        """The model served: classes with their colours, input size, output kind, defaults."""
        return service.model_list(service.require_ready())

    @app.get("/healthz", response_model=Status, response_model_exclude_none=True)
    async def healthz() -> dict[str, Any]:
        """The process is alive (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Status, responses={503: _ERRORS[503]})
    async def readyz() -> dict[str, Any]:
        """200 once the model is loaded and the worker runs; 503 before (or after a failed load)."""
        service.require_ready()
        return {"status": "ready", "model": settings.model_name}

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text."}},
    )
    async def metrics() -> Response:
        """Prometheus metrics: requests, latency, queue depth, batch sizes."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    static = resources.files(__package__) / "static"
    for path, (name, media_type) in _PAGE_FILES.items():
        page = page_route((static / name).read_bytes(), media_type)
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    app.add_middleware(Auth, token=settings.token, public=_PUBLIC)  # innermost
    app.add_middleware(HostCheck, host=settings.host, token=settings.token)
    app.add_middleware(Head)
    app.add_middleware(Observe, metrics=service.metrics)  # outermost of ours
    return app
