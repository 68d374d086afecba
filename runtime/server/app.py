"""The FastAPI app over a :class:`~.repository.ModelRepository`: routes, batchers, error answers.

Routes: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}`` (metadata),
``/v2/models/{m}/ready``, ``/v2/models/{m}/config``, ``/v2/models/{m}/stats``, ``POST
/v2/models/{m}/infer`` (each also under ``/v2/models/{m}/versions/1/...``); ``GET /v1/models``,
``POST /v1/models/{m}/predict`` (see :mod:`.task_endpoint`); ``GET /metrics``; ``GET /`` (the page).

Errors answer ``{"error": "<cause> (<fix>)"}``: 400 bad input, 401 no valid API key (:mod:`.auth`),
404 unknown model, 413 body too large, 503 queue full or shutting down (with ``Retry-After``), 504
deadline passed, 500 otherwise.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, AsyncIterator, Awaitable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..errors import InputError
from . import auth, multipart, protocol, task_endpoint
from .failures import FAILURES, error_message, failure
from .batcher import Batcher
from .limits import BodyLimit
from .metrics import ModelMetrics, ServerMetrics
from .repository import ModelRepository, ServedModel, UnknownModel

log = logging.getLogger(__name__)

#: Seconds a client is told to wait before retrying after a 503.
RETRY_AFTER_S = 1
#: How often a waiting request checks whether its client has gone, in seconds.
DISCONNECT_POLL_S = 0.2
#: Request bodies up to this many bytes are parsed/decoded (and answered) on the event loop: for
#: them the hop to the thread pool and back costs more CPU than the work (benchmarks/README.md,
#: "Where a request's CPU goes"); larger ones go to the pool, where decoding runs beside the loop.
INLINE_BYTES = 64 * 1024


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Limits of a server; the batch size per model lives in the repository (``ServedModel``)."""

    max_queue_delay_ms: float = 0.0
    max_queue: int = 256
    timeout_s: float = 30.0
    max_body_mb: float = 32.0
    #: who may use the server (see :mod:`.auth`): a key file, browser origins, metrics without a key
    api_key_file: str | None = None
    cors_origins: tuple[str, ...] = ()
    public_metrics: bool = False
    #: TLS of the gRPC service, from the files HTTP's (uvicorn's) uses: PEM certificate chain and key
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: ``host:port`` of the gRPC service (:mod:`.grpc_service`, the ``grpc`` extra); None: HTTP only
    grpc_address: str | None = None


def error_response(err: BaseException) -> JSONResponse:
    status, _ = failure(err)
    message = error_message(err)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Server:
    """The state behind the routes: models, their batchers and metrics, the pre/post-processing pool."""

    def __init__(self, repository: ModelRepository, settings: ServerSettings):
        self.repository = repository
        self.settings = settings
        self.metrics = ServerMetrics()
        self.model_metrics = {model.name: self.metrics.model(model.name) for model in repository}
        self.batchers: dict[str, Batcher] = {}
        self.pool: ThreadPoolExecutor | None = None
        self.grpc = None  # the grpc.aio.Server when settings.grpc_address is set
        self.gate = (auth.Gate(settings.api_key_file, self.metrics.registry, settings.public_metrics)
                     if settings.api_key_file else None)  # who may use the server (HTTP and gRPC)
        self.ready = False

    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="visionrt-prepost")
        for model in self.repository:
            self.batchers[model.name] = Batcher([p.infer for p in model.predictors], model.max_batch_size,
                                                self.settings.max_queue_delay_ms / 1e3, self.settings.max_queue,
                                                self.model_metrics[model.name])
        if self.settings.grpc_address:
            from . import grpc_service

            self.grpc = await grpc_service.start(self, self.settings.grpc_address,
                                                 int(self.settings.max_body_mb * 2**20))
        self.ready = True

    async def stop(self) -> None:
        """Finish what is queued (and the gRPC calls in flight), then release the models."""
        self.ready = False
        if self.grpc is not None:
            await self.grpc.stop(grace=self.settings.timeout_s)
        await asyncio.gather(*(batcher.close() for batcher in self.batchers.values()))
        self.pool.shutdown(wait=True)
        self.repository.close()

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model ``name`` (:class:`UnknownModel` unless served, at version 1 or none)."""
        if version not in (None, "", "1"):
            raise UnknownModel(f"model '{name}' has no version '{version}'", fix="use version 1 or none")
        return self.repository.get(name)

    def in_pool(self, func, *args) -> Awaitable:
        return asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    async def sized(self, size: int, func, *args) -> Any:
        """``func(*args)`` on the event loop for a request body of ``size`` ≤ :data:`INLINE_BYTES`
        bytes, else in the pre/post-processing pool."""
        return func(*args) if size <= INLINE_BYTES else await self.in_pool(func, *args)

    def deadline(self) -> float:
        """The ``time.perf_counter()`` instant by which a request starting now must be answered."""
        return time.perf_counter() + self.settings.timeout_s

    @contextlib.asynccontextmanager
    async def accounting(self, model: ServedModel) -> AsyncIterator[None]:
        """Count the request as a success (with its end-to-end time) or a failure by reason."""
        metrics: ModelMetrics = self.model_metrics[model.name]
        started = time.perf_counter()
        try:
            yield
        except BaseException as err:
            metrics.failed("disconnected" if isinstance(err, asyncio.CancelledError) else failure(err)[1])
            raise
        metrics.succeeded(time.perf_counter() - started)


async def _unless_disconnected(request: Request, work: Awaitable) -> Any:
    """``await work``, cancelled (freeing its queue slots) when the client goes away first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnect()
    finally:
        task.cancel()


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


async def _images(request: Request) -> list[bytes]:
    """The encoded images of a predict request: the raw body, or every file of a multipart form."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        images = multipart.form_files(await request.body(), content_type)
        if not images:
            raise InputError("the multipart form holds no file", fix="send images as file fields")
        return images
    body = await request.body()
    if not body:
        raise InputError("the request body is empty", fix="send an encoded image (PNG, JPEG, ...) as the body")
    return [body]


def create_app(repository: ModelRepository, settings: ServerSettings = ServerSettings()) -> FastAPI:
    server = Server(repository, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        yield
        await server.stop()

    app = FastAPI(title="visionrt", version=protocol.VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    @app.exception_handler(Exception)
    async def _any_error(request: Request, err: Exception) -> JSONResponse:
        return error_response(err)

    for kind, _, _ in FAILURES:
        app.add_exception_handler(kind, _any_error)

    @app.exception_handler(HTTPException)
    async def _no_route(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"{err.detail}: {request.method} {request.url.path}"},
                            status_code=err.status_code, headers=err.headers)

    def model_routes(suffix: str, methods: list[str]):
        """Register a handler at ``/v2/models/{m}{suffix}`` and its ``/versions/{v}`` twin."""
        def register(handler):
            app.add_api_route("/v2/models/{m}" + suffix, handler, methods=methods)
            app.add_api_route("/v2/models/{m}/versions/{v}" + suffix, handler, methods=methods)
            return handler
        return register

    get_model = server.model

    # health and metadata -----------------------------------------------------------------
    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "visionrt", "version": protocol.VERSION, "extensions": protocol.EXTENSIONS}

    @model_routes("", ["GET"])
    async def model_metadata(m: str, v: str | None = None) -> dict:
        return protocol.model_metadata(get_model(m, v))

    @model_routes("/ready", ["GET"])
    async def model_ready(m: str, v: str | None = None) -> JSONResponse:
        get_model(m, v)
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    @model_routes("/config", ["GET"])
    async def model_config(m: str, v: str | None = None) -> dict:
        return protocol.model_config(get_model(m, v), settings.max_queue_delay_ms)

    @model_routes("/stats", ["GET"])
    async def model_stats(m: str, v: str | None = None) -> dict:
        return server.metrics.stats(get_model(m, v).name)

    # inference --------------------------------------------------------------------------
    async def infer(request: Request) -> Response:
        """A plain Starlette route, like ``predict``: the v2 hot path."""
        model = get_model(request.path_params["m"], request.path_params.get("v"))
        async with server.accounting(model):
            deadline = server.deadline()
            body = await request.body()
            parsed = await server.sized(len(body), protocol.parse_infer_request, body,
                                        request.headers.get(protocol.HEADER_LENGTH))
            rows = protocol.check_infer_inputs(model, parsed)
            outputs, _ = await _unless_disconnected(request, server.batchers[model.name].submit(rows, deadline))
            content, headers = await server.sized(len(body), protocol.encode_infer_response, model.name, parsed,
                                                  outputs)
        return Response(content, headers=headers)

    app.add_route("/v2/models/{m}/infer", infer, methods=["POST"])
    app.add_route("/v2/models/{m}/versions/{v}/infer", infer, methods=["POST"])

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"models": [{"name": model.name, "task": model.manifest.task, "backend": model.backend,
                            "options": model.options, "classes": len(model.manifest.classes),
                            "output_image": model.predictors[0].task.image_result} for model in repository]}

    async def predict(request: Request) -> Response:
        """A plain Starlette route (no FastAPI dependency solving): this is the hot path."""
        model = get_model(request.path_params["m"])
        async with server.accounting(model):
            started = time.perf_counter()
            deadline = started + settings.timeout_s
            options, view = task_endpoint.parse_query(request.query_params, model)
            blobs = await _images(request)
            size = sum(map(len, blobs))
            begun = time.perf_counter()
            images, chunks = await server.sized(size, task_endpoint.decode, blobs, model)
            prepared = time.perf_counter()
            batcher = server.batchers[model.name]
            answers = await _unless_disconnected(request, _all_or_none([batcher.submit(rows, deadline)
                                                                         for rows in chunks]))
            timings = [timing for _, timing in answers]
            timing_ms = {"preprocess": (prepared - begun) * 1e3, "queue": max(t.queue for t in timings) * 1e3,
                         "compute": max(t.compute for t in timings) * 1e3,
                         "batch_sizes": [t.batch_size for (_, t), rows in zip(answers, chunks) for _ in rows]}
            work = (task_endpoint.answer, model, [outputs for outputs, _ in answers], images, options, view,
                    timing_ms, started)
            # a picture to draw and encode is work for the pool whatever the body's size
            body, media_type = await (server.in_pool(*work) if view.draw or view.output else server.sized(size, *work))
        return Response(body, media_type=media_type)

    app.add_route("/v1/models/{m}/predict", predict, methods=["POST"])

    # metrics and the page -----------------------------------------------------------------
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.collected()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8"))

    app.add_middleware(BodyLimit, max_bytes=int(settings.max_body_mb * 2**20))
    auth.protect(app, server.gate, settings.cors_origins)
    return app
