"""The service's ASGI middleware, outermost first: :class:`Observe` (metrics, the catch-all for
unexpected errors, clients that went away, WebSocket handshakes refused), :class:`Head` (``HEAD``
answered as ``GET`` without the body), :class:`HostCheck` (a server without a token answers only to
its own names, against DNS rebinding) and :class:`Auth` (the bearer token). Every answer they make
is JSON ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time

from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import ServeMetrics
from .settings import is_loopback

__all__ = [
    "CLIENT_GONE",
    "HEAD_FLAG",
    "Auth",
    "Head",
    "HostCheck",
    "Observe",
    "error_response",
    "refuse_websocket",
]

log = logging.getLogger("pixelwise.serve")

# The status counted for a request whose client went away before its upload arrived (nginx's
# "client closed request"); never sent, as there is nobody to send it to.
CLIENT_GONE = 499
# Scope key set on a HEAD request run as GET, so that errors name the method the client used.
HEAD_FLAG = "pixelwise.head"


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error answer ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Auth:
    """Every path but the public ones needs ``Authorization: Bearer <token>`` (if there is one)."""

    def __init__(self, app: ASGIApp, token: str | None, public: frozenset[str]):
        self.app = app
        self.token = token.encode() if token else None
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"] in self.public:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = rest.strip()
        if given and hmac.compare_digest(given, self.token):
            await self.app(scope, receive, send)
            return
        reason = "wrong bearer token" if given else "this server needs a bearer token"
        response = error_response(
            401,
            f"{reason} (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="pixelwise"'},
        )
        await response(scope, receive, send)


def host_name(value: str) -> str:
    """The name or address in a ``Host`` header value, without its port, lower case:
    ``[::1]:8000`` → ``::1``, ``LocalHost.:80`` → ``localhost``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


class HostCheck:
    """Without a token, answer only requests whose ``Host`` header names ``localhost``, a loopback
    address or the bound host (any IP address when bound to all of them, ``0.0.0.0`` or ``::``);
    others get 421. A web page from another site whose name was made to resolve to this machine
    (DNS rebinding) sends its own name, so it cannot use the service. A request without ``Host``
    (HTTP/1.0) is not from a browser and passes.

    Args:
        app: the app behind it.
        host: the bound address (``--host``); ``None``: no check.
        token: the server's token; with one, no check (the token guards every endpoint).
    """

    def __init__(self, app: ASGIApp, host: str | None, token: str | None):
        self.app = app
        self.active = host is not None and not token
        self.bound = host_name(host or "")
        try:
            self.any_address = ipaddress.ip_address(self.bound).is_unspecified
        except ValueError:
            self.any_address = self.bound == ""

    def allowed(self, name: str) -> bool:
        """Whether a request naming ``name`` (from :func:`host_name`) is for this server."""
        if name == self.bound or is_loopback(name):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.active:
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == b"host"), None)
        given = raw.decode("latin-1") if raw is not None else None
        if given is None or self.allowed(host_name(given)):
            await self.app(scope, receive, send)
            return
        shown = given.encode("ascii", "backslashreplace").decode()[:100]
        response = error_response(
            421,
            f"Host {shown!r} is not this server: without a token it answers only to localhost, "
            "loopback addresses and its --host (set a token to serve other names)",
        )
        await response(scope, receive, send)


class Head:
    """``HEAD`` is answered as ``GET`` would be (status and headers, ``Content-Length``
    included), without the body."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headless(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", HEAD_FLAG: True}, receive, headless)


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """The service has no WebSocket endpoint: a WebSocket handshake is answered 404 with the JSON
    error where the server can send an HTTP answer to it (ASGI's ``websocket.http.response``
    extension, which uvicorn has), else closed."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    response = error_response(404, f"no such endpoint: {scope['path']} (no WebSocket endpoints)")
    start = {"type": "websocket.http.response.start", "status": 404}
    await send({**start, "headers": response.raw_headers})
    await send({"type": "websocket.http.response.body", "body": response.body})


class Observe:
    """Counts and times every answer, and turns any exception that escaped the app into a logged
    traceback and a bare 500 (the outermost layer under Starlette's own). A client that went away
    before its upload arrived is one line in the log (info) and counted as :data:`CLIENT_GONE`. A
    WebSocket handshake is refused (:func:`refuse_websocket`) and counted as 404."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            self.metrics.observe_request(scope["path"], 404, 0.0)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def observed_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except ClientDisconnect:
            if not started:
                status = CLIENT_GONE
            client = scope.get("client") or ("unknown", 0)
            log.info(
                "%s %s: client %s disconnected before its request arrived",
                scope.get("method"),
                scope.get("path"),
                client[0],
            )
        except Exception:  # noqa: BLE001 - the catch-all: log here, never send a traceback
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await error_response(500, "internal server error")(scope, receive, observed_send)
        finally:
            self.metrics.observe_request(scope["path"], status, time.perf_counter() - start)
