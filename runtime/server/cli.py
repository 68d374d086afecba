"""The ``serve`` command: ``visionrt serve MODEL_DIR [NAME=MODEL_DIR ...] [options]``."""
from __future__ import annotations

import argparse
import os
import signal
from typing import Callable

from ..argtypes import non_negative_float, non_negative_int, port, positive_float, positive_int
from ..backends import RUNTIME_BACKENDS
from ..precision import PRECISIONS


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``serve`` through ``command(name, func, help) -> parser`` (the root CLI's registry)."""
    parser = command("serve", serve, "serve models over HTTP: KServe v2, a task endpoint, metrics and a page")
    add_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL_DIR",
                        help="model directories to serve, each DIR or NAME=DIR (name: the directory's name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=port, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--backend", default="onnxruntime", choices=RUNTIME_BACKENDS,
                        help="backend of every model (auto: the fastest measured CPU backend; default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="which of the model's ONNX files to run (export writes them; default: %(default)s)")
    parser.add_argument("--max-batch-size", type=positive_int, default=32,
                        help="most images one execution merges (capped at an engine's profile; default: %(default)s)")
    parser.add_argument("--max-queue-delay-ms", type=non_negative_float, default=0.0,
                        help="longest a queued request waits for a fuller batch (default: %(default)s)")
    parser.add_argument("--max-queue", type=positive_int, default=256,
                        help="requests queued per model before 503 (default: %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="server processes sharing the port, each with its own sessions and batchers "
                             "(default: 1)")
    parser.add_argument("--instances", type=positive_int, default=1,
                        help="sessions per model side by side, in each worker (default: 1)")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="intra-op threads per session (default: 0, the backend's choice; with --workers: "
                             "cores / (workers x instances), at least 1)")
    parser.add_argument("--timeout-s", type=positive_float, default=30.0,
                        help="deadline of a request; past it: 504 (default: %(default)s)")
    parser.add_argument("--max-body-mb", type=positive_float, default=32.0,
                        help="largest request body; above it: 413 (default: %(default)s)")
    parser.add_argument("--grpc-port", type=port,
                        help="also serve the KServe v2 gRPC service (Triton's clients) on this port (grpc extra)")
    parser.add_argument("--access-log", action="store_true",
                        help="log a line per request (costs throughput on small models; default: off)")
    access = parser.add_argument_group("who may use the server")
    access.add_argument("--api-key-file", metavar="FILE",
                        help="answer 401 to every request but health and the page unless it sends "
                             "'Authorization: Bearer <key>' with a key of FILE (one a line; re-read when it changes)")
    access.add_argument("--public-metrics", action="store_true",
                        help="serve /metrics and /v2/models/{m}/stats without a key")
    access.add_argument("--ssl-certfile", metavar="PEM", help="serve HTTPS with this certificate (chain)")
    access.add_argument("--ssl-keyfile", metavar="PEM", help="the certificate's unencrypted private key")
    access.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let pages from ORIGIN (scheme://host[:port]) call the server; repeatable (default: none)")


def check_can_listen(host: str, port: int) -> None:
    """:class:`InputError` unless a TCP socket can listen on ``host``:``port`` now (an address that
    does not resolve or is not this machine's, a port in use or reserved): checked before the models load."""
    import socket

    from ..errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, UnicodeError) as err:  # socket.gaierror is an OSError
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise InputError(f"cannot listen on {host}:{port}: {reason}",
                         fix="pass --host an address of this machine (127.0.0.1, 0.0.0.0) and a free --port") from None


def grpc_listen_address(host: str, grpc_port: int | None) -> str | None:
    """``host:port`` for the gRPC service, checked like the HTTP port (None without ``--grpc-port``);
    :class:`BackendUnavailable` without the ``grpc`` extra."""
    if grpc_port is None:
        return None
    try:
        import grpc  # noqa: F401
        from tritonclient.grpc import service_pb2_grpc  # noqa: F401
    except ImportError:
        from ..errors import BackendUnavailable

        raise BackendUnavailable("--grpc-port needs the grpc extra", fix="pip install 'visionrt[grpc]'") from None
    check_can_listen(host, grpc_port)
    return f"[{host}]:{grpc_port}" if ":" in host else f"{host}:{grpc_port}"


def serve(args: argparse.Namespace) -> None:
    """Load the models, then serve until SIGINT/SIGTERM; queued work finishes, exit status 0."""
    try:
        import uvicorn
    except ImportError:
        from ..errors import BackendUnavailable

        raise BackendUnavailable("serving needs the serve extra", fix="pip install 'visionrt[serve]'") from None
    from .auth import check_access

    check_access(args.host, args.port, args.api_key_file, args.ssl_certfile, args.ssl_keyfile, args.cors_origin)
    check_can_listen(args.host, args.port)
    args.grpc_address = grpc_listen_address(args.host, args.grpc_port)
    if args.workers > 1:
        from .workers import serve_workers

        serve_workers(args, run_server)
    else:
        run_server(args)


def run_server(args: argparse.Namespace, worker: bool = False) -> None:
    """One server process: load the models, serve until SIGINT/SIGTERM (queued work finishes). A
    ``worker`` of ``--workers`` listens on a port its siblings share (``SO_REUSEPORT``) and names
    its process id in every response's ``X-Visionrt-Worker`` header. glibc's allocator thresholds are
    fixed first (:mod:`.allocator`)."""
    import uvicorn

    from .allocator import hold_freed_memory
    from .app import ServerSettings, create_app
    from .repository import ModelRepository

    hold_freed_memory()
    repository = ModelRepository.load(args.models, backend=args.backend, precision=args.precision,
                                      instances=args.instances, threads=args.threads,
                                      max_batch_size=args.max_batch_size)
    settings = ServerSettings(max_queue_delay_ms=args.max_queue_delay_ms, max_queue=args.max_queue,
                              timeout_s=args.timeout_s, max_body_mb=args.max_body_mb,
                              api_key_file=args.api_key_file, cors_origins=tuple(args.cors_origin),
                              public_metrics=args.public_metrics, grpc_address=args.grpc_address,
                              ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    server = uvicorn.Server(uvicorn.Config(create_app(repository, settings), host=args.host, port=args.port,
                                           log_level="info", access_log=args.access_log,
                                           timeout_graceful_shutdown=None, ssl_certfile=args.ssl_certfile,
                                           ssl_keyfile=args.ssl_keyfile,
                                           headers=[("X-Visionrt-Worker", str(os.getpid()))] if worker else None))
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the previous
    # handler: make that one a no-op so a requested stop exits 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    if worker:
        from .workers import shared_socket

        server.run(sockets=[shared_socket(args.host, args.port)])
    else:
        server.run()
