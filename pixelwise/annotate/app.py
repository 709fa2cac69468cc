"""``pixelwise annotate``: a local web app to label a dataset, with a model's help.

``create_annotate_app(store, segmenter, settings)`` builds a FastAPI app around a
:class:`~pixelwise.annotate.store.LabelStore` (the dataset's images and where their labels go) and,
optionally, a :class:`~pixelwise.engine.Segmenter`. It is the service's stack with the service's
rules: loopback by default, a bearer token beyond it (:class:`~pixelwise.serve.middleware.Auth`,
:class:`~pixelwise.serve.middleware.HostCheck`), bounded uploads
(:func:`~pixelwise.serve.limits.read_upload`), JSON ``{"error": "<one line>"}`` for every error.

Endpoints (all but the page and ``/healthz`` need the token when there is one):

* ``GET /api/dataset``: classes (names, colours), the encoding, where saves go, the model.
* ``GET /api/items``: every image with its state (labelled, saved, uncertainty), in the order to
  label them: most uncertain first once the model has ranked them (a background thread ranks the
  unlabelled images at start), else the dataset's order.
* ``GET /api/items/{i}/image``: the image as PNG.
* ``GET /api/items/{i}/labels``: the label map as a grayscale PNG of class indices (255 =
  unlabelled), ``ETag`` = its version.
* ``PUT /api/items/{i}/labels``: save a label map (same PNG) with ``If-Match: <version>``; 409 with
  the current version when it changed since (another tab), 428 without ``If-Match``.
* ``GET /api/items/{i}/history`` and ``/history/{version}``: the saves, and any earlier version.
* ``POST /api/items/{i}/predict``: the model's labels for the image (PNG); ``GET .../uncertainty``:
  the per-pixel uncertainty of that prediction as a heat-map PNG.
* ``GET /api/items/{i}/superpixels``: SLIC superpixels (scikit-image) for the smart brush, ids
  packed as ``R + 256·G`` in an RGB PNG.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..data.classes import IGNORE_INDEX
from ..engine.predictor import Segmenter
from ..errors import PixelwiseError, printable
from ..serve.app import add_error_handlers, page_route, png_bytes
from ..serve.limits import RequestError, read_upload
from ..serve.middleware import Auth, Head, HostCheck, error_response
from .active import UNCERTAINTY_KINDS, image_uncertainty, uncertainty_map
from .store import Conflict, Item, LabelStore

__all__ = ["AnnotateSettings", "create_annotate_app"]

log = logging.getLogger("pixelwise.annotate")

_PAGE_FILES = {
    "/": ("annotate.html", "text/html; charset=utf-8"),
    "/static/annotate.js": ("annotate.js", "text/javascript; charset=utf-8"),
    "/static/annotate.css": ("annotate.css", "text/css; charset=utf-8"),
}
_PUBLIC = frozenset({"/healthz", *_PAGE_FILES})
_CACHE = 4  # predictions (labels + uncertainty) kept for the images last predicted
_HEAT = np.array(  # the heat map's colours, low → high uncertainty (a short "inferno")
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32
)


@dataclass(frozen=True)
class AnnotateSettings:
    """How the app admits requests.

    Args:
        token: the bearer token of every endpoint but the page and ``/healthz``; ``None``: none.
        host: the bound address (``--host``): without a token, requests must name it or a
            loopback host (against DNS rebinding); ``None``: no check.
        uncertainty: how images are ranked and the heat map is drawn: ``entropy``, ``margin`` or
            ``least_confident`` (:mod:`pixelwise.annotate.active`).
        rank: rank the unlabelled images with the model at start (in a background thread).
        superpixels: about how many SLIC segments the smart brush divides an image into.
    """

    token: str | None = None
    host: str | None = None
    uncertainty: str = "entropy"
    rank: bool = True
    superpixels: int = 600

    def __post_init__(self) -> None:
        if self.token == "":
            object.__setattr__(self, "token", None)
        if self.uncertainty not in UNCERTAINTY_KINDS:
            raise PixelwiseError(
                f"unknown uncertainty kind {self.uncertainty!r}; use {', '.join(UNCERTAINTY_KINDS)}"
            )
        if not 16 <= self.superpixels <= 20000:
            raise PixelwiseError(f"superpixels must be 16..20000, got {self.superpixels}")


def _label_png(labels: np.ndarray) -> bytes:
    return png_bytes(Image.fromarray(labels.astype(np.uint8), mode="L"))


def heat_map(uncertainty: np.ndarray) -> np.ndarray:
    """An H×W uncertainty in [0, 1] → H×W×4 uint8 colours (dark → yellow), alpha rising with it."""
    u = np.clip(np.nan_to_num(uncertainty), 0.0, 1.0).astype(np.float32)
    x = u * (len(_HEAT) - 1)
    lo = np.minimum(x.astype(np.int64), len(_HEAT) - 2)
    t = (x - lo)[..., None]
    rgb = _HEAT[lo] * (1 - t) + _HEAT[lo + 1] * t
    alpha = 40 + 215 * u
    return np.dstack([rgb, alpha]).round().astype(np.uint8)


class _App:
    """What the endpoints share: the store, the model, its cached predictions and the ranking."""

    def __init__(self, store: LabelStore, segmenter: Segmenter | None, settings: AnnotateSettings):
        self.store = store
        self.segmenter = segmenter
        self.settings = settings
        self.model_lock = threading.Lock()  # one forward pass at a time
        self.cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        self.scores: dict[int, float] = {}
        self.rank_total = 0
        self.rank_error: str | None = None
        self.stop = threading.Event()

    # -- the model -------------------------------------------------------------------------

    def predict(self, item: Item) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, per-pixel uncertainty or None) for the image, cached for the last few."""
        if self.segmenter is None:
            raise RequestError(404, "no model: start pixelwise annotate with --model M")
        with self.model_lock:
            if item.index in self.cache:
                self.cache.move_to_end(item.index)
                return self.cache[item.index]
            image = self.store.image(item)
            try:
                pred = self.segmenter.segment(image, probs=True)
            except PixelwiseError:  # too large for probabilities: labels only
                pred = self.segmenter.segment(image)
            u = None
            if pred.probs is not None:
                u = uncertainty_map(pred.probs, self.settings.uncertainty)
                self.scores[item.index] = float(u.mean())
            self.cache[item.index] = (pred.labels, u)
            while len(self.cache) > _CACHE:
                self.cache.popitem(last=False)
            return pred.labels, u

    def rank(self) -> None:
        """Score every unlabelled image (most uncertain labelled first); runs in a thread."""
        todo = [it for it in self.store.items if not self.store.has_labels(it)]
        self.rank_total = len(todo)
        for item in todo:
            if self.stop.is_set():
                return
            if item.index in self.scores:
                continue
            try:
                with self.model_lock:
                    probs = self.segmenter.segment(self.store.image(item), probs=True).probs  # type: ignore[union-attr]
                self.scores[item.index] = image_uncertainty(probs, self.settings.uncertainty)  # type: ignore[arg-type]
            except PixelwiseError as exc:
                self.rank_error = f"{item.name}: {exc}"
                log.warning("not ranked: %s", self.rank_error)

    # -- listing ---------------------------------------------------------------------------

    def listing(self) -> dict[str, Any]:
        """Every image's state, and the order to label them: unlabelled images most uncertain
        first (the scored ones), then the rest in dataset order. Each file is looked at once."""
        st = self.store
        labelled = [st.has_labels(it) for it in st.items]
        items = [
            {
                "id": it.index,
                "name": it.name,
                "split": it.split,
                "labelled": labelled[it.index],
                "saved": st.saved(it),
                "uncertainty": self.scores.get(it.index),
            }
            for it in st.items
        ]
        scored = sorted(
            (i for i in self.scores if not labelled[i]), key=lambda i: (-self.scores[i], i)
        )
        first = set(scored)
        return {
            "items": items,
            "order": scored + [i for i in range(len(items)) if i not in first],
            "ranking": {
                "by": self.settings.uncertainty if self.segmenter and self.settings.rank else None,
                "scored": len(scored),
                "total": self.rank_total,
                "error": self.rank_error,
            },
        }

    def describe(self) -> dict[str, Any]:
        spec = self.store.spec
        codec = spec.mask.codec
        try:
            codec.encode(np.array([[IGNORE_INDEX]], np.uint8), spec)
            unlabelled = True
        except PixelwiseError:
            unlabelled = False
        where = (
            "the dataset's mask files (in place)"
            if self.store.in_place
            else str(self.store.labels_dir)
        )
        model = None
        if self.segmenter is not None:
            meta = self.segmenter.meta
            model = {"arch": meta.arch, "classes": meta.num_classes, "dataset": meta.dataset}
            differ = [
                f"{i}: {m!r} / {d!r}"
                for i, (m, d) in enumerate(zip(meta.class_names, spec.class_names, strict=True))
                if m.strip().lower() != d.strip().lower()
            ]
            if differ:  # same count, other names: maybe another order — say so, don't refuse
                model["warning"] = (
                    f"the model's class names differ from the dataset's (model / dataset): "
                    f"{'; '.join(differ[:5])}{' …' if len(differ) > 5 else ''}"
                )
        return {
            "name": spec.name,
            "version": __version__,
            "classes": [
                {"index": i, "name": n, "color": list(c)}
                for i, (n, c) in enumerate(zip(spec.class_names, spec.colors, strict=True))
            ],
            "encoding": codec.name,
            "saves_to": where,
            "unlabelled_allowed": unlabelled,
            "items": len(self.store.items),
            "model": model,
            "smart": _has_skimage(),
        }


@functools.cache
def _has_skimage() -> bool:
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def superpixels(image: np.ndarray, segments: int) -> np.ndarray:
    """SLIC superpixels of an H×W×C image (scikit-image's ``slic``; colour in Lab): H×W int32
    segment ids 0..n-1."""
    from skimage.segmentation import slic

    rgb = image.shape[2] == 3
    seg = slic(
        image if rgb else image[..., 0],
        n_segments=segments,
        compactness=10.0 if rgb else 0.1,
        start_label=0,
        channel_axis=-1 if rgb else None,
    )
    _, ids = np.unique(seg.reshape(-1), return_inverse=True)
    return ids.reshape(seg.shape).astype(np.int32)


def _parse_labels(body: bytes, size: tuple[int, int], classes: int) -> np.ndarray:
    """A label PNG from the page → H×W uint8, checked against the image's size and the classes."""
    h, w = size
    try:
        with Image.open(io.BytesIO(body)) as im:
            found = (im.format, im.size, im.mode)
            if found == ("PNG", (w, h), "L") or found == ("PNG", (w, h), "P"):
                im.load()
                labels = np.asarray(im).astype(np.uint8)
            else:
                labels = None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"labels are not a readable PNG ({exc})") from None
    if labels is None:
        fmt, (fw, fh), mode = found
        raise RequestError(
            422,
            f"labels must be a {w}x{h} grayscale PNG of class indices, got {fmt} {fw}x{fh} {mode}",
        )
    stray = (labels >= classes) & (labels != IGNORE_INDEX)
    if stray.any():
        raise RequestError(
            422,
            f"label {int(labels[stray][0])} is not a class (0..{classes - 1}) nor unlabelled "
            f"({IGNORE_INDEX})",
        )
    return labels


def _item_id(app: _App, raw: str) -> Item:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise RequestError(404, f"no image {printable(raw)[:40]!r}")
    try:
        return app.store.item(int(raw))
    except PixelwiseError as exc:
        raise RequestError(404, str(exc)) from None


def create_annotate_app(
    store: LabelStore,
    segmenter: Segmenter | None = None,
    settings: AnnotateSettings | None = None,
) -> FastAPI:
    """The annotation app (endpoints in the module docstring).

    Args:
        store: the images and where their labels go.
        segmenter: a model to pre-label with and rank by; its classes must be the dataset's.
        settings: token, host check, uncertainty kind, ranking.

    Raises:
        PixelwiseError: the model's number of classes is not the dataset's.
    """
    settings = settings or AnnotateSettings()
    spec = store.spec
    if segmenter is not None and segmenter.meta.num_classes != spec.num_classes:
        raise PixelwiseError(
            f"the model has {segmenter.meta.num_classes} classes, the dataset {spec.num_classes}"
        )
    state = _App(store, segmenter, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        if segmenter is not None and settings.rank:
            threading.Thread(target=state.rank, name="pixelwise-rank", daemon=True).start()
        yield
        state.stop.set()

    app = FastAPI(
        title="pixelwise annotate",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.annotate = state
    add_error_handlers(app)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc), "current": exc.current},
            status_code=409,
            headers={"ETag": f'"{exc.current}"'},
        )

    @app.exception_handler(PixelwiseError)
    async def _refused(request: Request, exc: PixelwiseError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/dataset")
    async def dataset() -> dict[str, Any]:
        return state.describe()

    @app.get("/api/items")
    async def items() -> dict[str, Any]:
        return await run_in_threadpool(state.listing)

    @app.get("/api/items/{item_id}/image")
    async def image(item_id: str) -> Response:
        item = _item_id(state, item_id)
        arr = await run_in_threadpool(store.image, item)
        png = await run_in_threadpool(
            png_bytes, Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
        )
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.get("/api/items/{item_id}/labels")
    async def labels(item_id: str) -> Response:
        item = _item_id(state, item_id)
        arr, version = await run_in_threadpool(store.labels, item)
        png = await run_in_threadpool(_label_png, arr)
        return Response(
            png,
            media_type="image/png",
            headers={"ETag": f'"{version}"', "Cache-Control": "no-store"},
        )

    @app.put("/api/items/{item_id}/labels")
    async def save(item_id: str, request: Request) -> JSONResponse:
        item = _item_id(state, item_id)
        match = request.headers.get("if-match")
        if match is None:
            raise RequestError(
                428, "a save needs If-Match: <the version you edited> (from the labels' ETag)"
            )
        expected = match.strip().removeprefix("W/").strip('"')
        h, w = store.size(item)
        # a grayscale PNG is never much larger than its pixels (filter bytes, zlib overhead)
        body = await read_upload(request, max_bytes=h * w + h + 65536)
        labels_ = await run_in_threadpool(_parse_labels, body, (h, w), spec.num_classes)
        source = request.headers.get("x-pixelwise-source", "manual")
        source = source if source in ("manual", "model") else "manual"
        version = await run_in_threadpool(store.save, item, labels_, expected, source=source)
        return JSONResponse({"version": version}, headers={"ETag": f'"{version}"'})

    @app.get("/api/items/{item_id}/history")
    async def history(item_id: str) -> dict[str, Any]:
        item = _item_id(state, item_id)
        return {"current": store.version(item), "saves": store.history(item)}

    @app.get("/api/items/{item_id}/history/{version}")
    async def old_version(item_id: str, version: str) -> Response:
        item = _item_id(state, item_id)
        try:
            arr = await run_in_threadpool(store.version_labels, item, version)
        except PixelwiseError as exc:
            raise RequestError(404, str(exc)) from None
        return Response(await run_in_threadpool(_label_png, arr), media_type="image/png")

    @app.post("/api/items/{item_id}/predict")
    async def predict(item_id: str) -> Response:
        item = _item_id(state, item_id)
        arr, u = await run_in_threadpool(state.predict, item)
        headers = {"X-Uncertainty": f"{float(u.mean()):.6f}"} if u is not None else {}
        return Response(
            await run_in_threadpool(_label_png, arr), media_type="image/png", headers=headers
        )

    @app.get("/api/items/{item_id}/uncertainty")
    async def uncertainty(item_id: str) -> Response:
        item = _item_id(state, item_id)
        _, u = await run_in_threadpool(state.predict, item)
        if u is None:
            raise RequestError(422, f"{item.name}: too large for per-pixel probabilities")
        png = await run_in_threadpool(lambda: png_bytes(Image.fromarray(heat_map(u), "RGBA")))
        return Response(png, media_type="image/png")

    @app.get("/api/items/{item_id}/superpixels")
    async def smart(item_id: str) -> Response:
        item = _item_id(state, item_id)
        if not _has_skimage():
            raise RequestError(501, "the smart brush needs scikit-image: pip install scikit-image")
        arr = await run_in_threadpool(store.image, item)
        seg = await run_in_threadpool(superpixels, arr, settings.superpixels)
        packed = np.dstack([seg & 255, (seg >> 8) & 255, (seg >> 16) & 255]).astype(np.uint8)
        return Response(
            await run_in_threadpool(png_bytes, Image.fromarray(packed)), media_type="image/png"
        )

    static = resources.files(__package__) / "static"
    for path, (name, media_type) in _PAGE_FILES.items():
        app.add_api_route(
            path, page_route((static / name).read_bytes(), media_type), methods=["GET"]
        )

    app.add_middleware(Auth, token=settings.token, public=_PUBLIC)
    app.add_middleware(HostCheck, host=settings.host, token=settings.token)
    app.add_middleware(Head)
    return app
