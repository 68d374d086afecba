"""A closed-loop gRPC load client: ``tritonclient.grpc`` in several processes (each with several
threads, one blocking ``infer`` in flight per thread), optionally pinned to given cores.

No C/C++ gRPC load tool installs here (``ghz`` is not in Debian; ``h2load`` does not frame gRPC),
so this Python client is used, and it measures its own CPU: where it is near its cores, the
figure is the client's limit.
"""
from __future__ import annotations

import dataclasses
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


def _share(address: str, model: str, rows: np.ndarray, threads: int, seconds: float, cores: set[int] | None):
    """One process: ``threads`` threads sending ``rows`` until ``seconds`` have passed."""
    import tritonclient.grpc as triton

    if cores:
        os.sched_setaffinity(0, cores)
    latencies: list[float] = []
    errors = [0]
    start_cpu, start = time.process_time(), time.perf_counter()
    end = start + seconds

    def loop() -> None:
        client = triton.InferenceServerClient(address)
        tensor = triton.InferInput("images", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        while time.perf_counter() < end:
            began = time.perf_counter()
            try:
                client.infer(model, [tensor])
            except triton.InferenceServerException:
                errors[0] += 1
                continue
            latencies.append(time.perf_counter() - began)
        client.close()

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, errors[0], time.process_time() - start_cpu, start, time.perf_counter()


def grpc_load(address: str, model: str, rows: np.ndarray, processes: int, threads: int, seconds: float,
              cores: set[int] | None = None) -> GrpcLoadResult:
    """``processes`` x ``threads`` calls of ``ModelInfer`` with ``rows`` in flight for ``seconds``."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        parts = pool.starmap(_share, [(address, model, rows, threads, seconds, cores)] * processes)
    latencies = np.array([x for part in parts for x in part[0]]) * 1e3
    wall = max(p[4] for p in parts) - min(p[3] for p in parts)
    latency = {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 90, 99)} if len(latencies) else {}
    if len(latencies):
        latency["mean"] = float(latencies.mean())
    return GrpcLoadResult(len(latencies), wall, latency, sum(p[1] for p in parts), sum(p[2] for p in parts))
