"""The OpenVINO runner: the same ONNX files as onnxruntime, the same outputs, the same interface."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_or_skip
from visionrt.runtime.backends import open_runner
from visionrt.runtime.errors import ArtifactError, InputError
from visionrt.runtime.manifest import ModelDir

require_or_skip("openvino", reason="needs the openvino extra (pip install 'visionrt[openvino]')")


def _batch(model_dir: ModelDir, count: int = 8) -> np.ndarray:
    spec = model_dir.manifest.input
    rng = np.random.default_rng(0)
    return rng.standard_normal((count, spec.channels, spec.height, spec.width)).astype(np.float32)


def test_openvino_matches_onnxruntime(tiny_model_dir):
    model_dir = ModelDir.open(tiny_model_dir)
    feed = {model_dir.manifest.input.name: _batch(model_dir)}
    with open_runner(model_dir, "openvino", threads=1) as openvino, open_runner(model_dir, "onnxruntime") as ort:
        assert openvino.name == "openvino-cpu"
        assert [s.name for s in openvino.inputs] == [s.name for s in ort.inputs]
        assert [s.name for s in openvino.outputs] == [s.name for s in ort.outputs]
        assert openvino.inputs[0].dtype == "float32"
        expected, got = ort.infer(feed), openvino.infer(feed)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-4, rtol=1e-3)


def test_openvino_checks_its_feed(tiny_model_dir):
    model_dir = ModelDir.open(tiny_model_dir)
    with open_runner(model_dir, "openvino") as runner:
        with pytest.raises(InputError, match="dtype float64"):
            runner.infer({model_dir.manifest.input.name: _batch(model_dir).astype(np.float64)})


def test_openvino_refuses_a_missing_precision(tiny_model_dir):
    with pytest.raises(ArtifactError, match="--precision int8"):
        open_runner(ModelDir.open(tiny_model_dir), "openvino", precision="int8")


def test_auto_picks_a_cpu_backend_and_says_why(tiny_model_dir):
    model_dir = ModelDir.open(tiny_model_dir)
    runner = open_runner(model_dir, "auto")
    assert runner.name in ("onnxruntime-cpu", "openvino-cpu")
    assert "fastest for fp32" in runner.chosen_because and "openvino" in runner.chosen_because


def test_auto_uses_the_benchmark_results_when_present(tiny_model_dir, tmp_path):
    import shutil

    root = tmp_path / "tiny"
    shutil.copytree(tiny_model_dir, root)
    model_dir = ModelDir.open(root)
    model_dir.manifest.benchmarks = {"median_ms": {"onnxruntime-cpu/model/b1": 5.0, "openvino-cpu/model/b1": 1.0}}
    runner = open_runner(model_dir, "auto")
    assert runner.name == "openvino-cpu" and "benchmark" in runner.chosen_because
