"""The hot routes, ``POST /v1/models/{m}/predict`` (see :mod:`.task_endpoint`) and ``POST
/v2/models/{m}[/versions/{v}]/infer``, as raw ASGI endpoints, and the fast path that answers them
ahead of the framework.

Through FastAPI a request passes about ten layers before its handler (Starlette's error and
exception middleware, FastAPI's telemetry, body-limit and exit-stack middleware, the key check, the
body limit, the router, the route): a fifth of the server's Python time per one-image request
(benchmarks/README.md, "Where a request's CPU goes"). :class:`FastPath` answers a ``POST`` to a hot
route with only what the route needs: the API key check (:meth:`.auth.Gate.refuse`: the same 401s,
counted), the body limit (:mod:`.limits`: the same 413s) and the route's ``{m}``/``{v}`` (Starlette's
own path patterns). The endpoints answer errors as the app does (:func:`.failures.error_response`).
Every other request goes through the framework, where the same endpoints are routes too: other
routes and methods, and, when CORS is on, any request with an ``Origin`` header.

A request waiting for the model is watched for its client going away only once it has waited
:data:`DISCONNECT_POLL_S` (a timer a request, not a task and a poll): then a pending ``receive()``
cancels it on ``http.disconnect``, freeing its queue slots, and it is counted ``disconnected``.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

from starlette.datastructures import QueryParams
from starlette.requests import ClientDisconnect
from starlette.routing import compile_path

from ..errors import InputError
from . import limits, multipart, protocol, task_endpoint
from .batcher import Rows
from .failures import error_response

if TYPE_CHECKING:
    from .app import Server
    from .auth import Gate

#: Seconds a request waits for the model before it watches for its client going away.
DISCONNECT_POLL_S = 0.2


class Reply:
    """A 200 answer as its two ASGI messages: ``headers``, then ``content-length``, then ``body``
    (what Starlette's ``Response`` sends, without building one: this is every inference's answer)."""

    __slots__ = ("headers", "body")

    def __init__(self, body: bytes, headers: dict[str, str]):
        self.headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        self.headers.append((b"content-length", str(len(body)).encode()))
        self.body = body

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


Answer = Callable[[dict, Callable], Awaitable[Reply]]


class Endpoint:
    """A raw ASGI endpoint of ``answer(scope, receive) -> Reply``; an error is answered as the app
    answers it. (An object, not a function, so that a Starlette route calls it as ASGI.)"""

    def __init__(self, answer: Answer):
        self.answer = answer

    async def __call__(self, scope, receive, send) -> None:
        try:
            response = await self.answer(scope, receive)
        except Exception as err:  # noqa: BLE001 - every failure has its answer
            response = error_response(err)
        await response(scope, receive, send)


def _header(scope: dict, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as Starlette's ``Request.headers.get``."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _unless_disconnected(receive, work: Awaitable) -> Any:
    """``await work`` in this task; if it takes longer than :data:`DISCONNECT_POLL_S`, an
    ``http.disconnect`` from ``receive`` cancels it (:class:`ClientDisconnect`)."""
    task = asyncio.current_task()
    watch: asyncio.Future | None = None
    gone = False

    def on_message(message: asyncio.Future) -> None:
        nonlocal gone
        if not message.cancelled() and message.exception() is None and message.result()["type"] == "http.disconnect":
            gone = True
            task.cancel()

    def start_watch() -> None:
        nonlocal watch
        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(on_message)

    timer = asyncio.get_running_loop().call_later(DISCONNECT_POLL_S, start_watch)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientDisconnect() from None
        raise
    finally:
        timer.cancel()
        if watch is not None:
            watch.remove_done_callback(on_message)
            watch.cancel()


async def _all_or_none(works: list[Awaitable]) -> list[Any]:
    """``gather`` that cancels the others as soon as one fails."""
    if len(works) == 1:
        return [await works[0]]
    tasks = [asyncio.ensure_future(w) for w in works]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


def _images(body: bytes, content_type: str) -> list[bytes]:
    """The encoded images of a predict request: the raw body, or every file of a multipart form."""
    if content_type.startswith("multipart/form-data"):
        images = multipart.form_files(body, content_type)
        if not images:
            raise InputError("the multipart form holds no file", fix="send images as file fields")
        return images
    if not body:
        raise InputError("the request body is empty", fix="send an encoded image (PNG, JPEG, ...) as the body")
    return [body]


def hot_routes(server: "Server") -> list[tuple[str, Endpoint]]:
    """(path, endpoint) of each hot route of ``server``, for the router and :class:`FastPath`."""
    max_bytes = server.max_body_bytes

    async def predict(scope: dict, receive) -> Reply:
        model = server.model(scope["path_params"]["m"])
        async with server.accounting(model):
            started = time.perf_counter()
            deadline = server.deadline(started)
            query = scope["query_string"]
            # no query string (the common request): no options and the default view, nothing to parse
            options, view = (task_endpoint.parse_query(QueryParams(query), model) if query
                             else ({}, task_endpoint.View()))
            blobs = _images(await limits.read_body(receive, max_bytes), _header(scope, b"content-type") or "")
            size = sum(map(len, blobs))
            full = view.draw or view.output  # a picture is drawn on the image as sent
            # a large body, or a small PNG of many pixels: decoded in the pool, beside the model
            decoded = (None if server.inline(size) and not task_endpoint.large_png(blobs) else
                       await server.in_pool(task_endpoint.decode, blobs, model.predictors[0], full))
            batcher = server.batchers[model.name]
            works = task_endpoint.works(blobs, options, full, decoded, model.max_batch_size)
            answers = await _unless_disconnected(receive, _all_or_none([batcher.submit(work, deadline)
                                                                         for work in works]))
            predicted = [p for p, _ in answers]
            timing_ms = {"preprocess": max(p.preprocess_s for p in predicted) * 1e3,
                         "queue": max(t.queue for _, t in answers) * 1e3,
                         "compute": max(p.compute_s for p in predicted) * 1e3,
                         "postprocess": max(p.postprocess_s for p in predicted) * 1e3,
                         "batch_sizes": [t.batch_size for (_, t), work in zip(answers, works) for _ in work.blobs]}
            work = (task_endpoint.answer, model, predicted, view, timing_ms, started)
            # a picture to draw and encode is work for the pool whatever the body's size
            body, media_type = await (server.in_pool(*work) if full else server.sized(size, *work))
        return Reply(body, {"content-type": media_type})

    async def infer(scope: dict, receive) -> Reply:
        params = scope["path_params"]
        model = server.model(params["m"], params.get("v"))
        async with server.accounting(model):
            deadline = server.deadline()
            body = await limits.read_body(receive, max_bytes)
            parsed = await server.sized(len(body), protocol.parse_infer_request, body,
                                        _header(scope, b"inference-header-content-length"))
            rows = protocol.check_infer_inputs(model, parsed)
            outputs, _ = await _unless_disconnected(receive, server.batchers[model.name].submit(Rows(rows), deadline))
            content, headers = await server.sized(len(body), protocol.encode_infer_response, model.name, parsed,
                                                  outputs)
        return Reply(content, headers)

    infer_endpoint = Endpoint(infer)
    return [("/v1/models/{m}/predict", Endpoint(predict)), ("/v2/models/{m}/infer", infer_endpoint),
            ("/v2/models/{m}/versions/{v}/infer", infer_endpoint)]


class FastPath:
    """Which requests skip the framework (see the module docstring), and their key and size checks."""

    def __init__(self, routes: Iterable[tuple[str, Endpoint]], gate: "Gate | None", max_bytes: int, cors: bool):
        self.routes = [(compile_path(path)[0], endpoint) for path, endpoint in routes]
        self.gate = gate
        self.max_bytes = max_bytes
        self.cors = cors

    def match(self, scope: dict) -> Endpoint | None:
        """The endpoint that answers ``scope`` directly (its ``path_params`` set), or ``None``: the framework's."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path = scope["path"]
        for pattern, endpoint in self.routes:
            found = pattern.match(path)
            if found is not None:
                break
        else:
            return None
        if self.cors and any(name == b"origin" for name, _ in scope["headers"]):
            return None  # CORS middleware adds its headers to the answer
        scope["path_params"] = found.groupdict()
        return endpoint

    async def answer(self, endpoint: Endpoint, scope: dict, receive, send) -> None:
        """The key check, the declared body size, then ``endpoint``: as the middleware would, in that order."""
        if self.gate is not None:
            refusal = self.gate.refuse(scope["headers"])
            if refusal is not None:
                return await refusal(scope, receive, send)
        if limits.declared_too_large(scope["headers"], self.max_bytes):
            return await limits.refuse(send, self.max_bytes)
        await endpoint(scope, receive, send)
