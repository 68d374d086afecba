"""The pipeline's report and summary writers on a made-up model directory (no training)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionrt.benchmarks import pipeline
from visionrt.runtime.errors import InputError, VisionRTError
from visionrt.runtime.manifest import InputSpec, Manifest, ModelDir, OutputSpec

PARITY = {"passed": True, "rtol": 1e-3, "samples": 64,
          "outputs": [{"name": "logits", "max_abs": 2e-6, "mean_abs": 3e-7, "min_atol": 2e-6}]}


def made_up_model_dir(out: Path) -> ModelDir:
    """A classification model directory as the pipeline leaves it: metrics, parity, benchmarks, files."""
    root = out / "classify-resnet"
    manifest = Manifest(
        task="classify", model={"arch": "resnet", "kwargs": {}}, classes=[str(d) for d in range(10)],
        input=InputSpec(height=32, width=32), outputs=[OutputSpec("logits", ["batch", 10], "class scores")],
        primary_metric="top1",
        metrics={"pytorch": {"test": {"top1": 0.9712, "top5": 0.999, "images": 64}},
                 "onnxruntime-cpu": {"test": {"top1": 0.9712, "top5": 0.999}, "images": 64}},
        parity={"onnxruntime-cpu": PARITY},
        benchmarks={"median_ms": {"onnxruntime-cpu/model/b1": 0.42, "onnxruntime-cpu/model/b8": 1.5,
                                  "pytorch/model/b1": 1.25, "onnxruntime-cpu/end-to-end/b1": 0.9}})
    model_dir = ModelDir.create(root, manifest)
    (root / "model.onnx").write_bytes(b"onnx bytes")
    model_dir.add_file("onnx", root / "model.onnx", role="portable ONNX")
    model_dir.save()
    return model_dir


def made_up_bench(model_dir: ModelDir) -> dict[str, Path]:
    bench = model_dir.root / "bench"
    bench.mkdir()
    (bench / "bench.md").write_text("# benchmark\n| backend | b1 |\n|---|---|\n| onnxruntime-cpu | 0.42 |\n\n"
                                    "![latency](bench.png)\n")
    (bench / "bench.json").write_text(json.dumps({"results": [], "baseline": "pytorch"}))
    return {"markdown": bench / "bench.md", "json": bench / "bench.json", "chart": bench / "bench.png"}


def test_report_has_every_section_and_links_into_the_model_directory(tmp_path):
    model_dir = made_up_model_dir(tmp_path)
    (model_dir.root / "pictures").mkdir()
    picture = model_dir.root / "pictures" / "0001.png"
    picture.write_bytes(b"png")
    paths = pipeline.write_pipeline_report(model_dir, True, "model.rtx: tensorrt_rtx 1.2", made_up_bench(model_dir), [picture])
    report = paths["markdown"].read_text()
    for heading in ("## Accuracy", "## Parity", "## Engine", "## Latency", "## Pictures", "## Files"):
        assert heading in report
    assert "| backend | top1 | top5 | images |" in report
    assert "| pytorch | 0.9712 | 0.9990 | 64 |" in report and "| onnxruntime-cpu | 0.9712 | 0.9990 | 64 |" in report
    assert "- onnxruntime-cpu: PASS, max |diff| 2.00e-06, mean |diff| 3.00e-07" in report
    assert "- model.rtx: tensorrt_rtx 1.2" in report
    assert "![latency](bench/bench.png)" in report and "![0001](pictures/0001.png)" in report
    assert "| onnx | model.onnx | 10 |" in report
    document = json.loads(paths["json"].read_text())
    assert document["parity_passed"] is True and document["benchmarks"]["baseline"] == "pytorch"
    assert paths["chart"] == model_dir.root / "bench" / "bench.png"


def test_summary_row_takes_batch_1_model_latency_per_backend(tmp_path):
    model_dir = made_up_model_dir(tmp_path)
    row = pipeline.summary_row(model_dir, tmp_path)
    assert row["values"] == {"pytorch": 0.9712, "onnxruntime-cpu": 0.9712}
    assert row["latency_b1"] == {"onnxruntime-cpu": {"ms": 0.42, "input": None},
                                 "pytorch": {"ms": 1.25, "input": None}}
    assert row["report"] == "classify-resnet/report.md" and row["parity"] == {"onnxruntime-cpu": True}


def test_pipeline_all_summarises_every_task_and_reports_failures(tmp_path, monkeypatch):
    """``visionrt pipeline all``: one summary row per task; a failing task is reported, the
    others still run, and the failure is raised at the end."""
    model_dir = made_up_model_dir(tmp_path)
    ran = []

    def fake_run_pipeline(task, out, **options):
        ran.append(task)
        if task == "segment":
            raise InputError("no segmentation today", fix="none")
        return {"model_dir": str(model_dir.root)}

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    with pytest.raises(VisionRTError, match="failed for segment"):
        pipeline.run_all(["segment", "classify"], tmp_path)
    assert ran == ["segment", "classify"]
    rows = json.loads((tmp_path / "summary.json").read_text())
    assert rows[0] == {"task": "segment", "error": "no segmentation today (none)"}
    classify = rows[1]
    manifest = ModelDir.open(model_dir.root).manifest
    assert classify["values"]["onnxruntime-cpu"] == manifest.metrics["onnxruntime-cpu"]["test"]["top1"]
    assert classify["parity"] == {"onnxruntime-cpu": True}
    assert classify["latency_b1"]["onnxruntime-cpu"]["ms"] == manifest.benchmarks["median_ms"]["onnxruntime-cpu/model/b1"]
    text = (tmp_path / "summary.md").read_text()
    assert "| segment |" in text and "FAILED" in text and "[report](classify-resnet/report.md)" in text
    assert "| classify | resnet | top1 | 0.9712 | 0.9712 | onnxruntime-cpu PASS | none (see report) | 0.42 | 1.25 |" in text
