"""``visionrt loadtest``: statistics, metric deltas and reports against a small fake server, then
(marked slow) against the real ``visionrt serve``, and the serving figures on tiny settings; wrk (the
reference figures' C client) against the fake server, and the reference figures (slow)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import require_or_skip

require_or_skip("fastapi", reason="needs the serve extra")
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402
from prometheus_client import CollectorRegistry, Histogram, generate_latest  # noqa: E402

from visionrt.benchmarks import loadtest  # noqa: E402
from visionrt.benchmarks.loadtest import (PERF_ANALYZER_COLUMNS, LevelResult, check_url, parse_metrics,  # noqa: E402
                                          perf_analyzer_csv, server_delta, summarise)
from visionrt.runtime.cli import build_parser  # noqa: E402
from visionrt.runtime.errors import InputError  # noqa: E402


def cli(*argv: str):
    """Run ``loadtest`` through the root CLI's parser."""
    args = build_parser().parse_args(["loadtest", *argv])
    args.func(args)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1:8000", "http://", "unix:/tmp/s"])
def test_only_http_urls_are_targets(url):
    with pytest.raises(InputError, match="not an http"):
        check_url(url)


def test_a_remote_host_is_warned_about_not_contacted(caplog):
    with caplog.at_level(logging.WARNING):
        assert check_url("http://192.0.2.1:9/") == "http://192.0.2.1:9"
        assert check_url("http://127.0.0.1:9") == "http://127.0.0.1:9"
    assert [r.getMessage() for r in caplog.records] == ["192.0.2.1 is not this machine: the load goes over the network"]


def test_summary_percentiles_and_errors():
    samples = [(10.0 + i, (i + 1) / 1000, 1) for i in range(100)]  # latencies 1..100 ms, last done at t=109
    result = summarise(4, None, {"samples": samples, "errors": {"503": 3}, "started": 9.0})
    assert result.requests == 103 and result.images == 100
    assert result.seconds == pytest.approx(100.0) and result.images_per_s == pytest.approx(1.0)
    assert result.latency_ms["p50"] == pytest.approx(50.5) and result.latency_ms["p99"] == pytest.approx(99.01)
    assert result.latency_ms["mean"] == pytest.approx(50.5) and result.errors == {"503": 3}


def _metrics_text(batches: list[int], queue_s: float = 0.001, compute_s: float = 0.004) -> str:
    registry = CollectorRegistry()
    batch = Histogram("visionrt_batch_size", "", ["model"], buckets=(1, 2, 4, 8, 16), registry=registry)
    queue = Histogram("visionrt_queue_seconds", "", ["model"], registry=registry)
    compute = Histogram("visionrt_compute_seconds", "", ["model"], registry=registry)
    for size in batches:
        batch.labels("m").observe(size)
        compute.labels("m").observe(compute_s)
        for _ in range(size):
            queue.labels("m").observe(queue_s)
    batch.labels("other").observe(16)
    return generate_latest(registry).decode()


def test_batch_sizes_are_the_difference_of_two_scrapes():
    before = parse_metrics(_metrics_text([1, 1]), "m")
    after = parse_metrics(_metrics_text([1, 1, 1, 3, 4, 4, 16]), "m")
    delta = server_delta(before, after)
    assert delta["executions"] == 5 and delta["images"] == 28
    assert delta["batch_sizes"] == {"<=1": 1, "<=4": 3, "<=16": 1}
    assert delta["mean_batch"] == pytest.approx(28 / 5)
    assert delta["queue_ms"] == pytest.approx(1.0) and delta["compute_ms"] == pytest.approx(4.0)
    assert server_delta({}, {}) is None  # a server without visionrt's metrics


def test_csv_has_perf_analyzers_columns_in_microseconds():
    level = LevelResult(16, None, 100, 100, 2.0, 50.0,
                        {"p50": 1.5, "p90": 2.0, "p95": 2.5, "p99": 3.25, "mean": 1.75, "min": 1.0, "max": 4.0},
                        {}, {"queue_ms": 0.5, "compute_ms": 1.0})
    rows = list(csv.reader(io.StringIO(perf_analyzer_csv([level]))))
    assert tuple(rows[0]) == PERF_ANALYZER_COLUMNS and rows[0][:2] == ["Concurrency", "Inferences/Second"]
    row = dict(zip(rows[0], rows[1]))
    assert (row["Concurrency"], row["Inferences/Second"], row["p50 latency"], row["p99 latency"]) == ("16", "50.0", "1500", "3250")
    assert (row["Server Queue"], row["Server Compute Infer"], row["Network+Server Send/Recv"]) == ("500", "1000", "250")
    rate = dataclasses.replace(level, request_rate=20.0)
    assert next(csv.reader(io.StringIO(perf_analyzer_csv([rate]))))[0] == "Request Rate"


# a fake server: fixed service time, every 4th request refused ------------------------------------
@pytest.fixture(scope="module")
def fake_server():
    app = FastAPI()
    registry = CollectorRegistry()
    batch = Histogram("visionrt_batch_size", "", ["model"], buckets=(1, 2, 4), registry=registry)
    seen = {"requests": 0, "bodies": set()}

    @app.post("/v1/models/{m}/predict")
    async def predict(m: str, request: Request) -> Response:
        seen["requests"] += 1
        seen["bodies"].add(await request.body())
        if seen["requests"] % 4 == 0:
            return Response('{"error": "queue full"}', status_code=503)
        batch.labels(m).observe(1)
        time.sleep(0.002)
        return Response('{"results": []}', media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain")

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_sweep_against_a_fake_server_writes_every_report(fake_server, image_dir, tmp_path, capsys):
    url, seen = fake_server
    cli(url, "--model", "m", "--images", str(image_dir), "--concurrency", "1,3", "--duration", "0.4",
        "--warmup", "0", "--out", str(tmp_path), "--json")
    printed = json.loads(capsys.readouterr().out)
    levels = printed["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 3]
    assert len(seen["bodies"]) == 3  # every image file was sent, the text file not
    for level in levels:
        refused = level["errors"].get("503", 0)
        assert refused >= 1 and set(level["errors"]) == {"503"}
        assert level["images"] > 0 and level["images_per_s"] > 0 and level["latency_ms"]["p99"] >= 2.0
        assert level["server"]["images"] == level["images"]  # the server's histogram delta: one per success
        assert level["server"]["batch_sizes"] == {"<=1": level["images"]}
    rows = list(csv.reader((tmp_path / "loadtest.csv").open()))
    assert tuple(rows[0]) == PERF_ANALYZER_COLUMNS and [r[0] for r in rows[1:]] == ["1", "3"]
    assert (tmp_path / "loadtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 3 |" in (tmp_path / "loadtest.md").read_text()
    assert json.loads((tmp_path / "loadtest.json").read_text())["levels"] == levels


def test_load_spread_over_processes_counts_every_process(fake_server, image_dir, tmp_path, capsys):
    url, _ = fake_server
    cli(url, "--model", "m", "--images", str(image_dir), "--concurrency", "3", "--duration", "0.6",
        "--warmup", "0", "--processes", "2", "--out", str(tmp_path), "--json")
    (level,) = json.loads(capsys.readouterr().out)["levels"]
    assert len(level["client_cpu"]) == 2 and all(0 < c < 1.5 for c in level["client_cpu"])  # shares 2 and 1
    assert level["images"] > 0 and level["server"]["images"] == level["images"]
    assert "client CPU (cores)" in (tmp_path / "loadtest.md").read_text()


def test_a_client_bound_level_is_flagged():
    samples = [(2.0 + i / 100, 0.001, 1) for i in range(101)]  # the last done 1 s after the start
    busy = summarise(16, None, {"samples": samples, "errors": {}, "started": 2.0, "cpu": [0.2, 0.95]})
    assert busy.client_cpu == pytest.approx([0.2, 0.95]) and busy.client_bound
    idle = summarise(16, None, {"samples": samples, "errors": {}, "started": 2.0, "cpu": [0.5]})
    assert not idle.client_bound and not summarise(1, None, {"samples": samples, "errors": {}, "started": 2.0}).client_bound
    settings = loadtest.LoadSettings(url="http://127.0.0.1:9", model="m")
    assert "0.20 + 0.95 **client-bound**" in loadtest.markdown([busy], settings)
    assert "client-bound" not in loadtest.markdown([idle], settings)
    assert loadtest.shares(16, 3) == [6, 5, 5] and loadtest.shares(2, 4) == [1, 1]


def test_poisson_arrivals_stop_at_the_request_cap(fake_server, image_dir, tmp_path):
    url, _ = fake_server
    settings = loadtest.LoadSettings(url=url, model="m", concurrency=(2,), duration_s=30.0, warmup_s=0.0,
                                     request_rate=200.0, max_requests=12)
    started = time.perf_counter()
    (level,) = loadtest.run_loadtest(settings, image_dir)
    assert level.requests == 12 and time.perf_counter() - started < 10  # stopped by the cap, not the 30 s
    assert level.request_rate == 200.0


def test_infer_without_model_dir_needs_a_fixed_shape():
    metadata = {"name": "m", "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 3, -1, -1]}],
                "outputs": [{"name": "out"}]}
    with pytest.raises(InputError, match="--model-dir"):
        loadtest.infer_payloads(metadata, None, None)
    metadata["inputs"][0]["shape"] = [-1, 3, 8, 8]
    (payload, *_) = loadtest.infer_payloads(metadata, None, None)
    head = json.loads(payload.body[:int(payload.headers["Inference-Header-Content-Length"])])
    assert head["inputs"][0]["shape"] == [1, 3, 8, 8] and head["inputs"][0]["parameters"]["binary_data_size"] == 3 * 64 * 4
    (payload, *_) = loadtest.infer_payloads(metadata, None, None, images_per_request=3)
    head = json.loads(payload.body[:int(payload.headers["Inference-Header-Content-Length"])])
    assert head["inputs"][0]["shape"] == [3, 3, 8, 8] and payload.images == 3


def test_several_images_per_request_are_a_multipart_form(fake_server, image_dir, tmp_path):
    files = loadtest.image_files(image_dir)
    payloads = loadtest.predict_payloads(files, images_per_request=2)
    assert len(payloads) == 3 and {p.images for p in payloads} == {2}
    assert payloads[0].headers["content-type"].startswith("multipart/form-data; boundary=")
    assert files[0].read_bytes() in payloads[0].body and files[1].read_bytes() in payloads[0].body
    assert files[2].read_bytes() in payloads[2].body and files[0].read_bytes() in payloads[2].body  # wraps around
    url, _ = fake_server
    settings = loadtest.LoadSettings(url=url, model="m", concurrency=(2,), duration_s=30.0, warmup_s=0.0,
                                     max_requests=8, images_per_request=2)
    (level,) = loadtest.run_loadtest(settings, image_dir)
    assert level.images == 2 * (level.requests - sum(level.errors.values()))  # counted as 2 images a request


def test_serving_options_for_the_server_come_after_a_double_dash(monkeypatch, tmp_path):
    from visionrt.benchmarks import serving

    seen = {}
    monkeypatch.setattr(serving, "serving_figures", lambda model_dir, images, **kw: seen.update(kw, model_dir=model_dir) or {})
    serving.main([str(tmp_path), "--images", str(tmp_path), "--images-per-request", "8", "--", "--threads", "1"])
    assert seen["model_dir"] == tmp_path and seen["server_options"] == ["--threads", "1"]
    assert seen["images_per_request"] == 8
    serving.main([str(tmp_path), "--images", str(tmp_path)])
    assert seen["server_options"] == [] and seen["images_per_request"] == 1


# the real server ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_loadtest_against_visionrt_serve(tiny_model_dir, tiny_data, tmp_path):
    from visionrt.benchmarks.serving import running_server

    images = tiny_data / "images" / "test"
    with running_server([tiny_model_dir], "--max-queue-delay-ms", "2") as server:
        for run, (endpoint, extra) in enumerate((("predict", ()), ("infer", ("--model-dir", str(tiny_model_dir))),
                                                 ("predict", ("--images-per-request", "3")),
                                                 ("infer", ("--model-dir", str(tiny_model_dir), "--images-per-request", "3")))):
            out = tmp_path / str(run)
            cli(server.url, "--model", tiny_model_dir.name, "--images", str(images), "--endpoint", endpoint, *extra,
                "--concurrency", "1,8", "--duration", "1", "--warmup", "0.2", "--out", str(out))
            levels = json.loads((out / "loadtest.json").read_text())["levels"]
            for level in levels:
                assert level["errors"] == {} and level["images"] > 0, (endpoint, level)
                assert level["server"]["images"] == level["images"], (endpoint, level)
            # one request in flight: each batch is one request; eight: the batcher merges them
            per_request = 3 if "--images-per-request" in extra else 1
            assert levels[0]["server"]["mean_batch"] == pytest.approx(per_request), (endpoint, levels[0])
            assert levels[1]["server"]["mean_batch"] > per_request, (endpoint, levels[1])


@pytest.mark.slow
def test_serving_figures_on_tiny_settings(tiny_model_dir, tiny_data):
    from visionrt.benchmarks.serving import serving_figures

    figures = serving_figures(tiny_model_dir, tiny_data / "images" / "test", clients=4, seconds=0.5, soak_s=1.0,
                              warmup_s=0.2)
    assert figures["efficiency"]["ratio"] > 0 and figures["batching"]["ratio"] > 0
    assert figures["batching"]["errors"] == {"batched": {}, "unbatched": {}}
    assert figures["idle_latency"]["server_p50_ms"] > 0 and figures["idle_latency"]["predict_p50_ms"] > 0
    assert figures["soak"]["errors"] == {} and figures["soak"]["requests"] > 0
    assert figures["soak"]["rss_after_warmup_kib"] > 10_000


# the reference figures: wrk on its own core ------------------------------------------------------
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make wrk)")


@needs_wrk
def test_wrk_posts_the_payload_and_counts_refusals(fake_server, image_dir):
    from visionrt.benchmarks.wrk import run_wrk

    url, seen = fake_server
    payload = loadtest.predict_payloads(loadtest.image_files(image_dir))[1]
    before = seen["requests"]
    result = run_wrk(f"{url}/v1/models/m/predict", payload, connections=2, seconds=1)
    assert payload.body in seen["bodies"] and result.requests > 10 and result.seconds == pytest.approx(1, abs=0.3)
    assert result.errors["status"] == pytest.approx((seen["requests"] - before) / 4, abs=2)  # every 4th is a 503
    assert result.requests + result.errors["status"] == pytest.approx(seen["requests"] - before, abs=2)
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] and result.client_cpu_s > 0


def test_server_cpu_counts_its_worker_processes():
    from visionrt.benchmarks.serving import process_cpu_s

    burn = "import time; end = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"])
    try:
        deadline = time.monotonic() + 20
        while process_cpu_s(parent.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_cpu_s(parent.pid) >= 0.5  # the burning child's CPU, counted through its parent
    finally:
        parent.kill()
        parent.wait()


def test_wrk_flag_runs_the_reference_figures(monkeypatch, tmp_path, capsys):
    from visionrt.benchmarks import serving

    seen = {}
    monkeypatch.setattr(serving, "reference_figures", lambda model_dir, images, **kw: seen.update(kw) or {})
    monkeypatch.setattr(serving, "reference_markdown", lambda figures: "# table\n")
    serving.main([str(tmp_path), "--images", str(tmp_path), "--wrk", "--repeat", "2", "--out", str(tmp_path)])
    assert seen == {"seconds": 10.0, "connections": 16, "repeat": 2, "server_core": 0, "client_core": 1}
    assert (tmp_path / "serving-reference.md").read_text() == "# table\n"
    assert json.loads((tmp_path / "serving-reference.json").read_text()) == {}



def test_wrk_setups_are_chosen_by_key(monkeypatch, tmp_path, capsys):
    from visionrt.benchmarks import serving

    seen = {}
    monkeypatch.setattr(serving, "reference_figures", lambda model_dir, images, **kw: seen.update(kw) or {})
    monkeypatch.setattr(serving, "reference_markdown", lambda figures: "# table\n")
    serving.main([str(tmp_path), "--images", str(tmp_path), "--wrk", "--setups", "infer,batched"])
    assert [s.key for s in seen["setups"]] == ["batched", "infer"]
    with pytest.raises(SystemExit) as exit_info:
        serving.main([str(tmp_path), "--images", str(tmp_path), "--wrk", "--setups", "batched,fast"])
    assert exit_info.value.code == 2 and "no setup fast" in capsys.readouterr().err


@needs_wrk
@pytest.mark.slow
def test_reference_figures_on_tiny_settings(tiny_model_dir, tiny_data):
    from visionrt.benchmarks.serving import SETUPS, reference_figures, reference_markdown

    chosen = [s for s in SETUPS if s.endpoint == "grpc" or s.server_options == ()]  # batched HTTP, infer, gRPC
    figures = reference_figures(tiny_model_dir, tiny_data / "images" / "test", seconds=1.0, connections=4, repeat=1,
                                setups=chosen)
    for setup in figures["setups"]:
        (run,) = setup["runs"]
        assert run["errors"] == 0 and run["images_per_s"] > 0 and run["server_cpu_s_per_image"] > 0, setup
        assert run["efficiency"] > 0 and run["cpu_efficiency"] > 0 and run["in_process_images_per_s"] > 0, setup
    table = reference_markdown(figures)
    assert all(f"| {s.name} |" in table for s in chosen) and "load average" in table.lower()
