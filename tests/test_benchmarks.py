"""The benchmark harness (timing, model-only and end-to-end points) and the report writers."""
from __future__ import annotations

import builtins
import json
import types

import numpy as np
import pytest

from conftest import require_or_skip
from visionrt.benchmarks import harness
from visionrt.benchmarks.harness import (BenchSettings, Result, Timing, bench_end_to_end, bench_model,
                                         measure, run_timed)
from visionrt.benchmarks.report import markdown, write_report
from visionrt.runtime.backends.onnxruntime import OnnxRuntimeRunner
from visionrt.runtime.errors import InputError

FAST = BenchSettings(warmup=1, warmup_s=0.0, iterations=3, min_seconds=0.0, max_seconds=5.0)


def tiny_classifier(path, batch="batch"):
    """A 3x8x8 -> 4 logits ONNX model: 1x1 conv, global average pool, flatten."""
    onnx = require_or_skip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 1, 1), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["features"]),
         helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])],
        initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10  # onnx 1.23 writes IR 14; onnxruntime 1.31 loads at most 13
    onnx.save(model, path)
    return path


def make_feed(batch):
    return {"images": np.zeros((batch, 3, 8, 8), np.float32)}


def fixed_result(backend, batch, median_ms, mode="model", task="classify", model="resnet18"):
    return Result(task=task, model=model, backend=backend, precision="fp32", batch=batch, mode=mode,
                  timing=Timing.from_samples([median_ms] * 3))


# Timing --------------------------------------------------------------------------------

def test_timing_statistics_on_a_known_sequence():
    t = Timing.from_samples(range(1, 101))
    assert (t.n, t.min_ms, t.max_ms) == (100, 1.0, 100.0)
    assert t.mean_ms == pytest.approx(50.5)
    assert t.median_ms == pytest.approx(50.5)
    assert t.p90_ms == pytest.approx(90.1)  # linear interpolation between ranks 90 and 91
    assert t.p99_ms == pytest.approx(99.01)
    assert t.samples_ms is None
    assert Timing.from_samples([3.0, 1.0, 2.0], keep_samples=True).samples_ms == (3.0, 1.0, 2.0)
    with pytest.raises(ValueError):
        Timing.from_samples([])


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that only moves when the timed function runs: each call takes 0.25 s."""
    now = [0.0]
    monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))

    def call():
        now[0] += 0.25
    return call


@pytest.mark.parametrize("min_runs, min_seconds, max_seconds, expected_runs", [
    (10, 1.0, 60.0, 10),   # the count is reached last
    (2, 1.0, 60.0, 4),     # the duration is reached last
    (100, 1.0, 2.0, 8),    # capped by max_seconds
    (0, 0.0, 60.0, 1),     # always at least one run
])
def test_run_timed_stops_when_count_and_duration_are_reached(fake_clock, min_runs, min_seconds,
                                                             max_seconds, expected_runs):
    samples = run_timed(fake_clock, min_runs, min_seconds, max_seconds)
    assert samples == [250.0] * expected_runs


def test_measure_discards_warmup_runs():
    calls = []
    timing = measure(lambda: calls.append(1), BenchSettings(warmup=2, warmup_s=0, iterations=5, min_seconds=0))
    assert timing.n == 5 and len(calls) == 7


# bench_model / bench_end_to_end --------------------------------------------------------

def test_bench_model_over_onnxruntime(tmp_path):
    runner = OnnxRuntimeRunner(tiny_classifier(tmp_path / "tiny.onnx"), threads=1)
    results = bench_model(runner, make_feed=make_feed, task="classify", model="tiny",
                          batch_sizes=(1, 2, 4), settings=FAST)
    assert [r.batch for r in results] == [1, 2, 4]
    for r in results:
        assert (r.mode, r.backend, r.precision, r.notes) == ("model", "onnxruntime-cpu", "fp32", "")
        assert r.timing.n >= 3 and 0 < r.timing.min_ms <= r.timing.median_ms <= r.timing.p99_ms <= r.timing.max_ms
        assert r.images_per_s == pytest.approx(r.batch * 1e3 / r.timing.median_ms)
    row = results[0].to_dict()
    assert row["median_ms"] == results[0].timing.median_ms and "samples_ms" not in row


def test_bench_model_skips_batch_sizes_a_fixed_batch_runner_cannot_take(tmp_path):
    runner = OnnxRuntimeRunner(tiny_classifier(tmp_path / "tiny.onnx", batch=1), threads=1)
    one, eight = bench_model(runner, make_feed=make_feed, task="classify", model="tiny",
                             batch_sizes=(1, 8), settings=FAST)
    assert one.timing is not None
    assert eight.timing is None and eight.images_per_s is None
    assert "fixed batch size of 1" in eight.notes
    assert eight.to_dict()["median_ms"] is None


def test_a_fixed_batch_runner_takes_any_batch_in_padded_chunks(tmp_path):
    runner = OnnxRuntimeRunner(tiny_classifier(tmp_path / "tiny.onnx", batch=2), threads=1)
    rows = np.random.default_rng(1).standard_normal((5, 3, 8, 8)).astype(np.float32)
    with runner:
        whole = runner.infer({"images": rows})["logits"]  # chunks of 2, 2 and 1 (padded to 2)
        pairs = [runner.infer({"images": rows[i:i + 2]})["logits"] for i in (0, 2)]
        last = runner.infer({"images": np.concatenate([rows[4:], rows[4:]])})["logits"][:1]
        with pytest.raises(InputError, match="batch sizes"):
            runner.infer({"images": rows[:0]})
    assert whole.shape == (5, 4)
    np.testing.assert_array_equal(whole, np.concatenate([*pairs, last]))


def test_bench_model_notes_a_point_stopped_by_max_seconds(tmp_path):
    runner = OnnxRuntimeRunner(tiny_classifier(tmp_path / "tiny.onnx"), threads=1)
    settings = BenchSettings(warmup=1, warmup_s=0, iterations=10**9, min_seconds=0, max_seconds=0.05)
    (result,) = bench_model(runner, make_feed=make_feed, task="classify", model="tiny",
                            batch_sizes=(1,), settings=settings)
    assert "stopped at max_seconds=0.05" in result.notes


def test_bench_end_to_end_hands_the_predictor_one_batch_of_inputs():
    seen = set()
    results = bench_end_to_end(lambda paths: seen.add(len(paths)),
                               inputs_for_batch=lambda batch: [f"image{i}.jpg" for i in range(batch)],
                               backend="onnxruntime-cpu", task="classify", model="tiny",
                               batch_sizes=(1, 3), settings=FAST)
    assert seen == {1, 3}
    assert [(r.mode, r.batch) for r in results] == [("end-to-end", 1), ("end-to-end", 3)]


# reports -------------------------------------------------------------------------------

def sample_results():
    return [
        fixed_result("pytorch", 1, 10.0), fixed_result("pytorch", 8, 40.0),
        fixed_result("onnxruntime-cpu", 1, 4.2), fixed_result("onnxruntime-cpu", 8, 20.0),
        fixed_result("onnxruntime-cpu", 1, 6.0, mode="end-to-end"),
        fixed_result("onnxruntime-cpu", 8, 30.0, mode="end-to-end"),
        fixed_result("pytorch", 1, 12.0, mode="end-to-end"),
        Result("classify", "resnet18", "tensorrt", "fp16", 32, "model", None, "skipped: fixed batch size of 8"),
        fixed_result("onnxruntime-cpu", 1, 100.0, task="segment", model="fcn"),
    ]


ACCURACY = [{"task": "classify", "backend": "pytorch", "precision": "fp32", "top1": 0.9712},
            {"task": "classify", "backend": "onnxruntime-cpu", "precision": "fp32", "top1": 0.9712},
            {"task": "segment", "backend": "onnxruntime-cpu", "precision": "fp32", "mIoU": 0.61}]


def test_markdown_has_one_table_per_task_with_accuracy_and_speed_ratios():
    text = markdown(sample_results(), accuracy=ACCURACY, baseline="pytorch", settings=FAST)
    assert text.count("\n## ") == 2 and "## classify" in text and "## segment" in text
    assert ("| model | backend | precision | mode | batch | median ms | p90 ms | p99 ms | images/s | top1 | notes |"
            in text)
    assert "| resnet18 | onnxruntime-cpu | fp32 | model | 1 | 4.20 | 4.20 | 4.20 | 238 | 0.971 |  |" in text
    assert "| resnet18 | tensorrt | fp16 | model | 32 | — | — | — | — | — | skipped: fixed batch size of 8 |" in text
    assert "- onnxruntime-cpu fp32 / pytorch fp32 (resnet18, model): batch 1 = 0.42, batch 8 = 0.50" in text
    assert "- onnxruntime-cpu fp32 / pytorch fp32 (resnet18, end-to-end): batch 1 = 0.50" in text
    segment = text[text.index("## segment"):]
    assert "| mIoU |" in segment and "top1" not in segment and "relative to" not in segment
    # model-only rows come before end-to-end rows
    assert text.index("| model | 8 |") < text.index("| end-to-end | 1 |")


def test_write_report_writes_json_markdown_and_png(tmp_path):
    paths = write_report(sample_results(), tmp_path / "report", accuracy=ACCURACY, baseline="pytorch",
                         settings=FAST)
    document = json.loads(paths.json.read_text())
    assert document["format"] == "visionrt-bench"
    assert document["settings"]["iterations"] == 3 and document["baseline"] == "pytorch"
    assert len(document["results"]) == len(sample_results()) and document["accuracy"] == ACCURACY
    assert {"cpu", "usable_cpus", "packages", "gpus"} <= set(document["machine"])
    text = paths.markdown.read_text()
    assert "## classify" in text and "![latency and throughput per batch size](bench.png)" in text
    png = paths.png.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["bench.json", "bench.md", "bench.png"]


def test_write_report_without_matplotlib_skips_the_chart_and_says_so(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.split(".")[0] == "matplotlib":
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    paths = write_report(sample_results(), tmp_path, machine={"cpu": "test"})
    assert paths.png is None and not (tmp_path / "bench.png").exists()
    assert "Chart skipped: matplotlib is not installed" in paths.markdown.read_text()
    assert json.loads(paths.json.read_text())["baseline"] == "pytorch"  # the first backend
