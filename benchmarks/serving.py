"""The serving figures: ``python -m visionrt.benchmarks.serving MODEL_DIR --images DIR [--out DIR] [-- SERVER_OPTIONS]``.

Each figure runs a fresh ``visionrt serve`` subprocess on 127.0.0.1 (a free port; options after
``--`` go to every server) and loads it with :mod:`.loadtest` (``predict`` endpoint,
``images_per_request`` images a request, counted as that many images):

- **efficiency**: images/s through the server at ``clients`` concurrent clients with dynamic
  batching ÷ images/s of ``Predictor.predict`` in this process on the same encoded images at
  batch ``clients`` (decode included);
- **batching**: the same load against ``--max-batch-size 1``: the throughput ratio and both p99s;
- **idle latency**: one single-image request at a time on an idle server vs ``Predictor.predict``
  on the same image (medians, ms): the fixed cost of going through HTTP;
- **soak**: ``clients`` clients for ``soak_s`` seconds (none when 0): errors, and the server's resident
  memory (``VmRSS`` of ``/proc/<pid>/status``) after warm-up and at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from visionrt.runtime import atomic
from visionrt.runtime.cli import positive_int
from visionrt.runtime.errors import VisionRTError

from .harness import run_timed
from .loadtest import LoadSettings, image_files, predict_payloads, sweep

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunningServer:
    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_dirs: Sequence[str | os.PathLike], *options: str, ready_s: float = 120.0) -> Iterator[RunningServer]:
    """``python -m visionrt.runtime.server MODEL_DIR ... OPTIONS`` on 127.0.0.1 and a free port,
    until the block ends (SIGTERM, then its exit is awaited)."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "visionrt.runtime.server", *map(str, model_dirs), "--host", "127.0.0.1",
               "--port", str(port), *options]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if server.poll() is not None:
                raise VisionRTError(f"the server exited ({server.returncode}) before it was ready: "
                                    f"{server.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2.0, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise VisionRTError(f"the server was not ready after {ready_s:.0f} s")
            time.sleep(0.2)
        yield RunningServer(url, server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` (KiB), from ``/proc/<pid>/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise VisionRTError(f"/proc/{pid}/status has no VmRSS")


def in_process_images_per_s(model_dir: str | os.PathLike, blobs: Sequence[bytes], batch: int, seconds: float) -> float:
    """Images/s of ``Predictor.predict`` on ``batch`` encoded images per call (decode included)."""
    from visionrt.runtime.predictor import Predictor

    chosen = [blobs[i % len(blobs)] for i in range(batch)]
    with Predictor(model_dir) as predictor:
        predictor.predict(chosen)  # warm-up
        samples = run_timed(lambda: predictor.predict(chosen), min_runs=3, min_seconds=seconds, max_seconds=10 * seconds)
    return batch / (float(np.median(samples)) / 1e3)


def predict_latency_ms(model_dir: str | os.PathLike, blob: bytes, seconds: float) -> float:
    """Median latency (ms) of ``Predictor.predict`` on one encoded image."""
    from visionrt.runtime.predictor import Predictor

    with Predictor(model_dir) as predictor:
        predictor.predict(blob)
        return float(np.median(run_timed(lambda: predictor.predict(blob), min_runs=10, min_seconds=seconds,
                                         max_seconds=10 * seconds)))


def _load(server: RunningServer, model: str, payloads, clients: int, seconds: float, warmup_s: float):
    import asyncio

    settings = LoadSettings(url=server.url, model=model, concurrency=(clients,), duration_s=seconds, warmup_s=warmup_s)
    return asyncio.run(sweep(settings, payloads))[0]


def serving_figures(model_dir: str | os.PathLike, images_dir: str | os.PathLike, *, clients: int = 16,
                    seconds: float = 10.0, soak_s: float = 60.0, warmup_s: float = 2.0,
                    server_options: Sequence[str] = (), images_per_request: int = 1) -> dict:
    """The figures of the module docstring, as a JSON-ready dict (throughput in images/s, times in ms)."""
    model = Path(model_dir).resolve().name
    files = image_files(images_dir)
    singles = predict_payloads(files)
    payloads = predict_payloads(files, images_per_request)
    blobs = [p.body for p in singles]
    figures: dict = {"model": model, "clients": clients, "images_per_request": images_per_request,
                     "seconds": seconds, "server_options": list(server_options)}

    in_process = in_process_images_per_s(model_dir, blobs, clients, seconds)
    with running_server([model_dir], *server_options) as server:
        batched = _load(server, model, payloads, clients, seconds, warmup_s)
        idle = _load(server, model, singles[:1], 1, seconds, warmup_s)
    with running_server([model_dir], "--max-batch-size", "1", *server_options) as server:
        unbatched = _load(server, model, payloads, clients, seconds, warmup_s)
    figures["efficiency"] = {"server_images_per_s": batched.images_per_s, "in_process_images_per_s": in_process,
                             "ratio": batched.images_per_s / in_process, "mean_batch": (batched.server or {}).get("mean_batch")}
    figures["batching"] = {"batched_images_per_s": batched.images_per_s, "unbatched_images_per_s": unbatched.images_per_s,
                           "ratio": batched.images_per_s / unbatched.images_per_s if unbatched.images_per_s else None,
                           "batched_p99_ms": batched.latency_ms.get("p99"), "unbatched_p99_ms": unbatched.latency_ms.get("p99"),
                           "errors": {"batched": batched.errors, "unbatched": unbatched.errors}}
    figures["idle_latency"] = {"server_p50_ms": idle.latency_ms.get("p50"),
                               "predict_p50_ms": predict_latency_ms(model_dir, blobs[0], seconds)}
    figures["idle_latency"]["http_cost_ms"] = figures["idle_latency"]["server_p50_ms"] - figures["idle_latency"]["predict_p50_ms"]
    if soak_s <= 0:
        figures["soak"] = None
        return figures
    with running_server([model_dir], *server_options) as server:
        _load(server, model, payloads, clients, warmup_s, 0.0)
        rss_warm = rss_kib(server.pid)
        soak = _load(server, model, payloads, clients, soak_s, 0.0)
        rss_end = rss_kib(server.pid)
    figures["soak"] = {"seconds": soak_s, "requests": soak.requests, "errors": soak.errors,
                       "rss_after_warmup_kib": rss_warm, "rss_end_kib": rss_end, "rss_growth": rss_end / rss_warm - 1.0}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionrt.benchmarks.serving", description=__doc__.splitlines()[0],
                                     epilog="options after -- go to every `visionrt serve`, e.g. -- --threads 1")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput/latency figure")
    parser.add_argument("--soak", type=float, default=60.0, help="seconds of the soak")
    parser.add_argument("--images-per-request", type=positive_int, default=1, help="images in each request (default 1)")
    parser.add_argument("--out", type=Path, help="write serving.json here")
    argv = sys.argv[1:] if argv is None else argv
    server_options = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request costs the load client CPU
    figures = serving_figures(args.model_dir, args.images, clients=args.clients, seconds=args.seconds,
                              soak_s=args.soak, server_options=server_options,
                              images_per_request=args.images_per_request)
    text = json.dumps(figures, indent=2)
    if args.out:
        atomic.write_text(args.out / "serving.json", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
