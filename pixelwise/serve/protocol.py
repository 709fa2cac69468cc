"""uvicorn's HTTP/1.1 protocol, answering the requests it refuses itself in JSON.

A request that does not parse as HTTP (a malformed request line or header, headers too large) never
reaches the app: uvicorn answers it 400 with the plain text ``Invalid HTTP request received.``.
:class:`JsonErrorsH11Protocol` answers it as the app answers every error, ``{"error": "<one
line>"}`` with ``Content-Type: application/json``; ``pixelwise serve`` runs uvicorn with it
(``uvicorn.run(app, http=JsonErrorsH11Protocol)``).
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["JsonErrorsH11Protocol"]

_BAD_REQUEST = json.dumps(
    {"error": "malformed HTTP request: its request line or headers do not parse"}
).encode()


class JsonErrorsH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a JSON body on the 400 it sends for a malformed request."""

    def send_400_response(self, msg: str) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_BAD_REQUEST)).encode()),
            (b"connection", b"close"),
        ]
        events = (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=_BAD_REQUEST),
            h11.EndOfMessage(),
        )
        for event in events:
            self.transport.write(self.conn.send(event))
        self.transport.close()
