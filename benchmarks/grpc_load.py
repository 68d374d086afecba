"""A closed-loop gRPC load client: ``tritonclient.grpc`` in several processes (each with several
threads, one blocking ``infer`` in flight per thread; or, ``stream``, one ``ModelStreamInfer`` stream
per process with as many requests in flight, each answer sending the next: perf_analyzer's
``--streaming``), optionally pinned to given cores.

No C/C++ gRPC load tool installs here (``ghz`` is not in Debian; ``h2load`` does not frame gRPC),
so this Python client is used, and it measures its own CPU: where it is near its cores, the
figure is the client's limit.
"""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import threading
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class GrpcLoadResult:
    """Requests answered, seconds, latency (ms), failed calls, and the client's CPU seconds."""

    requests: int
    seconds: float
    latency_ms: dict[str, float]
    errors: int
    client_cpu_s: float


def _share(address: str, model: str, rows: np.ndarray, threads: int, seconds: float, cores: set[int] | None,
           stream: bool = False):
    """One process: ``threads`` threads sending ``rows`` until ``seconds`` have passed (``stream``: one
    stream with ``threads`` requests in flight)."""
    import tritonclient.grpc as triton

    if cores:
        os.sched_setaffinity(0, cores)
    latencies: list[float] = []
    errors = [0]
    tensor = triton.InferInput("images", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # only read by the clients: one for every thread
    start_cpu, start = time.process_time(), time.perf_counter()
    end = start + seconds

    def loop() -> None:
        client = triton.InferenceServerClient(address)
        while time.perf_counter() < end:
            began = time.perf_counter()
            try:
                client.infer(model, [tensor])
            except triton.InferenceServerException:
                errors[0] += 1
                continue
            latencies.append(time.perf_counter() - began)
        client.close()

    def streamed() -> None:
        client = triton.InferenceServerClient(address)
        sent: dict[str, float] = {}
        ids = itertools.count()
        outstanding = [threads]
        finished = threading.Event()

        def send() -> None:
            request_id = str(next(ids))
            sent[request_id] = time.perf_counter()
            client.async_stream_infer(model, [tensor], request_id=request_id)

        def answered(result, error) -> None:  # on the stream's thread, one answer at a time
            now = time.perf_counter()
            if error is not None:
                errors[0] += 1
            else:
                latencies.append(now - sent.pop(result.get_response().id))
            if now < end:
                send()
            else:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    finished.set()

        client.start_stream(callback=answered)
        for _ in range(threads):
            send()
        finished.wait(seconds + 60)
        client.stop_stream()
        client.close()

    workers = [threading.Thread(target=streamed)] if stream else [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, errors[0], time.process_time() - start_cpu, start, time.perf_counter()


def grpc_load(address: str, model: str, rows: np.ndarray, processes: int, threads: int, seconds: float,
              cores: set[int] | None = None, stream: bool = False) -> GrpcLoadResult:
    """``processes`` x ``threads`` calls of ``ModelInfer`` with ``rows`` in flight for ``seconds``
    (``stream``: as requests on one ``ModelStreamInfer`` stream a process)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.starmap(_share, [(address, model, rows, threads, seconds, cores, stream)] * processes)
    latencies = np.array([x for part in parts for x in part[0]]) * 1e3
    wall = max(p[4] for p in parts) - min(p[3] for p in parts)
    latency = {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)} if len(latencies) else {}
    if len(latencies):
        latency["mean"] = float(latencies.mean())
    return GrpcLoadResult(len(latencies), wall, latency, sum(p[1] for p in parts), sum(p[2] for p in parts))
