"""``pixelwise serve`` through FastAPI's TestClient: every endpoint, the PNG and JSON answers against
the prediction path, every kind of bad input (and serving on after it), the token, a full queue,
the timeout, micro-batching, the metrics text and the catch-all for unexpected errors.

Models are 1×1 convolutions (a slow one sleeps in its forward pass) on one thread."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient  # noqa: E402
from helpers import colour_model, segment_scope  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from pixelwise.engine import Segmenter, predict_files  # noqa: E402
from pixelwise.engine.checkpoint import ModelMeta  # noqa: E402
from pixelwise.engine.inference import InferenceConfig  # noqa: E402
from pixelwise.engine.regions import rle_decode  # noqa: E402
from pixelwise.engine.tta import TTAConfig  # noqa: E402
from pixelwise.errors import PixelwiseError  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402
from pixelwise.serve.batching import MicroBatcher, QueueFull  # noqa: E402
from pixelwise.serve.limits import MULTIPART_SLACK  # noqa: E402

COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
NAMES = ["bg", "red", "green"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _meta(in_channels: int = 3, mean: float = 0.5, std: float = 0.25) -> ModelMeta:
    return ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=in_channels,
        class_names=NAMES,
        colors=COLORS,
        mean=[mean] * in_channels,
        std=[std] * in_channels,
        dataset="toy",
    )


class _Spy(nn.Module):
    """A 1×1 convolution that records batch sizes, can sleep, and can fail."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(in_channels, 3, 1)
        self.delay = 0.0
        self.error: Exception | None = None
        self.batches: list[int] = []
        self.started = threading.Event()
        self.finished = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        self.started.set()
        if self.delay:
            time.sleep(self.delay)
        self.finished += 1
        if self.error is not None:
            raise self.error
        return self.conv(x)


_colour_model = colour_model


def _image(h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(image: np.ndarray, **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", **save)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A 1×1 PNG whose header claims ``width × height`` pixels (a decompression bomb's header)."""
    data = bytearray(_png(np.zeros((1, 1, 3), np.uint8)))
    struct.pack_into(">II", data, 16, width, height)  # IHDR data starts at byte 16
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture
def spy() -> _Spy:
    return _Spy()


@pytest.fixture
def seg(spy: _Spy) -> Segmenter:
    return Segmenter(spy, _meta(), device="cpu")


@pytest.fixture
def serve(seg: Segmenter) -> Iterator[Callable[..., TestClient]]:
    """``serve(**settings)`` → a started TestClient around ``seg``; closed after the test."""
    clients: list[TestClient] = []

    def _serve(segmenter: Segmenter | Callable[[], Segmenter] = seg, **kw: object) -> TestClient:
        client = TestClient(create_app(segmenter, ServeSettings(**kw)))
        client.__enter__()
        clients.append(client)
        return client

    yield _serve
    for client in clients:
        client.__exit__(None, None, None)


def _post(client: TestClient, body: bytes, query: str = "", **headers: str) -> object:
    headers = {"content-type": "image/png", **headers}
    return client.post(f"/v1/segment{query}", content=body, headers=headers)


def _good(client: TestClient, seg: Segmenter) -> None:
    """A good request still succeeds, with the right mask."""
    image = _image(24, 30, seed=7)
    r = _post(client, _png(image))
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), seg.predict(image))


def _metrics(client: TestClient, **headers: str) -> dict[str, list]:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


# ---- the answers ---------------------------------------------------------------------------------


def test_png_answer_is_the_prediction_of_the_cli_path(
    serve: Callable[..., TestClient], seg: Segmenter, tmp_path: Path
) -> None:
    client = serve()
    image = _image()
    raw = _post(client, _png(image))
    form = client.post("/v1/segment", files={"file": ("x.png", _png(image), "image/png")})
    octet = _post(client, _png(image), **{"content-type": "application/octet-stream"})
    (tmp_path / "x.png").write_bytes(_png(image))
    predict_files(seg, [str(tmp_path / "x.png")], tmp_path / "out", num_workers=0, progress=False)
    cli = np.asarray(Image.open(tmp_path / "out" / "x.png"))
    for r in (raw, form, octet):
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        mask = Image.open(io.BytesIO(r.content))
        assert mask.mode == "P" and mask.size == (50, 40)
        assert np.array_equal(np.asarray(mask), seg.predict(image))
        assert np.array_equal(np.asarray(mask), cli)
        assert mask.getpalette()[:9] == [v for c in COLORS for v in c]


def test_json_classes_and_regions_of_a_hand_made_mask(serve: Callable[..., TestClient]) -> None:
    seg = Segmenter(_colour_model(), _meta(mean=0.0, std=1.0), device="cpu")
    client = serve(seg)
    r, g = (255, 0, 0), (0, 255, 0)
    image = np.zeros((6, 8, 3), np.uint8)
    for y, x in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2)]:  # red, 8-connected through (1,1)-(2,2)
        image[y, x] = r
    for y, x in [(4, 4), (5, 5), (5, 6)]:  # a second red region
        image[y, x] = r
    image[0:2, 6:8] = g
    res = _post(client, _png(image), "?format=json").json()
    assert res["width"] == 8 and res["height"] == 6 and res["model"] == "model"
    assert res["classes"] == [
        {"index": 0, "name": "bg", "pixels": 36, "fraction": 36 / 48},
        {"index": 1, "name": "red", "pixels": 8, "fraction": 8 / 48},
        {"index": 2, "name": "green", "pixels": 4, "fraction": 4 / 48},
    ]
    assert res["regions"] == [
        {"class": "bg", "index": 0, "bbox": [0, 0, 8, 6], "area": 36},
        {"class": "red", "index": 1, "bbox": [0, 0, 3, 3], "area": 5},
        {"class": "green", "index": 2, "bbox": [6, 0, 8, 2], "area": 4},
        {"class": "red", "index": 1, "bbox": [4, 4, 7, 6], "area": 3},
    ]
    assert res["regions_total"] == 4
    assert res["inference"] == {"crf": False, "tta": False, "tile": "auto"}
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["mask"]["data"]))))
    assert res["mask"]["encoding"] == "png_base64" and np.array_equal(mask, seg.predict(image))
    rle = _post(client, _png(image), "?format=json&mask=rle").json()["mask"]
    assert rle["encoding"] == "rle" and [c["index"] for c in rle["data"]] == [0, 1, 2]
    for c in rle["data"]:
        assert c["size"] == [6, 8]
        assert np.array_equal(rle_decode(c), mask == c["index"])
    # column-major: 6 columns of 0, then columns 6 and 7 hold green in rows 0-1 of 6
    assert rle["data"][2]["counts"] == [36, 2, 4, 2, 4]


def test_overlay_as_png_and_in_json(serve: Callable[..., TestClient]) -> None:
    client = serve()
    image = _image(30, 40)
    over = _post(client, _png(image), "?overlay=true")
    assert over.status_code == 200 and over.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(over.content))
    assert picture.mode == "RGB" and picture.width > 40  # the image and a legend beside it
    res = _post(client, _png(image), "?format=json&overlay=1").json()
    assert res["overlay"]["encoding"] == "png_base64" and res["overlay"]["data"]
    assert "overlay" not in _post(client, _png(image), "?format=json").json()


def test_per_request_options_are_applied(serve: Callable[..., TestClient], seg: Segmenter) -> None:
    client = serve()
    image = _image(20, 24)
    res = _post(client, _png(image), "?format=json&tta=true&tile=whole").json()
    assert res["inference"] == {"crf": False, "tta": True, "tile": "whole"}
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(res["mask"]["data"]))))
    with_tta = Segmenter(seg.model, seg.meta, device="cpu", tta=TTAConfig())
    assert np.array_equal(mask, with_tta.predict(image))
    assert seg.tta is None  # the served segmenter itself is unchanged


def test_grayscale_model_and_exif_orientation(serve: Callable[..., TestClient]) -> None:
    seg = Segmenter(_Spy(in_channels=1), _meta(in_channels=1), device="cpu")
    client = serve(seg)
    image = _image(20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    r = _post(client, _png(image, exif=exif.tobytes()))
    assert r.status_code == 200, r.text
    mask = np.asarray(Image.open(io.BytesIO(r.content)))
    upright = np.asarray(Image.fromarray(image).transpose(Image.Transpose.ROTATE_270).convert("L"))
    assert mask.shape == (30, 20)
    assert np.array_equal(mask, seg.predict(upright[..., None]))


def test_models_health_ready_openapi_and_page(serve: Callable[..., TestClient]) -> None:
    client = serve(model_name="toy-model", max_batch=4)
    models = client.get("/v1/models").json()
    (m,) = models["models"]
    assert m["name"] == "toy-model" and m["arch"] == "unet" and m["output"] == "softmax"
    assert m["classes"] == [
        {"index": i, "name": n, "color": c}
        for i, (n, c) in enumerate(zip(NAMES, COLORS, strict=True))
    ]
    assert m["input_size"] is None and m["in_channels"] == 3
    assert models["limits"]["max_batch"] == 4
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/segment", "/v1/models", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*", "application/octet-stream"} <= set(body)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/app.js"' in page.text and "http" not in page.text.split("<body>")[1]
    for path in ("/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_readyz_is_503_while_the_model_loads(
    serve: Callable[..., TestClient], seg: Segmenter
) -> None:
    gate = threading.Event()

    def load() -> Segmenter:
        gate.wait(10)
        return seg

    client = serve(load)
    assert client.get("/healthz").status_code == 200
    r = client.get("/readyz")
    assert r.status_code == 503 and "not ready" in r.json()["error"] and r.headers["retry-after"]
    assert _post(client, _png(_image())).status_code == 503
    gate.set()
    for _ in range(100):
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.05)
    assert client.get("/readyz").json() == {"status": "ready", "model": "model"}
    _good(client, seg)


def test_readyz_after_a_failed_load(serve: Callable[..., TestClient]) -> None:
    def load() -> Segmenter:
        raise PixelwiseError("nope.ckpt: checkpoint not found")

    client = serve(load)
    for _ in range(100):
        if "failed" in client.get("/readyz").json()["error"]:
            break
        time.sleep(0.02)
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json() == {"error": "the model failed to load"}


# ---- bad input -------------------------------------------------------------------------------------

_TRUNCATED = _png(_image(64, 64))[:300]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"", "image/png", 400, "empty"),
        (b"this is not an image at all", "image/png", 415, "not an image"),
        (_TRUNCATED, "image/png", 400, "truncated"),
        (_png_claiming(5000, 5000), "image/png", 413, "--max-pixels"),
        (_png_claiming(100_000, 100_000), "image/png", 413, "pixels"),
        (b"{}", "application/json", 415, "Content-Type"),
        (b"--x\r\n\r\n", "multipart/form-data; boundary=x", 400, "multipart"),
    ],
    ids=["empty", "not-image", "truncated", "pixels", "bomb", "json", "bad-multipart"],
)
def test_bad_uploads_are_refused_and_serving_goes_on(
    serve: Callable[..., TestClient],
    seg: Segmenter,
    body: bytes,
    content_type: str,
    status: int,
    words: str,
) -> None:
    client = serve()
    r = _post(client, body, **{"content-type": content_type})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error and "\n" not in error and "Traceback" not in r.text
    _good(client, seg)


def test_multipart_without_a_file_field(serve: Callable[..., TestClient], seg: Segmenter) -> None:
    client = serve()
    r = client.post("/v1/segment", files={"image": ("x.png", _png(_image()), "image/png")})
    assert r.status_code == 400 and "'file'" in r.json()["error"]
    r = client.post("/v1/segment", data={"file": "not a file"}, files={"other": ("a", b"b")})
    assert r.status_code == 400
    _good(client, seg)


def test_uploads_over_the_limit_are_413(serve: Callable[..., TestClient], seg: Segmenter) -> None:
    client = serve(max_upload_mb=2048 / (1 << 20))  # 2048 bytes
    big = _png(_image(64, 64))
    assert 2048 < len(big) < 2048 + MULTIPART_SLACK
    r = _post(client, big)  # Content-Length over the limit: refused before reading
    assert r.status_code == 413 and f"is {len(big)} bytes" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = client.post("/v1/segment", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "ran past the limit of 2048 bytes" in r.json()["error"]
    # multipart: the body may be MULTIPART_SLACK larger; the file part itself is counted
    r = client.post("/v1/segment", files={"file": ("x.png", big, "image/png")})
    assert r.status_code == 413 and f"is {len(big)} bytes" in r.json()["error"]
    small = _png(np.zeros((8, 8, 3), np.uint8))
    assert _post(client, small).status_code == 200


def test_a_lying_content_length_is_refused(serve: Callable[..., TestClient]) -> None:
    client = serve()
    r = _post(client, _png(_image()), **{"content-length": "lots"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?format=xml", "format='xml'"),
        ("?mask=zip&format=json", "mask='zip'"),
        ("?tile=diagonal", "tile='diagonal'"),
        ("?crf=maybe", "crf='maybe'"),
        ("?overlay=sometimes", "overlay="),
        ("?fromat=json", "unknown option 'fromat'"),
        ("?mask=rle", "mask=rle needs format=json"),
    ],
)
def test_unsupported_options_are_422(
    serve: Callable[..., TestClient], seg: Segmenter, query: str, words: str
) -> None:
    client = serve()
    r = _post(client, _png(_image()), query)
    assert r.status_code == 422 and words in r.json()["error"], r.text
    _good(client, seg)


def test_unknown_paths_and_methods(serve: Callable[..., TestClient]) -> None:
    client = serve()
    assert client.get("/v2/segment").json() == {"error": "no such endpoint: /v2/segment"}
    r = client.get("/v1/segment")
    assert r.status_code == 405 and "GET" in r.json()["error"]


def test_an_unexpected_error_is_a_bare_500_and_logged(
    serve: Callable[..., TestClient], spy: _Spy, seg: Segmenter, caplog: pytest.LogCaptureFixture
) -> None:
    client = serve()
    spy.error = RuntimeError("secret internals /home/x")
    with caplog.at_level(logging.ERROR, logger="pixelwise.serve"):
        r = _post(client, _png(_image()))
    assert r.status_code == 500 and r.json() == {"error": "internal server error"}
    assert "secret" not in r.text and "Traceback" not in r.text
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert logged and "secret internals" in str(logged[0].exc_info[1])
    spy.error = PixelwiseError("a 9×9 image is too large for the dense CRF")
    r = _post(client, _png(_image()))
    assert r.status_code == 422 and "dense CRF" in r.json()["error"]
    spy.error = None
    _good(client, seg)


# ---- token -----------------------------------------------------------------------------------------


def test_token_is_required_everywhere_but_healthz_and_the_page(
    serve: Callable[..., TestClient], seg: Segmenter
) -> None:
    client = serve(token="s3cret")
    ok = {"authorization": "Bearer s3cret"}
    for path in ("/v1/models", "/readyz", "/metrics", "/openapi.json"):
        r = client.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "bearer token" in r.json()["error"]
        assert client.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"authorization": "Basic s3cret"}).status_code == 401
        assert client.get(path, headers=ok).status_code == 200
    assert _post(client, _png(_image())).status_code == 401
    assert _post(client, _png(_image()), **ok).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 200  # static page: no data; its API calls need the token
    assert client.get("/static/app.js").status_code == 200
    assert _metrics(client, **ok)["pixelwise_requests"]


def test_empty_token_means_no_token(serve: Callable[..., TestClient]) -> None:
    assert serve(token="").get("/v1/models").status_code == 200


# ---- under load ------------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def test_a_full_queue_answers_503_with_retry_after(
    serve: Callable[..., TestClient], spy: _Spy, seg: Segmenter
) -> None:
    client = serve(max_batch=1, queue_size=1, batch_wait_ms=0)
    service = client.app.state.service
    spy.delay = 0.6
    body = _png(_image())
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_post, client, body)
        _wait_for(spy.started.is_set)  # the first is being predicted
        second = pool.submit(_post, client, body)
        _wait_for(lambda: service.batcher.depth == 1)  # the second waits in the queue
        r = _post(client, body)
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1 and "--queue-size" in r.json()["error"]
        assert first.result().status_code == 200 and second.result().status_code == 200
    spy.delay = 0.0
    _good(client, seg)
    samples = _metrics(client)["pixelwise_requests"]
    assert any(s.labels == {"endpoint": "/v1/segment", "status": "503"} for s in samples)


def test_timeout_answers_504_and_serving_goes_on(
    serve: Callable[..., TestClient], spy: _Spy, seg: Segmenter
) -> None:
    client = serve(timeout=0.2)
    spy.delay = 0.6
    r = _post(client, _png(_image()))
    assert r.status_code == 504 and "0.2 s" in r.json()["error"]
    _wait_for(lambda: spy.finished >= 1)  # the batch already running finishes
    spy.delay = 0.0
    _good(client, seg)


def test_stalled_upload_answers_408_and_frees_its_slot(
    serve: Callable[..., TestClient], seg: Segmenter
) -> None:
    """A client that starts an upload and stops sending gets 408 after --timeout; its admission
    slot is given back and serving goes on."""
    client = serve(timeout=0.3, queue_size=1, max_batch=1)
    sent: list[dict] = []

    async def stalled() -> None:
        calls = 0

        async def receive() -> dict:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": _png(_image())[:20], "more_body": True}
            await asyncio.sleep(60)  # never sends the rest
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        headers = [(b"host", b"testserver"), (b"content-type", b"image/png")]
        await client.app(segment_scope(headers), receive, send)

    t0 = time.perf_counter()
    client.portal.call(stalled)
    assert time.perf_counter() - t0 < 10
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert start["status"] == 408, body
    assert "did not arrive within 0.3 s" in body.decode()
    assert client.app.state.service._admitted == 0
    _good(client, seg)


def test_concurrent_requests_are_micro_batched(
    serve: Callable[..., TestClient], spy: _Spy, seg: Segmenter
) -> None:
    client = serve(max_batch=8, batch_wait_ms=50)
    images = [_image(32, 48, seed=i) for i in range(6)]
    spy.delay = 0.3
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda im: _post(client, _png(im)), images))
    spy.delay = 0.0
    batches = list(spy.batches)
    assert max(batches) > 1 and sum(batches) == 6
    for image, r in zip(images, answers, strict=True):  # every answer is its own image's prediction
        assert r.status_code == 200
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content))), seg.predict(image))
    families = _metrics(client)
    sizes = {s.name: s.value for s in families["pixelwise_batch_size"]}
    assert sizes["pixelwise_batch_size_count"] == len(batches)
    assert sizes["pixelwise_batch_size_sum"] == 6 > len(batches)


def test_metrics_parse_as_prometheus_text(serve: Callable[..., TestClient]) -> None:
    client = serve()
    _post(client, _png(_image()))
    _post(client, b"junk")
    client.get("/healthz")
    client.get("/../../etc/passwd")
    families = _metrics(client)
    assert {
        "pixelwise_requests",
        "pixelwise_request_seconds",
        "pixelwise_queue_depth",
        "pixelwise_batch_size",
        "pixelwise_batch_seconds",
    } <= set(families)
    counts = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in families["pixelwise_requests"]
        if s.name == "pixelwise_requests_total"
    }
    assert counts[("/v1/segment", "200")] == 1 and counts[("/v1/segment", "415")] == 1
    assert counts[("/healthz", "200")] == 1
    assert all(e in {"/v1/segment", "/healthz", "other", "/metrics"} for e, _ in counts)
    (depth,) = families["pixelwise_queue_depth"]
    assert depth.value == 0
    latency = [s for s in families["pixelwise_request_seconds"] if s.name.endswith("_count")]
    assert any(s.labels["endpoint"] == "/v1/segment" and s.value == 2 for s in latency)


def test_two_apps_keep_their_own_metrics(serve: Callable[..., TestClient]) -> None:
    a, b = serve(), serve()
    a.get("/healthz")
    counts = [
        s for s in _metrics(b)["pixelwise_requests"] if s.labels.get("endpoint") == "/healthz"
    ]
    assert counts == []


# ---- the batcher on its own ------------------------------------------------------------------------


def test_batcher_batches_only_equal_options_and_sizes() -> None:
    calls: list[tuple[list[tuple[int, ...]], InferenceConfig]] = []
    gate = threading.Event()

    def predict(images: list[np.ndarray], options: InferenceConfig) -> list[int]:
        gate.wait(5)
        calls.append(([im.shape for im in images], options))
        return [int(im[0, 0, 0]) for im in images]

    plain = InferenceConfig(crf=False)
    tta = InferenceConfig(crf=False, tta=TTAConfig())
    jobs = [
        (np.full((4, 4, 3), 0, np.uint8), plain),  # taken alone while the gate is shut
        (np.full((4, 4, 3), 1, np.uint8), plain),
        (np.full((4, 4, 3), 2, np.uint8), tta),
        (np.full((4, 6, 3), 3, np.uint8), plain),
        (np.full((4, 4, 3), 4, np.uint8), plain),
        (np.full((4, 4, 3), 5, np.uint8), tta),
    ]

    async def main() -> list[int]:
        batcher = MicroBatcher(predict, max_batch=8, wait_s=0.05, queue_size=16)
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit(*jobs[0]))
            await asyncio.sleep(0.2)  # the worker holds job 0 in predict
            rest = [asyncio.ensure_future(batcher.submit(*job)) for job in jobs[1:]]
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(first, *rest)
        finally:
            batcher.stop()

    assert asyncio.run(main()) == [0, 1, 2, 3, 4, 5]  # each result goes to its own request
    for shapes, _ in calls:
        assert len(set(shapes)) == 1
    assert [(len(s), o) for s, o in calls] == [(1, plain), (2, plain), (1, plain), (2, tta)]


def test_batcher_queue_is_bounded_and_a_cancelled_job_leaves_it() -> None:
    gate = threading.Event()

    def predict(images: list[np.ndarray], options: InferenceConfig) -> list[int]:
        gate.wait(5)
        return [0] * len(images)

    opts = InferenceConfig(crf=False)
    image = np.zeros((2, 2, 3), np.uint8)

    async def main() -> None:
        batcher = MicroBatcher(predict, max_batch=1, wait_s=0.0, queue_size=2)
        batcher.start()
        try:
            running = asyncio.ensure_future(batcher.submit(image, opts))
            await asyncio.sleep(0.1)
            waiting = [asyncio.ensure_future(batcher.submit(image, opts)) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert batcher.depth == 2
            with pytest.raises(QueueFull) as info:
                await batcher.submit(image, opts)
            assert info.value.retry_after >= 1
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(waiting[0], 0.01)
            assert batcher.depth == 1  # the timed-out request left the queue
            gate.set()
            assert await running == 0 and await waiting[1] == 0
        finally:
            batcher.stop()

    asyncio.run(main())


def test_settings_refuse_bad_values() -> None:
    for kw in ({"max_batch": 0}, {"queue_size": 1.5}, {"timeout": 0}, {"max_upload_mb": -1}):
        with pytest.raises(PixelwiseError, match=next(iter(kw))):
            ServeSettings(**kw)
    assert ServeSettings(token="").token is None
    assert ServeSettings(max_upload_mb=1).max_upload_bytes == 1 << 20


# ---- the command ----------------------------------------------------------------------------------


def test_serve_command_builds_the_app_and_refuses_no_token_beyond_loopback(
    monkeypatch: pytest.MonkeyPatch, seg: Segmenter, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    from pixelwise.engine import predictor
    from pixelwise.serve.cli import serve_command
    from pixelwise.serve.protocol import JsonErrorsH11Protocol

    runs: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: runs.append({"app": app, **kw}))
    loaded: list[dict] = []

    def fake_load(path: str, **kw: object) -> Segmenter:
        loaded.append({"path": path, **kw})
        return seg

    monkeypatch.setattr(predictor.Segmenter, "from_checkpoint", staticmethod(fake_load))
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(PixelwiseError, match="not a loopback address and there is no token"):
            serve_command(model="runs/x/best.ckpt", host=host, port=9999, token=None)
    assert runs == [] and loaded == []  # refused before loading anything
    with caplog.at_level(logging.WARNING, logger="pixelwise.serve"):
        serve_command(
            model="runs/x/best.ckpt",
            host="0.0.0.0",
            port=9999,
            token=None,
            tile="whole",
            insecure_no_token=True,
        )
    assert "without a token" in caplog.text
    (run,) = runs
    assert (run["host"], run["port"], run["workers"]) == ("0.0.0.0", 9999, 1)
    assert run["http"] is JsonErrorsH11Protocol
    assert loaded[0]["path"] == "runs/x/best.ckpt" and loaded[0]["config"].tiling.mode == "whole"
    # the model's checked precision unless --amp says otherwise
    assert loaded[0]["config"].amp == "model"
    with TestClient(run["app"], base_url="http://127.0.0.1:9999") as client:
        assert client.get("/v1/models").json()["models"][0]["name"] == "best.ckpt"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pixelwise.serve"):
        serve_command(model="camvid", host="::1", port=9999, token=None)
        serve_command(model="camvid", host="0.0.0.0", port=9999, token="t", amp="off")
    assert "without a token" not in caplog.text
    assert loaded[-1]["config"].amp == "off"
    with pytest.raises(PixelwiseError, match="max_batch"):
        serve_command(model="camvid", max_batch=0)


def test_serve_command_line_errors_are_one_line() -> None:
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pixelwise", "serve", "--model", "nope/missing.ckpt"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error:") and "missing.ckpt" in line
