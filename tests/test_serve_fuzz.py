"""Fuzz of ``pixelwise serve``: no request, however malformed, gets a 5xx answer.

Two fuzzers, both in-process against the ASGI app around a 1×1 convolution, one request at a time
(so 503 and 504, the only 5xx the service means to send, cannot occur either):

* *schema-driven* — schemathesis reads ``/openapi.json`` and generates requests for every operation
  in it: valid and invalid option values, unknown options, methods the path does not allow, bodies
  of every declared content type (multipart, ``image/*``, octet-stream). Each answer must be no 5xx
  and must match the schema: a documented status code and content type, and JSON bodies (the
  ``format=json`` answer, ``/v1/models``, errors) that validate against their declared models.
  Schemathesis' "schema-valid request rejected" check is left out: the schema cannot say that the
  bytes must be an image, nor that ``mask=rle`` needs ``format=json``.
* *raw* — hypothesis, for every path the app serves (also the web page, which is not in the schema)
  and an unknown one: any method, query strings of option names with valid or junk values or raw
  junk, content types, ``Authorization`` headers right, wrong and malformed, and bodies that are
  empty, random bytes, real images of many formats and modes (palette, 16-bit, float, CMYK, LAB,
  with alpha...), those images truncated or with bytes flipped, and multipart forms around them.
  Every answer must be no 5xx, every error a JSON ``{"error": "<one line>"}``, and the raw fuzz
  runs once against an RGB model and once against a grayscale one.

What the fuzz found is pinned below it as a plain test (a Content-Length of non-ASCII digits).

Bounded: at most 50 examples per operation (schema) or per path (raw), images of at most 80 × 80
pixels (the app's limit is 64 × 64: larger ones test the 413), a deadline per example, and no
example database written to disk. About 10 s on two CPU cores.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

pytest.importorskip("fastapi")
pytest.importorskip("python_multipart")
pytest.importorskip("prometheus_client")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import segment_scope  # noqa: E402

from pixelwise.engine import Segmenter  # noqa: E402
from pixelwise.engine.checkpoint import ModelMeta  # noqa: E402
from pixelwise.serve import ServeSettings, create_app  # noqa: E402

try:
    import schemathesis
except ImportError:  # the test extra installs it; without it the raw fuzz still runs
    schemathesis = None

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning:PIL\\..*"),  # Pillow on damaged images
]

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPTIONS = ("format", "mask", "overlay", "crf", "tta", "tile")
PATHS = (
    "/v1/segment",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/",
    "/static/app.js",
    "/static/style.css",
    "/no/such/path",
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")

# Pillow formats and the modes each writes (checked: every pair saves and reads back).
FORMAT_MODES = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "BMP": ("1", "L", "P", "RGB"),
    "GIF": ("L", "P", "RGB"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "I;16", "F", "PA"),
    "WEBP": ("RGB", "RGBA"),
    "PPM": ("1", "L", "RGB", "I", "F"),
    "TGA": ("L", "LA", "P", "RGB", "RGBA"),
    "ICO": ("L", "RGBA"),
}

# Deadline per example: generous, the machine may be busy; a hang still fails (and the server's
# own timeout, below, answers 504 first, which fails too).
EXAMPLE_DEADLINE = timedelta(seconds=20)
FUZZ_SETTINGS = settings(
    max_examples=50,
    deadline=EXAMPLE_DEADLINE,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,  # schemathesis filters its draws
        HealthCheck.function_scoped_fixture,
    ],
)


def _segmenter(in_channels: int = 3) -> Segmenter:
    with torch.random.fork_rng():  # seeded weights, the global generator left as it was
        torch.manual_seed(0)
        conv = nn.Conv2d(in_channels, 3, 1)
    meta = ModelMeta(
        arch="unet",
        num_classes=3,
        in_channels=in_channels,
        class_names=["bg", "red", "green"],
        colors=[[0, 0, 0], [255, 0, 0], [0, 255, 0]],
        mean=[0.5] * in_channels,
        std=[0.25] * in_channels,
        dataset="toy",
    )
    return Segmenter(conv, meta, device="cpu")


def _app(in_channels: int = 3) -> FastAPI:
    settings = ServeSettings(token=TOKEN, timeout=15.0, max_upload_mb=1.0, max_pixels=64 * 64)
    return create_app(_segmenter(in_channels), settings)


def _assert_no_server_error(status: int, method: str, url: str, body: bytes) -> None:
    assert status < 500, f"{method} {url} answered {status}: {body[:300]!r}"


# ---- schema-driven ------------------------------------------------------------------------------

if schemathesis is not None:
    # Built at import, as schemathesis needs the schema to generate the tests. The app starts (its
    # worker thread) on the first request; schemathesis ends its lifespan when the process exits.
    APP = _app()
    SCHEMA = schemathesis.openapi.from_dict(APP.openapi())

    @SCHEMA.parametrize()
    @FUZZ_SETTINGS
    def test_openapi_fuzz(case: schemathesis.Case) -> None:
        response = case.call(app=APP, headers=AUTH)
        _assert_no_server_error(response.status_code, case.method, case.path, response.content)
        case.validate_response(
            response,
            excluded_checks=[schemathesis.checks.positive_data_acceptance],
            headers=AUTH,
        )

else:

    def test_openapi_fuzz() -> None:
        pytest.skip("schemathesis is not installed (pip install -e '.[test]')")


# ---- raw ----------------------------------------------------------------------------------------


def _mischief(draw: st.DrawFn, share: int) -> bool:
    """True for about ``share`` draws in ten (shrinking towards False: the well-formed request)."""
    return draw(st.integers(0, 9)) >= 10 - share


@st.composite
def _image_bytes(draw: st.DrawFn) -> bytes:
    """A small real image in one of :data:`FORMAT_MODES`, sometimes with an EXIF orientation."""
    fmt = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    side = st.integers(60, 80) if _mischief(draw, 1) else st.integers(1, 40)  # over 64²: 413
    w, h = draw(side), draw(side)
    seed = draw(st.integers(0, 2**16))
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    if mode in ("I", "I;16", "F"):
        im = Image.fromarray(rgb[..., 0].astype(np.int32) * 257).convert(mode)
    elif mode != "RGB":
        im = im.convert(mode)
    save: dict[str, object] = {}
    if fmt in ("JPEG", "PNG", "TIFF", "WEBP") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation; 0 and 9 are out of range
        save["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save)
    return buf.getvalue()


@st.composite
def _damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, or with a few bytes overwritten."""
    if draw(st.booleans()):
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


# What a URL may hold: no control characters, nothing UTF-8 cannot encode (surrogates).
_PRINTABLE = st.characters(codec="utf-8", min_codepoint=32, exclude_characters="\x7f")
_IMAGES = _image_bytes()
_BOOLS = ("true", "false", "1", "0", "yes", "no", "on", "off")
_GOOD_VALUES = {
    "format": ("png", "json"),
    "mask": ("png", "rle"),
    "overlay": _BOOLS,
    "crf": _BOOLS,
    "tta": _BOOLS,
    "tile": ("auto", "whole", "slide"),
}
_JUNK_VALUES = st.one_of(
    st.sampled_from(["", "TRUE", "null", "-1", "1e309", "nan", "[]", "png,json", "slide "]),
    st.text(_PRINTABLE, max_size=20),
)
_ASCII_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_JUNK_CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "image/anything",
            "multipart/form-data",  # no boundary
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/json",
            "IMAGE/PNG; charset=utf-8",
            ";",
        ]
    ),
    _ASCII_TEXT,
)
_JUNK_AUTHORIZATIONS = st.one_of(
    st.sampled_from(["Bearer", "Bearer ", "bearer " + TOKEN, "Basic Zm9vOmJhcg==", "Bearer x"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
)


def _query(draw: st.DrawFn) -> list[tuple[str, str]] | str:
    """Options with good values mostly; sometimes junk values, unknown names or a raw string."""
    if _mischief(draw, 1):
        return draw(st.text(_PRINTABLE, max_size=60))  # sent as it is (httpx quotes what it must)
    names = draw(st.lists(st.sampled_from(OPTIONS), max_size=len(OPTIONS)))
    query = []
    for name in names:
        junk = _mischief(draw, 1)
        value = draw(_JUNK_VALUES if junk else st.sampled_from(_GOOD_VALUES[name]))
        query.append((name, value))
    if ("mask", "rle") in query and not _mischief(draw, 2):  # mostly with the format it needs
        query = [(k, v) for k, v in query if k != "format"] + [("format", "json")]
    if _mischief(draw, 1):
        query.append((draw(st.text(_PRINTABLE, min_size=1, max_size=10)), draw(_JUNK_VALUES)))
    return query


def _body(draw: st.DrawFn) -> bytes:
    """A real image mostly; sometimes a damaged one, random bytes or nothing."""
    kind = draw(st.integers(0, 9))
    if kind < 6:
        return draw(_IMAGES)
    if kind < 8:
        return draw(_IMAGES.flatmap(_damaged))
    return draw(st.binary(max_size=2048)) if kind == 8 else b""


@st.composite
def _requests(draw: st.DrawFn, path: str) -> dict[str, object]:
    """Keyword arguments of one ``TestClient.request`` call to ``path``: mostly well-formed, each
    part (method, options, token, content type, body) sometimes wrong on its own."""
    method = "POST" if path == "/v1/segment" else "GET"
    if _mischief(draw, 2):
        method = draw(st.sampled_from(METHODS))
    query = _query(draw)
    url = path + ("?" + query if isinstance(query, str) else "")
    headers: dict[str, bytes | str] = {}
    kw: dict[str, object] = {"method": method, "url": url, "headers": headers}
    if isinstance(query, list):
        kw["params"] = query
    if not _mischief(draw, 2):
        headers["Authorization"] = AUTH["Authorization"]
    elif draw(st.booleans()):
        headers["Authorization"] = draw(_JUNK_AUTHORIZATIONS).encode("latin-1")
    if method in ("GET", "HEAD", "OPTIONS", "DELETE") and not _mischief(draw, 2):
        return kw
    body = _body(draw)
    if _mischief(draw, 3):  # a well-formed multipart form around the body
        field = "file" if not _mischief(draw, 2) else draw(st.sampled_from(["image", "files", ""]))
        name = draw(st.text(max_size=20))
        kw["files"] = {field: (name, body, draw(st.sampled_from(["image/png", "text/plain"])))}
        return kw
    kw["content"] = body
    if _mischief(draw, 2):
        headers["Content-Type"] = draw(st.none() | _JUNK_CONTENT_TYPES)  # none: no header at all
    else:
        headers["Content-Type"] = draw(st.sampled_from(["image/png", "application/octet-stream"]))
    if headers.get("Content-Type") is None:
        headers.pop("Content-Type")
    if _mischief(draw, 1):  # a declared length that is wrong or no number (ASCII: see below)
        headers["Content-Length"] = draw(st.integers(0, 10**12).map(str) | _ASCII_TEXT)
    return kw


@pytest.fixture(scope="module", params=[3, 1], ids=["rgb", "gray"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with TestClient(_app(request.param), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", PATHS)
def test_raw_fuzz(client: TestClient, path: str) -> None:
    @FUZZ_SETTINGS
    @given(kw=_requests(path))
    def run(kw: dict[str, object]) -> None:
        r = client.request(**kw)  # type: ignore[arg-type]
        _assert_no_server_error(r.status_code, str(kw["method"]), str(kw["url"]), r.content)
        if r.status_code >= 400 and kw["method"] != "HEAD":
            assert r.headers["content-type"] == "application/json", r.headers
            error = json.loads(r.content)
            assert set(error) == {"error"} and isinstance(error["error"], str), error
            assert error["error"] and "\n" not in error["error"], error

    run()
    r = client.get("/healthz")  # still serving, and still predicting
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    image = io.BytesIO()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(image, format="PNG")
    r = client.post("/v1/segment", content=image.getvalue(), headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text


def _asgi_post(app: object, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
    """The status of ``POST /v1/segment`` sent straight through ASGI, with the header bytes as they
    are (a test client re-encodes them), as a server that passes any header on would send it."""
    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    asyncio.run(app(segment_scope(headers), receive, send))  # type: ignore[operator]
    return int(messages[0]["status"])  # type: ignore[call-overload]


def test_content_length_of_non_ascii_digits_is_a_400(client: TestClient) -> None:
    headers = [
        (b"authorization", AUTH["Authorization"].encode()),
        (b"content-type", b"image/png"),
        (b"content-length", b"\xb2"),
    ]
    assert _asgi_post(client.app, headers, b"x") == 400
