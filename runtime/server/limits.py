"""A bound on request bodies: ``413`` before reading when ``Content-Length`` is too large, and
:class:`BodyTooLarge` as soon as a streamed (chunked) body passes the limit."""
from __future__ import annotations

import json

from ..errors import InputError


class BodyTooLarge(InputError):
    """A request body over ``--max-body-mb`` (HTTP 413)."""


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than {limit / 2**20:g} MiB, the server's limit",
                        fix="send smaller images (or start the server with a larger --max-body-mb)")


class BodyLimit:
    """ASGI middleware refusing bodies over ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            body = json.dumps({"error": str(_too_large(self.max_bytes))}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, bounded_receive, send)
