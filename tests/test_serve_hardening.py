"""``pixelwise serve`` against hostile clients (issue 19, items 2, 3 and 7): slow uploads hold no
admission slot, uploads are capped per address and in bytes held, decoding waits for room in a
memory budget and converts 16-bit images without float64 scratch, a client that goes away is one
log line and a 499 in the metrics, uvicorn's own 400 is JSON, ``HEAD`` works, a tokenless server
refuses other ``Host`` names, and ``serve`` refuses a non-loopback address without a token.

Requests that must stall go straight through ASGI (``_Call``) in the TestClient's event loop, from a
client address of the test's choosing. Models are 1×1 convolutions on one thread."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("prometheus_client")

import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import segment_scope  # noqa: E402
from starlette.testclient import WebSocketDenialResponse  # noqa: E402
from test_serve import _image, _metrics, _png  # noqa: E402
from test_serve import seg as seg  # noqa: E402,F401 - fixtures
from test_serve import serve as serve  # noqa: E402,F401
from test_serve import spy as spy  # noqa: E402,F401

from pixelwise.data.io import to_uint8  # noqa: E402
from pixelwise.engine import Segmenter  # noqa: E402
from pixelwise.errors import PixelwiseError  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402
from pixelwise.serve import app as app_module  # noqa: E402
from pixelwise.serve.limits import MemoryBudget, decode, decode_cost  # noqa: E402
from pixelwise.serve.protocol import JsonErrorsH11Protocol  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MIB = 1 << 20


@dataclass
class _Call:
    """One request through ASGI: ``chunks`` of body, then (with ``stall``) nothing until the event
    is set, then a disconnect. ``status`` is None while (or if) nothing was answered."""

    chunks: list[bytes]
    client: str = "127.0.0.1"
    stall: asyncio.Event | None = None
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=lambda: [(b"host", b"127.0.0.1:8000"), (b"content-type", b"image/png")]
    )
    sent: list[dict] = field(default_factory=list)
    receiving: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, app: Callable) -> None:
        chunks = list(self.chunks)

        async def receive() -> dict:
            if chunks:
                body = chunks.pop(0)
                more = bool(chunks) or self.stall is not None
                return {"type": "http.request", "body": body, "more_body": more}
            self.receiving.set()
            if self.stall is not None:
                await self.stall.wait()
            else:
                await asyncio.sleep(60)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            self.sent.append(message)

        scope = {**segment_scope(self.headers), "client": (self.client, 50000)}
        await app(scope, receive, send)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    def error(self) -> str:
        return json.loads(self.body)["error"]


def _in_loop(client: TestClient, work: Callable[[], object]) -> object:
    """Run the coroutine function ``work`` in the TestClient's event loop (where the app runs)."""
    return client.portal.call(work)


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.01)


# ---- item 2: slow uploads --------------------------------------------------------------------------


def test_slow_uploads_hold_no_admission_slot(
    serve: Callable[..., TestClient], seg: Segmenter
) -> None:
    """Capacity 2 (queue 1 + batch 1), 6 clients from 3 addresses stuck mid-upload: a full upload
    is still admitted and answered 200, then the stalled ones go away (499, no slot ever held)."""
    client = serve(queue_size=1, max_batch=1, timeout=30.0)
    service = client.app.state.service
    body = _png(_image(24, 30, seed=7))

    async def work() -> tuple[list[_Call], _Call]:
        gate = asyncio.Event()
        slow = [_Call([body[:10]], client=f"10.0.0.{i % 3}", stall=gate) for i in range(6)]
        tasks = [asyncio.ensure_future(c(client.app)) for c in slow]
        await _until(lambda: all(c.receiving.is_set() for c in slow))
        assert service._admitted == 0 and sum(service.uploads.active.values()) == 6
        good = _Call([body])
        await good(client.app)
        gate.set()
        await asyncio.gather(*tasks)
        return slow, good

    slow, good = _in_loop(client, work)
    assert good.status == 200, good.body
    assert all(c.status is None for c in slow)  # nothing sent to a client that left
    assert service.uploads.active == {} and service.upload_memory.used == 0
    counts = {
        s.labels["status"]: s.value
        for s in _metrics(client)["pixelwise_requests"]
        if s.name == "pixelwise_requests_total" and s.labels["endpoint"] == "/v1/segment"
    }
    assert counts == {"200": 1, "499": 6}


def test_uploads_per_client_address_are_capped_the_rest_wait(
    serve: Callable[..., TestClient], seg: Segmenter
) -> None:
    """Two uploads read at once from one address: a third waits, unread, until one of them is
    done (then 200); another address is not held up."""
    client = serve(max_uploads_per_client=2, timeout=5.0)
    service = client.app.state.service
    body = _png(_image(24, 30, seed=7))

    async def work() -> tuple[_Call, _Call, list[_Call]]:
        gate = asyncio.Event()
        slow = [_Call([body[:10]], client="10.0.0.9", stall=gate) for _ in range(2)]
        tasks = [asyncio.ensure_future(c(client.app)) for c in slow]
        await _until(lambda: all(c.receiving.is_set() for c in slow))
        third, other = _Call([body], client="10.0.0.9"), _Call([body], client="10.0.0.10")
        waiting = asyncio.ensure_future(third(client.app))
        await other(client.app)
        await asyncio.sleep(0.2)
        assert third.status is None and service.uploads.active == {"10.0.0.9": 2}
        gate.set()  # the two slow ones go away: the third is read
        await asyncio.gather(waiting, *tasks)
        return third, other, slow

    third, other, slow = _in_loop(client, work)
    assert other.status == 200 and third.status == 200, third.body
    assert service.uploads.active == {} and service.uploads._slots == {}


def test_upload_bytes_held_at_once_are_bounded(
    serve: Callable[..., TestClient], seg: Segmenter
) -> None:
    """Budget 128 KiB (the floor: one largest upload of 64 KiB + the multipart slack): two uploads
    holding 60 KiB each leave no room for a third's 20 KiB, which gets 503."""
    client = serve(max_upload_mb=64 / 1024, upload_memory_mb=0.01)
    service = client.app.state.service
    assert service.upload_memory.total == 128 * 1024
    filler = bytes(60 * 1024)

    async def work() -> _Call:
        gate = asyncio.Event()
        slow = [_Call([filler], client=f"10.0.1.{i}", stall=gate) for i in range(2)]
        tasks = [asyncio.ensure_future(c(client.app)) for c in slow]
        await _until(lambda: all(c.receiving.is_set() for c in slow))
        assert service.upload_memory.used == 120 * 1024
        third = _Call([bytes(20 * 1024)], client="10.0.1.9")
        await third(client.app)
        gate.set()
        await asyncio.gather(*tasks)
        return third

    third = _in_loop(client, work)
    assert third.status == 503 and "--upload-memory-mb" in third.error(), third.body
    assert service.upload_memory.used == 0
    r = client.post("/v1/segment", content=_png(_image()), headers={"content-type": "image/png"})
    assert r.status_code == 200


# ---- item 3: decoding ------------------------------------------------------------------------------


def _float64_scaling(arr: np.ndarray) -> np.ndarray:
    """The conversion to_uint8 replaced, kept as the reference it must equal bit for bit."""
    if np.issubdtype(arr.dtype, np.integer):
        top = 255 if arr.dtype.itemsize == 1 else 65535
        return (arr.astype(np.float64) * (255.0 / top)).round().clip(0, 255).astype(np.uint8)
    return np.nan_to_num(arr.astype(np.float64)).clip(0, 255).round().astype(np.uint8)


def test_to_uint8_equals_the_float64_scaling_bit_for_bit() -> None:
    every16 = np.arange(65536, dtype=np.uint16)
    for arr in (every16, every16.astype(">u2"), every16.reshape(256, 256)):
        assert np.array_equal(to_uint8(arr), _float64_scaling(arr))
    rng = np.random.default_rng(0)
    for dtype in (np.int8, np.int16, np.int32, np.uint32, np.int64, np.uint64):
        info = np.iinfo(dtype)
        edges = [v for v in (info.min, info.max, 0, 128, 65535, 65536) if info.min <= v <= info.max]
        arr = np.concatenate(
            [
                rng.integers(info.min, info.max, 50_000, dtype=dtype, endpoint=True),
                np.arange(0, min(info.max, 70_000), 7, dtype=dtype),
                np.array(edges, dtype=dtype),
            ]
        )
        assert np.array_equal(to_uint8(arr), _float64_scaling(arr)), dtype
    specials = [np.nan, np.inf, -np.inf, -0.0, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 1e30]
    for dtype in (np.float16, np.float32, np.float64):
        arr = np.concatenate([rng.normal(100, 200, 50_000), np.arange(0, 256, 0.125), specials])
        with np.errstate(over="ignore"):  # 1e30 is inf in float16
            arr = arr.astype(dtype)
        assert np.array_equal(to_uint8(arr), _float64_scaling(arr)), dtype


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_to_uint8_allocates_no_float64_scratch(dtype: type) -> None:
    """A 1024×1024 conversion allocates its uint8 result and at most one working copy of the input
    (the float64 conversion allocated two 8 MiB arrays)."""
    arr = np.random.default_rng(0).integers(0, 65536, (1024, 1024)).astype(dtype)
    tracemalloc.start()
    try:
        out = to_uint8(arr)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and out.shape == arr.shape
    assert peak <= out.nbytes + arr.nbytes + 256 * 1024, peak


def _png16(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    ramp = (np.arange(h * w, dtype=np.uint32) * 7 % 65536).astype(np.uint16).reshape(h, w)
    Image.fromarray(ramp).save(buf, format="PNG")
    return buf.getvalue()


def test_decode_cost_is_read_from_the_header() -> None:
    data = _png16(64, 96)
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    pixels = 64 * 96
    # Pillow's buffer, a copy and NumPy's copy at 2 bytes each, the 8-bit plane; then held: the
    # image (3 bytes a pixel), its class map and its mask (1 each)
    assert decode_cost(data, max_pixels=1 << 30) == (pixels * (3 * 2 + 1 + 5), pixels * 5)
    assert decode_cost(data, max_pixels=1 << 30, channels=1) == (pixels * 10, pixels * 3)
    rgb = _png(_image(10, 20))
    assert decode_cost(rgb, max_pixels=1 << 30) == (200 * (3 * 4 + 5), 1000)
    image = decode(data, max_pixels=1 << 30)
    assert image.shape == (64, 96, 3) and image.nbytes == pixels * 3


def test_memory_budget_waits_in_order_and_gives_back_on_cancel() -> None:
    async def main() -> None:
        budget = MemoryBudget(100, "--x")
        assert await budget.take(60) == 60
        big = asyncio.ensure_future(budget.take(70))
        small = asyncio.ensure_future(budget.take(10))  # fits, but waits behind the big one
        await asyncio.sleep(0.01)
        assert not big.done() and not small.done() and not budget.try_take(1)
        budget.give(60)
        assert await big == 70 and await small == 10 and budget.used == 80
        late = asyncio.ensure_future(budget.take(50))
        await asyncio.sleep(0.01)
        late.cancel()  # gives up waiting: takes nothing
        with pytest.raises(asyncio.CancelledError):
            await late
        budget.give(80)
        assert budget.used == 0
        assert await budget.take(100) == 100
        gone = asyncio.ensure_future(budget.take(5))
        await asyncio.sleep(0.01)
        gone.cancel()
        budget.give(100)  # meets the cancelled waiter before it runs its own clean-up
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert budget.used == 0 and budget.waiting == 0
        assert await budget.take(500) == 100  # more than the whole: all of it, when free
        budget.give(100)

    asyncio.run(main())


def test_decoding_waits_for_the_memory_budget(
    serve: Callable[..., TestClient], seg: Segmenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget with room for one 64×64 RGB decode at a time: four concurrent requests decode one
    after another and all succeed; one that cannot get room within --timeout gets 503."""
    cost, _ = decode_cost(_png(_image(64, 64)), max_pixels=1 << 30)
    running, most = 0, 0
    gate = threading.Event()
    gate.set()
    lock = threading.Lock()

    def slow_decode(data: bytes, **kw: object) -> np.ndarray:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(10)
        time.sleep(0.05)
        with lock:
            running -= 1
        return decode(data, **kw)

    monkeypatch.setattr(app_module, "decode", slow_decode)
    client = serve(decode_memory_mb=1.5 * cost / MIB, timeout=5.0)
    service = client.app.state.service
    bodies = [_png(_image(64, 64, seed=i)) for i in range(4)]

    async def together() -> list[_Call]:
        calls = [_Call([b], client=f"10.0.2.{i}") for i, b in enumerate(bodies)]
        await asyncio.gather(*(c(client.app) for c in calls))
        return calls

    calls = _in_loop(client, together)
    assert [c.status for c in calls] == [200] * 4 and most == 1
    assert service.decode_memory.used == 0
    gate.clear()
    quick = serve(decode_memory_mb=1.5 * cost / MIB, timeout=0.3)

    async def starved() -> _Call:
        first = _Call([bodies[0]], client="10.0.3.1")
        task = asyncio.ensure_future(first(quick.app))
        await _until(lambda: quick.app.state.service.decode_memory.used > 0)
        second = _Call([bodies[1]], client="10.0.3.2")
        await second(quick.app)
        gate.set()
        await task
        return second

    second = _in_loop(quick, starved)
    assert second.status == 503 and "--decode-memory-mb" in second.error(), second.body
    assert quick.app.state.service.decode_memory.used == 0


# ---- item 7: the edges -----------------------------------------------------------------------------


def test_a_client_gone_mid_upload_is_one_info_line_and_a_499(
    serve: Callable[..., TestClient], seg: Segmenter, caplog: pytest.LogCaptureFixture
) -> None:
    client = serve()
    gone = _Call([_png(_image())[:50]], client="10.0.4.1", stall=asyncio.Event())
    gone.stall.set()  # disconnect as soon as the first chunk was read
    with caplog.at_level(logging.DEBUG, logger="pixelwise.serve"):
        _in_loop(client, lambda: gone(client.app))
    assert gone.status is None
    records = [r for r in caplog.records if r.name == "pixelwise.serve"]
    assert len(records) == 1 and records[0].levelno == logging.INFO, records
    assert records[0].exc_info is None and "disconnected" in records[0].getMessage()
    assert "10.0.4.1" in records[0].getMessage()
    statuses = {
        s.labels["status"]
        for s in _metrics(client)["pixelwise_requests"]
        if s.labels.get("endpoint") == "/v1/segment"
    }
    assert statuses == {"499"}
    assert client.app.state.service.upload_memory.used == 0


def test_head_is_answered_as_get_without_a_body(serve: Callable[..., TestClient]) -> None:
    client = serve()
    for path in ("/", "/static/app.js", "/healthz", "/readyz", "/v1/models", "/metrics"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        if path != "/metrics":  # the metrics change between the two requests
            assert int(head.headers["content-length"]) == len(get.content), path
    head = client.head("/v1/segment")
    assert head.status_code == 405 and head.content == b"" and head.headers["allow"] == "POST"
    r = client.request("PUT", "/")
    assert r.status_code == 405 and r.json() == {"error": "method PUT is not allowed on /"}


@pytest.mark.parametrize(
    ("bound", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "localhost:8000", True),
        ("127.0.0.1", "LocalHost.", True),
        ("127.0.0.1", "[::1]:8000", True),
        ("127.0.0.1", "127.0.0.2", True),
        ("127.0.0.1", "evil.example:8000", False),
        ("127.0.0.1", "localhost.evil.example", False),
        ("127.0.0.1", "192.168.1.5:8000", False),
        ("127.0.0.1", "", False),
        ("192.168.1.5", "192.168.1.5:8000", True),
        ("192.168.1.5", "10.1.1.1:8000", False),
        ("myhost.lan", "MyHost.lan:8000", True),
        ("0.0.0.0", "192.168.1.5:8000", True),
        ("0.0.0.0", "[fe80::1]:8000", True),
        ("0.0.0.0", "evil.example", False),
    ],
)
def test_a_tokenless_server_answers_only_its_own_host_names(
    serve: Callable[..., TestClient], bound: str, host: str, allowed: bool
) -> None:
    client = serve(host=bound)
    r = client.get("/v1/models", headers={"host": host})
    if allowed:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 421 and r.headers["content-type"] == "application/json"
    assert "is not this server" in r.json()["error"] and "\n" not in r.json()["error"]
    assert client.get("/", headers={"host": host}).status_code == 421  # the page too
    # with a token the token is the guard: any Host passes
    guarded = serve(host=bound, token="t")
    ok = guarded.get("/v1/models", headers={"host": host, "authorization": "Bearer t"})
    assert ok.status_code == 200


def _free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def live(seg: Segmenter) -> Iterator[int]:
    """The app under uvicorn with :class:`JsonErrorsH11Protocol` on a free loopback port."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    settings = ServeSettings(host="127.0.0.1", max_batch=1)
    config = uvicorn.Config(
        create_app(seg, settings), log_level="critical", http=JsonErrorsH11Protocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)
    sock.close()


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nxy",
    ],
    ids=["request-line", "header-line", "no-host", "two-lengths"],
)
def test_requests_uvicorn_refuses_get_a_json_400(live: int, request_bytes: bytes) -> None:
    status, headers, body = _raw(live, request_bytes)
    assert status == 400 and headers["content-type"] == "application/json", body
    error = json.loads(body)["error"]
    assert "malformed HTTP request" in error and "\n" not in error
    close = b"Connection: close\r\n\r\n"
    status, headers, body = _raw(live, b"HEAD / HTTP/1.1\r\nHost: localhost\r\n" + close)
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, _, body = _raw(live, b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n" + close)
    assert status == 421 and "is not this server" in json.loads(body)["error"]


def test_a_websocket_handshake_gets_a_json_404(live: int, serve: Callable[..., TestClient]) -> None:
    """No endpoint is a WebSocket; uvicorn answered a handshake 403 with no body."""
    handshake = (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status, headers, body = _raw(live, handshake)
    assert status == 404 and headers["content-type"] == "application/json", body
    assert json.loads(body) == {"error": "no such endpoint: / (no WebSocket endpoints)"}
    with pytest.raises(WebSocketDenialResponse) as info:
        with serve().websocket_connect("/v1/segment"):
            pass
    assert info.value.status_code == 404 and "no WebSocket" in info.value.json()["error"]


def test_serve_refuses_a_public_address_without_a_token_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PIXELWISE_TOKEN"}
    r = subprocess.run(
        [sys.executable, "-m", "pixelwise", "serve", "--model", "nope/missing.ckpt"]
        + ["--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: --host 0.0.0.0 is not a loopback address")
    assert "--insecure-no-token" in line  # and the model was not loaded (missing.ckpt not named)


def test_settings_refuse_bad_budgets() -> None:
    for kw in (
        {"max_uploads_per_client": -1},
        {"upload_memory_mb": 0},
        {"decode_memory_mb": float("nan")},
    ):
        with pytest.raises(PixelwiseError, match=next(iter(kw))):
            ServeSettings(**kw)
    assert ServeSettings(max_uploads_per_client=0).max_uploads_per_client == 0  # no cap
    big = ServeSettings(max_upload_mb=512, upload_memory_mb=256)
    assert big.upload_memory_bytes == 512 * MIB + 64 * 1024  # room for one largest upload
