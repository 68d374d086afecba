"""``visionrt serve --workers N``: N server processes on one port, each with its own sessions,
batchers and event loop (one GIL each), so a many-core machine serves ~N times one process.

Every worker binds the port with ``SO_REUSEPORT`` (and the gRPC port likewise): the kernel spreads
new connections over them. Their metrics go to files in a temporary ``PROMETHEUS_MULTIPROC_DIR``
(created at start, removed at exit) that any worker's ``/metrics`` sums. The parent checks the
model directories once, starts the workers, and on SIGTERM/SIGINT passes SIGTERM on: each worker
finishes its requests in flight and its queue, then exits; the parent exits 0 when all did. A
worker that dies on its own stops the others and the parent fails with its exit code.

Threads: with ``--threads 0`` each session gets ``cores // (workers * instances)`` intra-op threads
(at least 1), so workers x instances x threads stays within the cores this process may use.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
from typing import Callable

from ..errors import VisionRTError

log = logging.getLogger(__name__)

#: Seconds between the parent's checks that every worker is alive.
POLL_S = 0.5


def default_threads(workers: int, instances: int) -> int:
    """Intra-op threads per session so that ``workers * instances * threads <= cores`` (at least 1)."""
    return max(1, len(os.sched_getaffinity(0)) // (workers * instances))


def shared_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` that sibling processes may bind too (``SO_REUSEPORT``)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _worker(run_server: Callable[..., None], args: argparse.Namespace) -> None:
    """A worker process's body, ``run_server(args, worker=True)`` (spawned: ``PROMETHEUS_MULTIPROC_DIR``
    is set before it imports anything)."""
    from prometheus_client import multiprocess

    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s [worker {os.getpid()}] %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the parent, which passes SIGTERM on
    try:
        run_server(args, worker=True)
    finally:
        multiprocess.mark_process_dead(os.getpid())


def serve_workers(args: argparse.Namespace, run_server: Callable[..., None]) -> None:
    """Run ``args.workers`` workers of ``run_server`` (:func:`.cli.run_server`) until SIGTERM/SIGINT
    (see the module docstring)."""
    from .repository import ModelRepository

    if args.threads == 0:
        args.threads = default_threads(args.workers, args.instances)
    # one load here turns a bad model directory into one line before any worker starts
    ModelRepository.load(args.models, backend=args.backend, precision=args.precision, instances=1,
                         threads=args.threads, max_batch_size=args.max_batch_size).close()
    metrics_dir = tempfile.mkdtemp(prefix="visionrt-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    stopping = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(run_server, args), name=f"visionrt-worker-{i}")
               for i in range(args.workers)]
    try:
        for worker in workers:
            worker.start()
        log.info("%d workers (pids %s) on %s:%d, %d intra-op thread(s) per session", len(workers),
                 ", ".join(str(w.pid) for w in workers), args.host, args.port, args.threads)
        while not stopping and all(w.is_alive() for w in workers):
            multiprocessing.connection.wait([w.sentinel for w in workers], timeout=POLL_S)
    finally:
        for worker in workers:
            if worker.is_alive():
                os.kill(worker.pid, signal.SIGTERM)
        for worker in workers:
            worker.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [w for w in workers if w.exitcode != 0]
    if failed and not stopping:
        raise VisionRTError(f"worker {failed[0].pid} exited with status {failed[0].exitcode}; the others were stopped",
                            fix="see the worker's log above")
