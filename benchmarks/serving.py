"""The serving figures: ``python -m visionrt.benchmarks.serving MODEL_DIR --images DIR [--wrk] [--out DIR] [-- SERVER_OPTIONS]``.

**Reference figures** (``--wrk``, :func:`reference_figures`): the server pinned to one core
(``taskset``, one onnxruntime thread), the C load generator ``wrk`` pinned to another, and
``Predictor`` in this process pinned to the server's core, on the images the requests carry,
measured right before and right after each server figure (their mean is the reference, so a machine
whose speed drifts moves both sides alike; both are in the JSON). Per setup (HTTP predict batched /
``--max-batch-size 1`` / 8 images a request, HTTP v2 infer, gRPC infer by unary calls / on streams,
2 workers): images/s, latency, the mean batch, the client's CPU, and

- **server efficiency** = server images/s ÷ in-process images/s on the same core;
- **CPU efficiency** = in-process CPU s per image ÷ server CPU s per image (``/proc`` of the server
  and its workers): less sensitive than throughput to other load on the machine;
- **overhead** = server CPU ms per request beyond the in-process cost of its images (model + decode).

gRPC is driven by :mod:`.grpc_load` (Python: no C gRPC load tool installs here) on the client core,
by unary calls or on streams;
2 workers run on both cores, sharing the client's (compare their CPU efficiency, not throughput).
Each setup runs ``repeat`` times; the report gives the median and the spread, and the load average.
``--setups KEY,...`` runs a subset (keys: :data:`SETUPS`).

**Quick figures** (without ``--wrk``, :func:`serving_figures`): client (:mod:`.loadtest`, Python)
and server share this machine's cores, unpinned, so the client takes CPU from the server and
usually saturates first: these figures bound the server from below. Each figure runs a fresh ``visionrt serve`` subprocess on 127.0.0.1 (a free port; options after
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
from visionrt.runtime.argtypes import positive_int
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
def running_server(model_dirs: Sequence[str | os.PathLike], *options: str, ready_s: float = 120.0,
                   prefix: Sequence[str] = ()) -> Iterator[RunningServer]:
    """``python -m visionrt.runtime.server MODEL_DIR ... OPTIONS`` on 127.0.0.1 and a free port
    (after ``prefix``, e.g. ``taskset -c 0``), until the block ends (SIGTERM, then its exit is awaited)."""
    import httpx

    port = free_port()
    command = [*prefix, sys.executable, "-m", "visionrt.runtime.server", *map(str, model_dirs), "--host", "127.0.0.1",
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
    return in_process_rate(model_dir, blobs, batch, seconds)[0]


def in_process_rate(model_dir: str | os.PathLike, blobs: Sequence[bytes], batch: int, seconds: float,
                    decode: bool = True, threads: int = 0) -> tuple[float, float]:
    """(images/s, CPU seconds per image) of ``Predictor.predict`` on ``batch`` encoded images per call
    (``decode=False``: ``Predictor.infer`` on them preprocessed, what a v2 request costs the model)."""
    from visionrt.runtime.predictor import Predictor

    chosen = [blobs[i % len(blobs)] for i in range(batch)]
    with Predictor(model_dir, threads=threads) as predictor:
        rows = predictor.preprocess(chosen)
        call = (lambda: predictor.predict(chosen)) if decode else (lambda: predictor.infer(rows))
        call()  # warm-up
        cpu = time.process_time()
        samples = run_timed(call, min_runs=3, min_seconds=seconds, max_seconds=10 * seconds)
        cpu = time.process_time() - cpu
    return batch / (float(np.median(samples)) / 1e3), cpu / (batch * len(samples))


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (``/proc``)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the process ended meanwhile
            continue
    return total


@contextlib.contextmanager
def pinned_to(cores: set[int]) -> Iterator[None]:
    """Run this process on ``cores`` only, for the block."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


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


# reference figures (--wrk) -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Setup:
    """One reference figure (``key``: its short name for ``--setups``): what is sent (``predict``,
    ``infer``: HTTP v2, ``grpc``), how many images a request, extra server options, whether the
    server may use the client's core too, and whether gRPC requests go on streams."""

    key: str
    name: str
    endpoint: str
    images_per_request: int = 1
    server_options: tuple[str, ...] = ()
    both_cores: bool = False
    stream: bool = False


SETUPS = (
    Setup("batched", "HTTP predict, dynamic batching", "predict"),
    Setup("unbatched", "HTTP predict, --max-batch-size 1", "predict", server_options=("--max-batch-size", "1")),
    Setup("eight", "HTTP predict, 8 images a request", "predict", 8),
    Setup("infer", "HTTP v2 infer (binary tensor), dynamic batching", "infer"),
    Setup("grpc", "gRPC v2 infer, dynamic batching", "grpc"),
    Setup("grpc-stream", "gRPC v2 infer on streams (ModelStreamInfer), dynamic batching", "grpc", stream=True),
    Setup("workers", "HTTP predict, --workers 2 (both cores, sharing the client's)", "predict",
          server_options=("--workers", "2"), both_cores=True),
)


def _load_setup(setup: Setup, server: RunningServer, model: str, model_dir, files, connections: int,
                seconds: float, client_core: int, grpc_address: str | None) -> dict:
    """Warm up, then load ``server`` for ``seconds``: its images/s, latency, server and client CPU, batches."""
    import httpx

    from .grpc_load import grpc_load
    from .loadtest import fetch_metadata, infer_payloads, parse_metrics, server_delta
    from .wrk import run_wrk

    def scrape() -> dict:
        return parse_metrics(httpx.get(f"{server.url}/metrics", trust_env=False).text, model)

    if setup.endpoint == "grpc":
        from visionrt.runtime.predictor import Predictor

        with Predictor(model_dir) as predictor:
            rows = predictor.preprocess(files[:setup.images_per_request])

        def load(duration: float):
            r = grpc_load(grpc_address, model, rows, processes=2, threads=connections // 2, seconds=duration,
                          cores={client_core}, stream=setup.stream)
            return r.requests, r.seconds, r.latency_ms, r.errors, r.client_cpu_s
    else:
        payload = (predict_payloads(files, setup.images_per_request)[0] if setup.endpoint == "predict" else
                   infer_payloads(fetch_metadata(server.url, model), files, model_dir,
                                  images_per_request=setup.images_per_request)[0])
        path = f"/v1/models/{model}/predict" if setup.endpoint == "predict" else f"/v2/models/{model}/infer"

        def load(duration: float):
            r = run_wrk(server.url + path, payload, connections, duration, str(client_core))
            return r.requests, r.seconds, r.latency_ms, sum(r.errors.values()), r.client_cpu_s

    load(min(2.0, seconds))  # warm-up
    before, cpu = scrape(), process_cpu_s(server.pid)
    requests, wall, latency, errors, client_cpu = load(seconds)
    server_cpu = process_cpu_s(server.pid) - cpu
    batches = server_delta(before, scrape()) or {}
    images = requests * setup.images_per_request
    return {"images_per_s": images / wall, "latency_ms": latency, "errors": errors, "requests": requests,
            "server_cpu_s_per_image": server_cpu / images if images else None,
            "server_cores": server_cpu / wall, "client_cores": client_cpu / wall,
            "mean_batch": batches.get("mean_batch")}


def _in_process(model_dir, files: Sequence[Path], setup: Setup, seconds: float, core: int) -> tuple[float, float]:
    """(images/s, CPU s per image) in this process on ``core``, of what ``setup`` asks of the model, on
    the images its requests carry (the first ``images_per_request`` files, as the load sends them:
    a PNG's decode time follows its size, so other images would bias the ratio)."""
    blobs = [f.read_bytes() for f in files[:setup.images_per_request]]
    with pinned_to({core}):
        return in_process_rate(model_dir, blobs, 16, seconds, decode=setup.endpoint == "predict", threads=1)


def reference_figures(model_dir: str | os.PathLike, images_dir: str | os.PathLike, *, seconds: float = 10.0,
                      connections: int = 16, repeat: int = 3, server_core: int = 0, client_core: int = 1,
                      setups: Sequence[Setup] = SETUPS) -> dict:
    """The reference figures of the module docstring, as a JSON-ready dict."""
    from .machine import describe_machine
    from .wrk import command_line, pinned, wrk_executable

    wrk_executable()
    model = Path(model_dir).resolve().name
    files = image_files(images_dir)
    runs: dict[str, list[dict]] = {setup.name: [] for setup in setups}
    load_before = os.getloadavg()
    for _ in range(repeat):
        for setup in setups:
            before = _in_process(model_dir, files, setup, min(seconds, 3.0), server_core)
            cores = f"{server_core},{client_core}" if setup.both_cores else str(server_core)
            grpc_address = f"127.0.0.1:{free_port()}" if setup.endpoint == "grpc" else None
            options = ["--threads", "1", *setup.server_options]
            if grpc_address:
                options += ["--grpc-port", grpc_address.rsplit(":", 1)[1]]
            with running_server([model_dir], *options, prefix=pinned(cores)) as server:
                figure = _load_setup(setup, server, model, model_dir, files, connections, seconds, client_core,
                                     grpc_address)
            after = _in_process(model_dir, files, setup, min(seconds, 3.0), server_core)
            in_rate, in_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
            per_image = figure["server_cpu_s_per_image"]
            figure.update(in_process_images_per_s=in_rate, in_process_cpu_s_per_image=in_cpu,
                          in_process_images_per_s_before_after=[before[0], after[0]],
                          efficiency=None if setup.both_cores else figure["images_per_s"] / in_rate,
                          cpu_efficiency=in_cpu / per_image if per_image else None,
                          overhead_ms_per_request=(per_image - in_cpu) * setup.images_per_request * 1e3
                          if per_image else None)
            log.info("%s: %.0f images/s, efficiency %s, CPU efficiency %.2f", setup.name, figure["images_per_s"],
                     f"{figure['efficiency']:.2f}" if figure["efficiency"] else "—", figure["cpu_efficiency"] or 0)
            runs[setup.name].append(figure)
    return {"model": model, "connections": connections, "seconds": seconds, "repeat": repeat,
            "server_core": server_core, "client_core": client_core, "machine": describe_machine(),
            "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
            "commands": {"server": f"taskset -c {server_core} visionrt serve MODEL_DIR --threads 1 [options]",
                         "client": command_line(str(client_core), connections, seconds, "URL"),
                         "grpc_client": f"benchmarks/grpc_load.py: 2 processes x {connections // 2} threads "
                                        f"of tritonclient.grpc (streams: 2 x {connections // 2} requests in "
                                        f"flight), pinned to core {client_core}",
                         "in_process": f"Predictor(threads=1).predict(16 images: a request's, repeated) pinned to "
                                       f"core {server_core}, before and after each server figure (their mean)"},
            "setups": [{**dataclasses.asdict(setup), "runs": runs[setup.name],
                        "median": _medians(runs[setup.name])} for setup in setups]}


def _medians(runs: list[dict]) -> dict:
    keys = ("images_per_s", "efficiency", "cpu_efficiency", "overhead_ms_per_request", "mean_batch",
            "server_cores", "client_cores", "in_process_images_per_s")
    out = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        if values:
            out[key] = {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}
    p50 = [r["latency_ms"]["p50"] for r in runs if r["latency_ms"]]
    p99 = [r["latency_ms"]["p99"] for r in runs if r["latency_ms"]]
    if p50:
        out["p50_ms"], out["p99_ms"] = float(np.median(p50)), float(np.median(p99))
    return out


def reference_markdown(figures: dict) -> str:
    """The reference figures as a Markdown table (median, and min–max over the repeats)."""
    def cell(median: dict, key: str, fmt: str) -> str:
        if key not in median:
            return "—"
        m = median[key]
        return f"{m['median']:{fmt}}" + (f" ({m['min']:{fmt}}–{m['max']:{fmt}})" if figures["repeat"] > 1 else "")

    machine = figures["machine"]
    lines = [f"# Serving reference figures: {figures['model']}", "",
             f"{machine['cpu']}, {machine['usable_cpus']} usable cores; server on core {figures['server_core']} "
             f"(one onnxruntime thread), client on core {figures['client_core']}; {figures['connections']} "
             f"connections, {figures['seconds']:g} s a figure, {figures['repeat']} repeat(s): median (min–max). "
             f"Load average before/after: {' '.join(f'{x:.2f}' for x in figures['load_average']['before'])} / "
             f"{' '.join(f'{x:.2f}' for x in figures['load_average']['after'])}.", "",
             "| setup | img/s | p50 / p99 ms | mean batch | server efficiency | CPU efficiency | "
             "overhead ms/request | in-process img/s | client cores |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for setup in figures["setups"]:
        m = setup["median"]
        latency = f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f}" if "p50_ms" in m else "—"
        lines.append(f"| {setup['name']} | {cell(m, 'images_per_s', '.0f')} | {latency} | {cell(m, 'mean_batch', '.1f')} | "
                     f"{cell(m, 'efficiency', '.2f')} | {cell(m, 'cpu_efficiency', '.2f')} | "
                     f"{cell(m, 'overhead_ms_per_request', '.3f')} | {cell(m, 'in_process_images_per_s', '.0f')} | "
                     f"{cell(m, 'client_cores', '.2f')} |")
    lines += ["", "Commands: " + "; ".join(f"{k}: `{v}`" for k, v in figures["commands"].items()) + "."]
    return "\n".join(lines) + "\n"


def _setups(text: str) -> tuple[Setup, ...]:
    """``--setups``: comma-separated keys of :data:`SETUPS`, in that order."""
    keys = text.split(",")
    unknown = sorted(set(keys) - {s.key for s in SETUPS})
    if unknown:
        raise argparse.ArgumentTypeError(f"no setup {', '.join(unknown)} (choose from {', '.join(s.key for s in SETUPS)})")
    return tuple(s for s in SETUPS if s.key in keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionrt.benchmarks.serving", description=__doc__.splitlines()[0],
                                     epilog="options after -- go to every `visionrt serve`, e.g. -- --threads 1")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput/latency figure")
    parser.add_argument("--soak", type=float, default=60.0, help="seconds of the soak")
    parser.add_argument("--images-per-request", type=positive_int, default=1, help="images in each request (default 1)")
    parser.add_argument("--out", type=Path, help="write serving.json (--wrk: serving-reference.json and .md) here")
    parser.add_argument("--wrk", action="store_true",
                        help="the reference figures: server and wrk pinned to separate cores (see the docstring)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="--wrk: runs of each setup (default 3)")
    parser.add_argument("--server-core", type=int, default=0, help="--wrk: the server's core (default 0)")
    parser.add_argument("--client-core", type=int, default=1, help="--wrk: the client's core (default 1)")
    parser.add_argument("--setups", type=_setups, metavar="KEY,...",
                        help=f"--wrk: which setups (default all: {','.join(s.key for s in SETUPS)})")
    argv = sys.argv[1:] if argv is None else argv
    server_options = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request costs the load client CPU
    if args.wrk:
        figures = reference_figures(args.model_dir, args.images, seconds=args.seconds, connections=args.clients,
                                    repeat=args.repeat, server_core=args.server_core, client_core=args.client_core,
                                    **({"setups": args.setups} if args.setups else {}))
        text = reference_markdown(figures)
        if args.out:
            atomic.write_text(args.out / "serving-reference.json", json.dumps(figures, indent=2) + "\n")
            atomic.write_text(args.out / "serving-reference.md", text)
        print(text)
        return 0
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
