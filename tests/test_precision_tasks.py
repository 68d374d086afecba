"""Every task's quick pipeline gives fp16 and int8 files whose accuracy is within the precision's
tolerance of PyTorch fp32 (measured by the export stage on the held-out test split), engines
for them where TensorRT-RTX can build, and a benchmark report per precision.

The trained models are the ones the rest of the suite shares (``quick_run``), not retrained here.
"""
from __future__ import annotations

import pytest

from conftest import HAS_RTX, needs_extra
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.tasks import TASKS, architectures

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("task", TASKS)
def test_reduced_precisions_within_tolerance(quick_run, task):
    import onnx

    from visionrt.export.precision import tensorrt_layout_problems

    model_dir = ModelDir.open(quick_run(task)["model_dir"])
    m = model_dir.manifest
    plugin_model = bool(architectures(task)[m.model["arch"]].plugin_ops)
    for precision, keys in (("fp16", ("onnx_fp16",)), ("int8", ("onnx_int8", "onnx_trt_int8"))):
        record = m.precisions[precision]
        for key in keys:
            assert key in m.files, f"{task}: {key} not written"
            entry = record["files"][key]
            if plugin_model and key.startswith("onnx_trt"):
                # plugin nodes: measured where TensorRT runs it; the portable file of the same
                # calibration is measured here
                assert "accuracy" not in entry
            else:
                accuracy = entry["accuracy"]
                assert accuracy["passed"], f"{task} {key}: {accuracy['metrics']}"
                assert 0 <= accuracy["max_abs_diff"] < float("inf"), (task, key)
                judged = [name for name, figure in accuracy["metrics"].items() if "tolerance" in figure]
                assert judged, f"{task} {key}: no metric was judged against a tolerance"
                for name, figure in accuracy["metrics"].items():
                    assert figure["value"] is not None, (task, key, name)
        assert record["passed"], f"{task} {precision}"
    assert tensorrt_layout_problems(onnx.load(model_dir.path("onnx_trt_int8"))) == []
    calibration = m.precisions["calibration"]
    assert calibration["count"] >= 8 and calibration["seed"] == 0 and len(calibration["images_sha256"]) == 64
    assert "calibration" in m.files


@pytest.mark.parametrize("task", TASKS)
def test_benchmark_report_has_every_precision(quick_run, task):
    run = quick_run(task)
    report = (run["model_dir"] / "bench" / "bench.md").read_text()
    for precision in ("fp32", "fp16", "int8"):
        assert precision in report, f"{task}: no {precision} row in bench.md"
    assert "max \\|diff\\| vs fp32" in report and "file MB" in report, task  # "|" escaped in Markdown


@needs_extra(HAS_RTX, "the rtx extra (TensorRT-RTX) is not installed")
@pytest.mark.parametrize("task", TASKS)
def test_rtx_engines_per_precision_for_plugin_free_models(quick_run, task):
    m = ModelDir.open(quick_run(task)["model_dir"]).manifest
    if architectures(task)[m.model["arch"]].plugin_ops:
        pytest.skip(f"{task}/{m.model['arch']} needs plugins, which TensorRT-RTX lacks")
    for key, precision in (("rtx", "fp32"), ("rtx_fp16", "fp16"), ("rtx_int8", "int8")):
        assert key in m.engines, f"{task}: no {key} engine"
        assert m.engines[key]["precision"] == precision
