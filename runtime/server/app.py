"""The FastAPI app over a :class:`~.repository.ModelRepository`: routes, batchers, error answers.

Routes: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}`` (metadata),
``/v2/models/{m}/ready``, ``/v2/models/{m}/config``, ``/v2/models/{m}/stats``, ``POST
/v2/models/{m}/infer`` (each also under ``/v2/models/{m}/versions/1/...``); ``GET /v1/models``,
``POST /v1/models/{m}/predict`` (see :mod:`.task_endpoint`); ``GET /metrics``; ``GET /`` (the page).
The two ``POST`` routes are raw ASGI endpoints that :class:`App` answers ahead of the framework's
middleware (:mod:`.hot_routes`).

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
from typing import Any, Awaitable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from . import auth, protocol
from .failures import FAILURES, error_response, failure
from .batcher import Batcher
from .hot_routes import FastPath, hot_routes
from .limits import BodyLimit
from .metrics import ModelMetrics, ServerMetrics
from .repository import ModelRepository, ServedModel, UnknownModel

log = logging.getLogger(__name__)

#: Request bodies up to this many bytes are parsed (and answered) on the event loop, and a predict
#: request's images decoded on the model's thread with its batch: for them the hop to the thread pool
#: and back costs more CPU than the work (benchmarks/README.md, "Where a request's CPU goes"); larger
#: ones go to the pool, where decoding runs beside the loop and the model.
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

    @property
    def max_body_bytes(self) -> int:
        return int(self.settings.max_body_mb * 2**20)

    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="visionrt-prepost")
        for model in self.repository:
            self.batchers[model.name] = Batcher(model.predictors, model.max_batch_size,
                                                self.settings.max_queue_delay_ms / 1e3, self.settings.max_queue,
                                                self.model_metrics[model.name])
        if self.settings.grpc_address:
            from . import grpc_service

            self.grpc = await grpc_service.start(self, self.settings.grpc_address, self.max_body_bytes)
        self.ready = True

    async def stop(self) -> None:
        """Finish what is queued (and the gRPC calls in flight), then release the models."""
        self.ready = False
        if self.grpc is not None:
            await self.grpc.stop(grace=self.settings.timeout_s)
        await asyncio.gather(*(batcher.close() for batcher in self.batchers.values()))
        await asyncio.to_thread(self.pool.shutdown, wait=True)  # the loop answers what the pool finishes
        self.repository.close()

    def model(self, name: str, version: str | None = None) -> ServedModel:
        """The served model ``name`` (:class:`UnknownModel` unless served, at version 1 or none)."""
        if version not in (None, "", "1"):
            raise UnknownModel(f"model '{name}' has no version '{version}'", fix="use version 1 or none")
        return self.repository.get(name)

    def in_pool(self, func, *args) -> Awaitable:
        return asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    @staticmethod
    def inline(size: int) -> bool:
        """Whether work on a request body of ``size`` bytes is done where it is (≤ :data:`INLINE_BYTES`),
        rather than in the pre/post-processing pool beside the event loop and the model."""
        return size <= INLINE_BYTES

    async def sized(self, size: int, func, *args) -> Any:
        """``func(*args)`` on the event loop for a request body of ``size`` ≤ :data:`INLINE_BYTES`
        bytes, else in the pre/post-processing pool."""
        return func(*args) if self.inline(size) else await self.in_pool(func, *args)

    def deadline(self, started: float | None = None) -> float:
        """The ``time.perf_counter()`` instant by which a request that started at ``started`` (a
        ``time.perf_counter()`` instant; default: now) must be answered."""
        return (time.perf_counter() if started is None else started) + self.settings.timeout_s

    def accounting(self, model: ServedModel) -> "Accounting":
        """``async with`` it around a request: counted as a success (with its end-to-end time) or a
        failure by reason."""
        return Accounting(self.model_metrics[model.name])


class Accounting:
    """See :meth:`Server.accounting` (a class, not a generator: it is on every request's path)."""

    __slots__ = ("metrics", "started")

    def __init__(self, metrics: ModelMetrics):
        self.metrics = metrics
        self.started = time.perf_counter()

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind, err: BaseException | None, traceback) -> bool:
        if err is None:
            self.metrics.succeeded(time.perf_counter() - self.started)
        else:
            self.metrics.failed("disconnected" if isinstance(err, asyncio.CancelledError) else failure(err)[1])
        return False


class App(FastAPI):
    """FastAPI, with the hot routes answered ahead of its middleware when :attr:`fast_path` matches."""

    fast_path: FastPath | None = None

    async def __call__(self, scope, receive, send) -> None:
        endpoint = self.fast_path.match(scope) if self.fast_path is not None else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
        else:
            await self.fast_path.answer(endpoint, scope, receive, send)


def create_app(repository: ModelRepository, settings: ServerSettings = ServerSettings()) -> App:
    server = Server(repository, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        yield
        await server.stop()

    app = App(title="visionrt", version=protocol.VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)
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

    # inference (the hot routes) ----------------------------------------------------------
    routes = hot_routes(server)
    for path, endpoint in routes:
        app.add_route(path, endpoint, methods=["POST"])
    app.fast_path = FastPath(routes, server.gate, server.max_body_bytes, cors=bool(settings.cors_origins))

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"models": [{"name": model.name, "task": model.manifest.task, "backend": model.backend,
                            "options": model.options, "classes": len(model.manifest.classes),
                            "output_image": model.predictors[0].task.image_result} for model in repository]}

    # metrics and the page -----------------------------------------------------------------
    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.collected()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8"))

    app.add_middleware(BodyLimit, max_bytes=server.max_body_bytes)
    auth.protect(app, server.gate, settings.cors_origins)
    return app
