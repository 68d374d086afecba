"""The quick classification pipeline end to end, run once through the CLI (slow: a few minutes)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import HAS_RTX, needs_extra, run_cli
from visionrt.runtime import atomic
from visionrt.runtime.manifest import ModelDir

pytestmark = pytest.mark.slow


def test_accuracy_reaches_target(pipeline_run):
    m = ModelDir.open(pipeline_run["model_dir"]).manifest
    assert m.metrics["pytorch"]["test"]["top1"] >= 0.95
    assert m.metrics["onnxruntime-cpu"]["test"]["top1"] >= 0.95
    train = next(h for h in m.history if h["stage"] == "train")
    assert train["epochs"][-1]["val_top1"] > train["epochs"][0]["val_top1"]


def test_every_artifact_is_listed_with_a_matching_sha256(pipeline_run):
    model_dir = ModelDir.open(pipeline_run["model_dir"])
    expected = {"weights", "onnx", "parity"} | ({"rtx"} if HAS_RTX else set())
    assert expected <= set(model_dir.manifest.files)
    for key, entry in model_dir.manifest.files.items():
        path = model_dir.path(key)          # raises if missing or the sha256 differs
        assert path.stat().st_size == entry.bytes


def test_parity_within_tolerance_and_same_top1(pipeline_run):
    parity = ModelDir.open(pipeline_run["model_dir"]).manifest.parity["onnxruntime-cpu"]
    assert parity["passed"]
    assert parity["samples"] == 1000
    (logits,) = parity["outputs"]
    assert logits["max_abs"] < 1e-3 and logits["min_atol"] <= parity["atol"]
    assert parity["task"]["top1"]["difference"] == 0.0


@needs_extra(HAS_RTX, "the rtx extra (TensorRT-RTX) is not installed")
def test_rtx_engine_built_and_recorded(pipeline_run):
    model_dir = ModelDir.open(pipeline_run["model_dir"])
    facts = model_dir.manifest.engines["rtx"]
    assert facts["flavour"] == "tensorrt_rtx" and facts["precision"] == "fp32"
    assert facts["onnx_sha256"] == model_dir.manifest.files["onnx"].sha256
    profile = facts["profile"]["images"]
    assert profile["min"][0] == 1 and profile["opt"][0] == 8 and profile["max"][0] == 32
    assert profile["max"][1:] == [3, 64, 64]
    assert model_dir.path("rtx").stat().st_size == facts["engine_bytes"] > 10_000


def test_benchmark_report_json_markdown_chart(pipeline_run):
    model_dir = pipeline_run["model_dir"]
    bench = json.loads((model_dir / "bench" / "bench.json").read_text())
    measured = {(r["backend"], r["mode"], r["batch"]) for r in bench["results"] if r["median_ms"] is not None}
    for backend in ("onnxruntime-cpu", "pytorch"):
        for mode in ("model", "end-to-end"):
            assert {(backend, mode, b) for b in (1, 8, 32)} <= measured
    assert (model_dir / "bench" / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (model_dir / "report.md").read_text()
    for heading in ("## Accuracy", "## Parity", "## Engine", "## Latency", "## Files"):
        assert heading in report
    assert pipeline_run["summary"]["report"] == str(model_dir / "report.md")


def test_predict_cli_round_trip(pipeline_run):
    data = pipeline_run["out"] / "data" / "classify"
    coco = json.loads((data / "annotations" / "test.json").read_text())
    label = {a["image_id"]: str(a["category_id"] - 1) for a in coco["annotations"]}
    images = coco["images"][:20]
    result = run_cli("predict", str(pipeline_run["model_dir"]), *[str(data / "images" / "test" / i["file_name"])
                                                                   for i in images], "--json", "--top-k", "3")
    rows = json.loads(result.stdout)
    assert len(rows) == 20 and all(len(r["top_k"]) == 3 for r in rows)
    correct = np.mean([row["label"] == label[image["id"]] for row, image in zip(rows, images)])
    assert correct >= 0.9


def test_pipeline_rerun_keeps_data(pipeline_run):
    """The dataset is not regenerated when its configuration is unchanged."""
    data = pipeline_run["out"] / "data" / "classify"
    before = atomic.sha256(data / "dataset.json")
    from visionrt.train.cli import build_data

    build_data("classify", data)
    assert atomic.sha256(data / "dataset.json") == before
