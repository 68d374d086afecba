"""A bound on request bodies: ``413`` before reading when ``Content-Length`` is too large, and
:class:`BodyTooLarge` as soon as a streamed (chunked) body passes the limit.

:class:`BodyLimit` applies it to every route as ASGI middleware; the hot routes' fast path
(:mod:`.hot_routes`) calls :func:`declared_too_large`, :func:`refuse` and :func:`read_body` itself.
"""
from __future__ import annotations

import json

from starlette.requests import ClientDisconnect

from ..errors import InputError


class BodyTooLarge(InputError):
    """A request body over ``--max-body-mb`` (HTTP 413)."""


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than {limit / 2**20:g} MiB, the server's limit",
                        fix="send smaller images (or start the server with a larger --max-body-mb)")


def declared_too_large(headers: list[tuple[bytes, bytes]], max_bytes: int) -> bool:
    """Whether the ASGI ``headers`` declare a ``Content-Length`` over ``max_bytes``."""
    declared = dict(headers).get(b"content-length")
    return declared is not None and declared.isdigit() and int(declared) > max_bytes


async def refuse(send, max_bytes: int) -> None:
    """Answer 413 ``{"error": ...}`` and close the connection (the body is left unread)."""
    body = json.dumps({"error": str(_too_large(max_bytes))}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive, max_bytes: int) -> bytes:
    """The whole request body from ASGI ``receive``: :class:`BodyTooLarge` once it passes ``max_bytes``,
    :class:`~starlette.requests.ClientDisconnect` when the client goes first (as Starlette's ``Request.body``)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        if not message.get("more_body", False):
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


class BodyLimit:
    """ASGI middleware refusing bodies over ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if declared_too_large(scope["headers"], self.max_bytes):
            return await refuse(send, self.max_bytes)
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
