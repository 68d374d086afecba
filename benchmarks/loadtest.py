"""``visionrt loadtest URL``: a bounded async load generator for a running inference server.

Per concurrency level (a sweep, e.g. 1, 4, 16) it keeps that many requests in flight (closed
loop), or with ``--request-rate`` sends requests at Poisson arrival times, at most
``concurrency`` in flight (open loop), for ``--duration`` seconds or ``--max-requests``
requests, whichever comes first. ``--images-per-request N`` images per request (default 1),
counted as N images in the throughput:

- ``--endpoint predict``: ``POST /v1/models/{m}/predict`` with an encoded image file as the body
  (N > 1: a multipart form of N files);
- ``--endpoint infer``: ``POST /v2/models/{m}/infer`` (KServe v2, binary-data extension) with
  N preprocessed images as one ``[N, ...]`` tensor: built from the files with the model
  directory's own preprocessing when ``--model-dir`` is given, else random values of the shape
  ``GET /v2/models/{m}`` reports (which then must have no free axis but the batch).

The load generator is Python (httpx on asyncio): one process drives at most one core, and on the
server's machine it takes cores from the server. Per level it measures its own CPU (CPU seconds ÷
wall seconds of each of its processes) and flags the level **client-bound** when one process used
≥ 0.9 of a core: then the figure is the client's limit, not the server's. ``--processes N`` spreads
the load over N processes; for reference figures use a C client on separate cores
(``python -m visionrt.benchmarks.serving --wrk``).

Per level: images/s, latency p50/p90/p95/p99/mean (milliseconds; successful requests only),
errors by HTTP status or exception, and, where the server exposes visionrt's Prometheus metrics,
the batch sizes it formed (``visionrt_batch_size`` histogram, scraped before and after: the
difference). Reports: JSON, Markdown, a CSV with perf_analyzer's ``--verbose-csv`` columns
(latencies in microseconds; columns it cannot measure from outside, e.g. Client Send, are 0) and
a PNG of latency against throughput.

It contacts nothing but the URL it is given (http or https), and stops by itself. For a server
started with ``--api-key-file``, pass ``--api-key-file`` too: the key is read from a file, so it stays
out of the shell's history and the process list, and the report records the file's path, never the key;
``--cacert PEM`` trusts a self-signed server certificate.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime as _dt
import io
import ipaddress
import json
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import numpy as np

from visionrt.runtime import atomic
from visionrt.runtime.errors import InputError

log = logging.getLogger(__name__)

ENDPOINTS = ("predict", "infer")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
#: perf_analyzer's ``--verbose-csv`` header (``-f``); the first column is ``Request Rate`` in rate mode.
PERF_ANALYZER_COLUMNS = ("Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv",
                         "Server Queue", "Server Compute Input", "Server Compute Infer", "Server Compute Output",
                         "Client Recv", "p50 latency", "p90 latency", "p95 latency", "p99 latency", "Avg latency",
                         "request/response", "response wait")
PERCENTILES = (50, 90, 95, 99)
#: Cores of one load-generator process from which a level counts as client-bound.
CLIENT_BOUND = 0.9
BATCH_METRIC, QUEUE_METRIC, COMPUTE_METRIC = "visionrt_batch_size", "visionrt_queue_seconds", "visionrt_compute_seconds"


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    """What to send where, and for how long (seconds) per concurrency level."""

    url: str
    model: str
    endpoint: str = "predict"
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float = 10.0
    warmup_s: float = 1.0
    request_rate: float | None = None
    max_requests: int = 100_000
    timeout_s: float = 30.0
    seed: int = 0
    images_per_request: int = 1
    processes: int = 1
    api_key_file: str | None = None
    cacert: str | None = None


@dataclasses.dataclass(frozen=True)
class Payload:
    """One request's body and headers, and how many images it carries."""

    body: bytes
    headers: Mapping[str, str]
    images: int = 1


@dataclasses.dataclass
class LevelResult:
    """One concurrency level: counts, throughput, latency (ms), errors and the server's batches."""

    concurrency: int
    request_rate: float | None
    requests: int
    images: int
    seconds: float
    images_per_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    server: dict[str, Any] | None
    #: cores each load-generator process used (CPU s / wall s); None where not measured
    client_cpu: list[float] | None = None

    @property
    def client_bound(self) -> bool:
        """Whether a load-generator process used nearly a whole core (the figure measures the client)."""
        return bool(self.client_cpu) and max(self.client_cpu) >= CLIENT_BOUND


# targets and payloads ----------------------------------------------------------------------------
def check_url(url: str) -> str:
    """``url`` without a trailing slash; :class:`InputError` unless http(s) with a host. A host
    that is not this machine is allowed, with a warning."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url!r} is not an http(s) URL of a server", fix="pass e.g. http://127.0.0.1:8000")
    if not _is_loopback(parts.hostname):
        log.warning("%s is not this machine: the load goes over the network", parts.hostname)
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == socket.gethostname()


def image_files(images_dir: str | os.PathLike, limit: int = 256) -> list[Path]:
    """Up to ``limit`` image files of ``images_dir`` (sorted; not recursive)."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of images")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:limit]
    if not files:
        raise InputError(f"{root} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _groups(items: Sequence, size: int) -> list[list]:
    """``len(items)`` groups of ``size`` consecutive items (wrapping around), the i-th starting at item i."""
    return [[items[(start + k) % len(items)] for k in range(size)] for start in range(len(items))]


def predict_payloads(files: Sequence[Path], images_per_request: int = 1) -> list[Payload]:
    """``/predict`` payloads: the encoded file as the body, or a multipart form of ``images_per_request`` files."""
    if images_per_request == 1:
        return [Payload(f.read_bytes(), {"content-type": "application/octet-stream"}) for f in files]
    import httpx

    blobs = [(f.name, f.read_bytes()) for f in files]
    payloads = []
    for group in _groups(blobs, images_per_request):
        form = httpx.Request("POST", "http://form.invalid/", files=[("image", (name, data, "application/octet-stream"))
                                                                    for name, data in group])
        payloads.append(Payload(form.read(), {"content-type": form.headers["content-type"]}, images_per_request))
    return payloads


def infer_payload(inputs: Mapping[str, np.ndarray], outputs: Iterable[str]) -> Payload:
    """A v2 ``/infer`` request with every input and output as binary data."""
    from visionrt.runtime.server.protocol import HEADER_LENGTH, datatype

    arrays = {name: np.ascontiguousarray(a) for name, a in inputs.items()}
    header = {"inputs": [{"name": name, "shape": list(a.shape), "datatype": datatype(a.dtype),
                          "parameters": {"binary_data_size": a.nbytes}} for name, a in arrays.items()],
              "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs]}
    head = json.dumps(header, separators=(",", ":")).encode()
    images = next(iter(arrays.values())).shape[0]
    return Payload(head + b"".join(a.tobytes() for a in arrays.values()),
                   {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}, images)


def infer_payloads(metadata: Mapping[str, Any], files: Sequence[Path] | None, model_dir: str | os.PathLike | None,
                   seed: int = 0, images_per_request: int = 1) -> list[Payload]:
    """``/infer`` payloads for a model whose ``GET /v2/models/{m}`` answer is ``metadata``: the
    images preprocessed as the model directory says, or random values of its input shape;
    ``images_per_request`` rows a tensor."""
    from visionrt.runtime.server.protocol import DATATYPES

    if len(metadata["inputs"]) != 1:
        raise InputError(f"model '{metadata.get('name')}' has {len(metadata['inputs'])} inputs; the load generator "
                         "sends one image tensor", fix="use --endpoint predict")
    spec = metadata["inputs"][0]
    outputs = [o["name"] for o in metadata["outputs"]]
    if model_dir is not None:
        from visionrt.runtime.images import load_image
        from visionrt.runtime.manifest import ModelDir
        from visionrt.runtime.preprocess import model_input

        manifest = ModelDir.open(model_dir).manifest
        rows = [model_input([load_image(f)], manifest) for f in files]
        if images_per_request > 1 and len({r.shape for r in rows}) > 1:
            raise InputError("the images preprocess to different shapes; one tensor cannot hold several",
                             fix="use --images-per-request 1, or images of one size")
        return [infer_payload({spec["name"]: np.concatenate(group)}, outputs)
                for group in _groups(rows, images_per_request)]
    shape = [images_per_request, *spec["shape"][1:]]
    if min(shape) < 1:
        raise InputError(f"input '{spec['name']}' has shape {spec['shape']}: free axes besides the batch",
                         fix="pass --model-dir to send the images preprocessed at their own size")
    rng = np.random.default_rng(seed)
    dtype = DATATYPES[spec["datatype"]]
    return [infer_payload({spec["name"]: rng.standard_normal(shape).astype(dtype)}, outputs) for _ in range(8)]


# one level ------------------------------------------------------------------------------------
async def _send(client, path: str, payload: Payload, samples: list, errors: dict[str, int]) -> None:
    import httpx

    started = time.perf_counter()
    try:
        response = await client.post(path, content=payload.body, headers=dict(payload.headers))
        status = str(response.status_code) if response.status_code >= 400 else None
    except httpx.HTTPError as err:
        status = type(err).__name__
    finished = time.perf_counter()
    if status is None:
        samples.append((finished, finished - started, payload.images))
    else:
        errors[status] = errors.get(status, 0) + 1


async def run_level(client, path: str, payloads: Sequence[Payload], concurrency: int, duration_s: float,
                    max_requests: int, request_rate: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Send for ``duration_s`` seconds (or ``max_requests``), at most ``concurrency`` in flight;
    ``{"samples": [(finished, seconds, images)], "errors": {status: n}, "started": t}``."""
    samples: list[tuple[float, float, int]] = []
    errors: dict[str, int] = {}
    started = time.perf_counter()
    end = started + duration_s
    issued = 0

    def next_payload() -> Payload | None:
        nonlocal issued
        if issued >= max_requests or time.perf_counter() >= end:
            return None
        issued += 1
        return payloads[(issued - 1) % len(payloads)]

    if request_rate is None:
        async def worker() -> None:
            while (payload := next_payload()) is not None:
                await _send(client, path, payload, samples, errors)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    else:
        rng = np.random.default_rng(seed)
        slots = asyncio.Semaphore(concurrency)
        tasks = []
        arrival = started

        async def limited(payload: Payload) -> None:
            async with slots:
                await _send(client, path, payload, samples, errors)

        while True:
            arrival += rng.exponential(1.0 / request_rate)
            await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
            payload = next_payload()
            if payload is None:
                break
            tasks.append(asyncio.create_task(limited(payload)))
        await asyncio.gather(*tasks)
    return {"samples": samples, "errors": errors, "started": started}


def summarise(concurrency: int, request_rate: float | None, measured: Mapping[str, Any],
              server: dict[str, Any] | None = None) -> LevelResult:
    """A level's figures from :func:`run_level`'s samples (linear-interpolated percentiles)."""
    samples = measured["samples"]
    latencies = np.array([s[1] for s in samples], dtype=np.float64) * 1e3
    images = sum(s[2] for s in samples)
    seconds = (max(s[0] for s in samples) - measured["started"]) if samples else 0.0
    latency = {}
    if samples:
        latency = {f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(latencies, PERCENTILES))}
        latency.update(mean=float(latencies.mean()), min=float(latencies.min()), max=float(latencies.max()))
    cpu = measured.get("cpu")
    return LevelResult(concurrency, request_rate, len(samples) + sum(measured["errors"].values()), images, seconds,
                       images / seconds if seconds > 0 else 0.0, latency, dict(measured["errors"]), server,
                       [c / seconds for c in cpu] if cpu and seconds > 0 else None)


def shares(total: int, parts: int) -> list[int]:
    """``total`` split over at most ``parts`` non-zero shares differing by at most one."""
    return [n for n in (total // parts + (i < total % parts) for i in range(parts)) if n]


async def measure_level(client, path: str, payloads: Sequence[Payload], settings: LoadSettings, concurrency: int,
                        duration_s: float, pool=None) -> dict[str, Any]:
    """:func:`run_level` in this process, or (``pool``: a process pool of ``settings.processes``) its
    concurrency, request cap and rate shared over that many processes; with ``"cpu"``: the CPU
    seconds of each process while it sent."""
    if pool is None:
        cpu = time.process_time()
        measured = await run_level(client, path, payloads, concurrency, duration_s, settings.max_requests,
                                   settings.request_rate, settings.seed)
        return {**measured, "cpu": [time.process_time() - cpu]}
    loop = asyncio.get_running_loop()
    split = shares(concurrency, settings.processes)
    parts = await asyncio.gather(*(loop.run_in_executor(pool, _level_process, settings, payloads, path, share,
                                                        duration_s, len(split), settings.seed + i)
                                   for i, share in enumerate(split)))
    errors: dict[str, int] = {}
    for part in parts:
        for status, n in part["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return {"samples": [s for part in parts for s in part["samples"]], "errors": errors,
            "started": min(part["started"] for part in parts), "cpu": [c for part in parts for c in part["cpu"]]}


def _level_process(settings: LoadSettings, payloads: Sequence[Payload], path: str, concurrency: int,
                   duration_s: float, processes: int, seed: int) -> dict[str, Any]:
    """One process's share of a level (``time.perf_counter`` is CLOCK_MONOTONIC, so samples merge)."""
    async def share() -> dict[str, Any]:
        async with _client(settings, concurrency + 1) as client:
            cpu = time.process_time()
            measured = await run_level(client, path, payloads, concurrency, duration_s,
                                       max(1, settings.max_requests // processes),
                                       settings.request_rate / processes if settings.request_rate else None, seed)
            return {**measured, "cpu": [time.process_time() - cpu]}
    return asyncio.run(share())


# the server's own metrics -------------------------------------------------------------------------
def parse_metrics(text: str, model: str) -> dict[str, dict[str, float]]:
    """Prometheus text -> ``{metric sample name: {le or "": value}}`` for ``model``'s histograms."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = (BATCH_METRIC, QUEUE_METRIC, COMPUTE_METRIC)
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model:
                found.setdefault(sample.name, {})[sample.labels.get("le", "")] = sample.value
    return found


def server_delta(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]) -> dict[str, Any] | None:
    """What the server did between two scrapes: executions, mean batch, images per batch size
    bucket (``{"<=1": n, "<=2": n, ...}``, non-cumulative), mean queue and compute time (ms)."""
    if f"{BATCH_METRIC}_count" not in after:
        return None

    def delta(name: str, key: str = "") -> float:
        return after.get(name, {}).get(key, 0.0) - before.get(name, {}).get(key, 0.0)

    executions = delta(f"{BATCH_METRIC}_count")
    buckets, below = {}, 0.0
    for le in sorted(after.get(f"{BATCH_METRIC}_bucket", {}), key=float):
        cumulative = delta(f"{BATCH_METRIC}_bucket", le)
        if cumulative - below > 0:
            buckets["+Inf" if le == "+Inf" else f"<={float(le):g}"] = int(round(cumulative - below))
        below = cumulative
    queued = delta(f"{QUEUE_METRIC}_count")
    return {"executions": int(executions), "images": int(delta(f"{BATCH_METRIC}_sum")),
            "mean_batch": delta(f"{BATCH_METRIC}_sum") / executions if executions else 0.0,
            "batch_sizes": buckets,
            "queue_ms": delta(f"{QUEUE_METRIC}_sum") / queued * 1e3 if queued else 0.0,
            "compute_ms": delta(f"{COMPUTE_METRIC}_sum") / executions * 1e3 if executions else 0.0}


async def _scrape(client, model: str) -> dict[str, dict[str, float]] | None:
    import httpx

    try:
        response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    return parse_metrics(response.text, model) if response.status_code == 200 else None


# the sweep ---------------------------------------------------------------------------------------
def endpoint_path(settings: LoadSettings) -> str:
    return (f"/v1/models/{settings.model}/predict" if settings.endpoint == "predict"
            else f"/v2/models/{settings.model}/infer")


def client_options(settings: LoadSettings) -> dict[str, Any]:
    """httpx options: the header ``Authorization: Bearer <key>`` with the first key of
    ``settings.api_key_file``, and for https the certificates of ``settings.cacert`` (else the system's)."""
    options: dict[str, Any] = {"headers": {}}
    if settings.api_key_file is not None:
        from visionrt.runtime.server.auth import read_keys

        options["headers"]["Authorization"] = f"Bearer {read_keys(settings.api_key_file)[0]}"
    if settings.cacert is not None:
        options["verify"] = ssl.create_default_context(cafile=settings.cacert)
    return options


def fetch_metadata(url: str, model: str, timeout_s: float = 10.0, **options: Any) -> dict[str, Any]:
    """``GET {url}/v2/models/{model}`` (the v2 model metadata); ``options`` as :func:`client_options`."""
    import httpx

    response = httpx.get(f"{check_url(url)}/v2/models/{model}", timeout=timeout_s, **options)
    if response.status_code != 200:
        raise InputError(f"{url} has no model '{model}' (GET /v2/models/{model}: {response.status_code})")
    return response.json()


async def sweep(settings: LoadSettings, payloads: Sequence[Payload]) -> list[LevelResult]:
    """Every concurrency level in turn: warm-up, scrape, measure, scrape."""
    check_url(settings.url)
    path = endpoint_path(settings)
    pool = None
    if settings.processes > 1:
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(settings.processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        return await _levels(settings, payloads, path, pool)
    finally:
        if pool is not None:
            pool.shutdown()


async def _levels(settings: LoadSettings, payloads: Sequence[Payload], path: str, pool) -> list[LevelResult]:
    results = []
    async with _client(settings, max(settings.concurrency) + 1) as client:
        for concurrency in settings.concurrency:
            if settings.warmup_s > 0:
                await measure_level(client, path, payloads, settings, concurrency, settings.warmup_s, pool)
            before = await _scrape(client, settings.model)
            measured = await measure_level(client, path, payloads, settings, concurrency, settings.duration_s, pool)
            after = await _scrape(client, settings.model)
            result = summarise(concurrency, settings.request_rate, measured,
                               server_delta(before, after) if before is not None and after is not None else None)
            log.info("concurrency %d: %.1f images/s, p50 %.1f ms, p99 %.1f ms, errors %s", concurrency,
                     result.images_per_s, result.latency_ms.get("p50", float("nan")),
                     result.latency_ms.get("p99", float("nan")), result.errors or "none")
            if result.client_bound:
                log.warning("concurrency %d is client-bound: a load-generator process used %.2f of a core, so %.1f "
                            "images/s is the client's limit, not the server's (spread it: --processes N; or measure "
                            "with a C client: python -m visionrt.benchmarks.serving --wrk)", concurrency,
                            max(result.client_cpu), result.images_per_s)
            results.append(result)
    return results


def _client(settings: LoadSettings, connections: int):
    """The load generator's ``httpx.AsyncClient`` for ``settings.url``, ``connections`` at most."""
    import httpx

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=check_url(settings.url), timeout=settings.timeout_s, limits=limits,
                             trust_env=False, follow_redirects=False, **client_options(settings))


def run_loadtest(settings: LoadSettings, images_dir: str | os.PathLike | None = None,
                 model_dir: str | os.PathLike | None = None) -> list[LevelResult]:
    """Build the payloads (see the module docstring) and run the sweep."""
    if settings.endpoint not in ENDPOINTS:
        raise InputError(f"unknown endpoint '{settings.endpoint}'", fix=f"choose one of {', '.join(ENDPOINTS)}")
    if settings.images_per_request < 1:
        raise InputError(f"{settings.images_per_request} images per request", fix="send at least 1")
    check_url(settings.url)
    files = image_files(images_dir) if images_dir is not None else None
    if settings.endpoint == "predict":
        if files is None:
            raise InputError("the predict endpoint takes encoded images", fix="pass --images DIR")
        payloads = predict_payloads(files, settings.images_per_request)
    else:
        if model_dir is not None and files is None:
            raise InputError("--model-dir preprocesses images", fix="pass --images DIR as well")
        metadata = fetch_metadata(settings.url, settings.model, settings.timeout_s, **client_options(settings))
        payloads = infer_payloads(metadata, files, model_dir,
                                  settings.seed, settings.images_per_request)
    return asyncio.run(sweep(settings, payloads))


# reports ----------------------------------------------------------------------------------------
def perf_analyzer_csv(results: Sequence[LevelResult]) -> str:
    """perf_analyzer's ``--verbose-csv`` table: per level, microseconds (integers)."""
    rate_mode = any(r.request_rate is not None for r in results)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("Request Rate" if rate_mode else "Concurrency", *PERF_ANALYZER_COLUMNS[1:]))
    for r in results:
        us = {k: int(round(v * 1e3)) for k, v in r.latency_ms.items()}
        queue = int(round((r.server or {}).get("queue_ms", 0.0) * 1e3))
        compute = int(round((r.server or {}).get("compute_ms", 0.0) * 1e3))
        mean = us.get("mean", 0)
        writer.writerow((r.request_rate if rate_mode else r.concurrency, round(r.images_per_s, 1), 0,
                         max(0, mean - queue - compute), queue, 0, compute, 0, 0, us.get("p50", 0), us.get("p90", 0),
                         us.get("p95", 0), us.get("p99", 0), mean, mean, 0))
    return out.getvalue()


def markdown(results: Sequence[LevelResult], settings: LoadSettings) -> str:
    mode = f"Poisson arrivals at {settings.request_rate}/s, " if settings.request_rate else ""
    lines = [f"# Load test: {settings.model} at {settings.url} ({settings.endpoint})", "",
             f"{mode}{settings.duration_s:g} s per level after {settings.warmup_s:g} s warm-up, "
             f"{settings.images_per_request} image(s) per request.",
             "", "| concurrency | requests | images/s | p50 ms | p90 ms | p95 ms | p99 ms | errors | mean batch | batch sizes "
                 "| client CPU (cores) |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for r in results:
        lat = [f"{r.latency_ms[k]:.1f}" if k in r.latency_ms else "—" for k in ("p50", "p90", "p95", "p99")]
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(r.errors.items())) or "0"
        batch = f"{r.server['mean_batch']:.2f}" if r.server else "—"
        sizes = ", ".join(f"{k}: {v}" for k, v in r.server["batch_sizes"].items()) if r.server else "—"
        client = " + ".join(f"{c:.2f}" for c in r.client_cpu) if r.client_cpu else "—"
        lines.append(f"| {r.concurrency} | {r.requests} | {r.images_per_s:.1f} | {' | '.join(lat)} | {errors} | "
                     f"{batch} | {sizes} | {client}{' **client-bound**' if r.client_bound else ''} |")
    if any(r.client_bound for r in results):
        lines += ["", f"**client-bound**: a load-generator process used ≥ {CLIENT_BOUND} of a core; that level's "
                      "images/s is the client's limit, not the server's (spread it with `--processes N`, or measure "
                      "with `python -m visionrt.benchmarks.serving --wrk`)."]
    return "\n".join(lines) + "\n"


def write_chart(results: Sequence[LevelResult], path: str | os.PathLike, title: str = "") -> None:
    """p50 (whisker to p99) latency against images/s, one point per level labelled with its concurrency."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in results if r.latency_ms]
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    x = [r.images_per_s for r in shown]
    p50 = [r.latency_ms["p50"] for r in shown]
    ax.errorbar(x, p50, yerr=[[0.0] * len(shown), [r.latency_ms["p99"] - r.latency_ms["p50"] for r in shown]],
                marker="o", capsize=3, label="p50 (whisker: p99)")
    for r, xi, yi in zip(shown, x, p50):
        ax.annotate(f"c={r.concurrency}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("throughput (images/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def write_reports(results: Sequence[LevelResult], settings: LoadSettings, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``loadtest.json``, ``loadtest.md``, ``loadtest.csv`` (perf_analyzer columns) and ``loadtest.png`` in ``out_dir``."""
    from .machine import describe_machine

    out = Path(out_dir)
    paths = {kind: out / f"loadtest.{ext}" for kind, ext in
             (("json", "json"), ("markdown", "md"), ("csv", "csv"), ("chart", "png"))}
    body = {"format": "visionrt-loadtest", "format_version": 1,
            "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "settings": dataclasses.asdict(settings), "machine": describe_machine(),
            "levels": [dataclasses.asdict(r) for r in results]}
    atomic.write_text(paths["json"], json.dumps(body, indent=2) + "\n")
    atomic.write_text(paths["markdown"], markdown(results, settings))
    atomic.write_text(paths["csv"], perf_analyzer_csv(results))
    write_chart(results, paths["chart"], f"{settings.model} ({settings.endpoint})")
    return paths


# command line ------------------------------------------------------------------------------------
def cmd_loadtest(args: argparse.Namespace) -> None:
    from visionrt.runtime.cli import emit

    settings = LoadSettings(url=args.url, model=args.model, endpoint=args.endpoint, concurrency=tuple(args.concurrency),
                            duration_s=args.duration, warmup_s=args.warmup, request_rate=args.request_rate,
                            max_requests=args.max_requests, timeout_s=args.timeout, seed=args.seed,
                            images_per_request=args.images_per_request, processes=args.processes,
                            api_key_file=str(args.api_key_file) if args.api_key_file else None,
                            cacert=str(args.cacert) if args.cacert else None)
    results = run_loadtest(settings, args.images, args.model_dir)
    paths = write_reports(results, settings, args.out)
    emit(args, {"reports": {k: str(v) for k, v in paths.items()}, "levels": [dataclasses.asdict(r) for r in results]},
         markdown(results, settings) + f"\nreports: {', '.join(str(p) for p in paths.values())}")


def register(command) -> None:
    """Add ``loadtest`` through the root CLI's ``command(name, func, help)``."""
    from visionrt.runtime.argtypes import (existing_dir, existing_file, int_list, non_negative_float,
                                           non_negative_int, output_dir, positive_float, positive_int)

    p = command("loadtest", cmd_loadtest, "measure a running server: throughput and latency per concurrency level")
    p.add_argument("url", help="the server, e.g. http://127.0.0.1:8000 (nothing else is contacted)")
    p.add_argument("--model", required=True, help="the served model's name")
    p.add_argument("--images", type=existing_dir, help="folder of images to send (predict; infer with --model-dir)")
    p.add_argument("--endpoint", choices=ENDPOINTS, default="predict")
    p.add_argument("--model-dir", type=existing_dir, help="infer: preprocess the images as this model directory says "
                                                  "(default: random tensors of the served input shape)")
    p.add_argument("--concurrency", type=int_list, default=[1, 4, 16], help="levels, comma-separated (default 1,4,16)")
    p.add_argument("--duration", type=positive_float, default=10.0, help="seconds per level (default 10)")
    p.add_argument("--warmup", type=non_negative_float, default=1.0, help="seconds of warm-up before each level (default 1)")
    p.add_argument("--request-rate", type=positive_float, help="requests/s with Poisson arrivals (default: closed loop)")
    p.add_argument("--max-requests", type=positive_int, default=100_000, help="per level, at most (default 100000)")
    p.add_argument("--timeout", type=positive_float, default=30.0, help="per request, seconds")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--images-per-request", type=positive_int, default=1,
                   help="images in each request: a multipart form (predict) or an N-row tensor (infer); default 1")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="load-generator processes sharing each level's concurrency (default 1; one Python process "
                        "drives at most one core)")
    p.add_argument("--out", type=output_dir, default=Path("loadtest"), help="report folder (default ./loadtest)")
    p.add_argument("--api-key-file", type=existing_file, metavar="FILE",
                   help="send 'Authorization: Bearer <key>' with the first key of FILE (a server's --api-key-file)")
    p.add_argument("--cacert", type=existing_file, metavar="PEM",
                   help="https: trust the certificates of PEM (e.g. a self-signed server's; default: the system's)")
