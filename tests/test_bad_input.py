"""Every bad input gets a clear one-line error (and a non-zero exit from the CLI), and loses nothing."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import require_or_skip, run_cli
from visionrt.runtime import ArtifactError, EngineMismatch, InputError, ModelDir, Predictor
from visionrt.runtime.images import load_image


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    with Predictor(tiny_model_dir) as p:
        yield p


def test_missing_file(predictor, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        predictor.predict(tmp_path / "nope.png")


def test_non_image_file(predictor, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text, not pixels")
    with pytest.raises(InputError, match="is not an image"):
        predictor.predict(path)


def test_truncated_image(predictor, tiny_data, tmp_path):
    data = (tiny_data / "images" / "test" / "000001.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="corrupt or truncated"):
        predictor.predict(path)


def test_directory_instead_of_image(predictor, tmp_path):
    with pytest.raises(InputError, match="not a file"):
        predictor.predict(tmp_path)


@pytest.mark.parametrize("array, message", [
    (np.zeros((64, 64, 3), np.float32), "must be uint8"),
    (np.zeros((64, 64, 2), np.uint8), "expected \\[H, W, 3\\]"),
    (np.zeros((2, 64, 64, 3), np.uint8), "expected \\[H, W, 3\\]"),
    (np.zeros((4, 4, 3), np.uint8), "at least 8×8"),
])
def test_bad_arrays(predictor, array, message):
    with pytest.raises(InputError, match=message):
        predictor.predict(array)


def test_gray_and_rgba_are_converted(predictor):
    gray = np.full((64, 64), 128, np.uint8)
    assert load_image(gray).shape == (64, 64, 3)
    assert load_image(np.zeros((64, 64, 4), np.uint8)).shape == (64, 64, 3)
    assert len(predictor.predict(gray)) == 1


@pytest.mark.parametrize("feed, message", [
    ({"images": np.zeros((1, 3, 64, 64), np.float64)}, "dtype float64, expected float32"),
    ({"images": np.zeros((1, 3, 32, 64), np.float32)}, "axis 2 must be 64"),
    ({"images": np.zeros((3, 64, 64), np.float32)}, "expected rank 4"),
    ({"pixels": np.zeros((1, 3, 64, 64), np.float32)}, "expected \\['images'\\]"),
])
def test_runner_rejects_wrong_feeds(predictor, feed, message):
    with pytest.raises(InputError, match=message):
        predictor.runner.infer(feed)


def copy_model(tiny_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


def test_truncated_onnx_is_refused_before_running(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path)
    onnx_path = model / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        Predictor(model)


def test_corrupt_onnx_without_manifest_check(tmp_path):
    from visionrt.runtime.backends.onnxruntime import OnnxRuntimeRunner

    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ArtifactError, match="cannot load"):
        OnnxRuntimeRunner(path).activate()


def test_model_dir_without_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        ModelDir.open(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        ModelDir.open(tmp_path / "missing")


def test_corrupt_manifest(tiny_model_dir, tmp_path):
    model = copy_model(tiny_model_dir, tmp_path)
    (model / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ModelDir.open(model)
    (model / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="not a visionrt manifest"):
        ModelDir.open(model)


def test_engine_for_another_tensorrt(tiny_model_dir, tmp_path):
    from visionrt.runtime.backends.tensorrt import TensorRTRunner

    engine = tmp_path / "model.trt.engine"
    engine.write_bytes(b"\0" * 1024)
    facts = {"flavour": "tensorrt", "tensorrt_version": "10.13.0.35", "engine_bytes": 1024,
             "inputs": [], "outputs": [], "profile": {}, "compute_capabilities": ["8.6"]}
    with pytest.raises(Exception) as info:
        TensorRTRunner(engine, facts).activate()
    # without full TensorRT installed: "not installed" (BackendUnavailable); with another one: EngineMismatch
    assert "TensorRT" in str(info.value) and "visionrt build" in str(info.value) or "pip install" in str(info.value)


def test_rtx_engine_from_another_release(tiny_model_dir, tmp_path):
    require_or_skip("tensorrt_rtx_bindings")
    from visionrt.runtime.backends.tensorrt import TensorRTRunner

    engine = tmp_path / "model.rtx.engine"
    engine.write_bytes(b"\0" * 1024)
    facts = {"flavour": "tensorrt_rtx", "tensorrt_version": "0.9.0", "engine_bytes": 1024,
             "inputs": [], "outputs": [], "profile": {}, "compute_capabilities": ["8.6"]}
    with pytest.raises(EngineMismatch, match="0.9.0"):
        TensorRTRunner(engine, facts).activate()


@pytest.mark.parametrize("make_args, message", [
    (lambda d, t: ["predict", str(d), str(t / "missing.png")], "does not exist"),
    (lambda d, t: ["predict", str(t), str(t / "x.png")], "no manifest.json"),
    (lambda d, t: ["predict", str(d), str(t / "text.png")], "is not an image"),
    (lambda d, t: ["bench", str(t / "nowhere")], "does not exist"),
    (lambda d, t: ["build", str(t)], "no manifest.json"),
    (lambda d, t: ["pipeline", "all", "--out", str(t / "runs"), "--model", "unet"], "names one task's architecture"),
])
def test_cli_errors_are_one_line_without_traceback(tiny_model_dir, tmp_path, make_args, message):
    (tmp_path / "text.png").write_text("hello")
    result = run_cli(*make_args(tiny_model_dir, tmp_path), check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_options_the_task_does_not_take_are_refused(predictor):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match="classify predictions take no option max_detections") as err:
        predictor.predict(image, max_detections=3)
    assert "top_k" in err.value.fix


def test_cli_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "predict", str(tmp_path), "x.png", check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_failed_export_keeps_earlier_artifacts(tiny_model_dir, tmp_path, monkeypatch):
    """A stage that fails leaves the model directory as it was (atomic writes)."""
    from visionrt.export import onnx_export

    model = ModelDir.open(copy_model(tiny_model_dir, tmp_path))
    before = {p.name: p.read_bytes() for p in model.root.iterdir() if p.is_file()}

    def broken_checker(proto, full_check=False):
        raise onnx_export.onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(onnx_export.onnx.checker, "check_model", broken_checker)
    with pytest.raises(ArtifactError, match="simulated"):
        onnx_export.export_onnx(model)
    after = {p.name: p.read_bytes() for p in model.root.iterdir() if p.is_file()}
    assert after == before


@pytest.mark.slow  # builds an engine
def test_cli_engine_from_another_tensorrt_release(tiny_model_dir, tiny_data, tmp_path):
    """A real RTX engine whose manifest says it came from another release: refused before loading."""
    require_or_skip("tensorrt_rtx_bindings")
    from visionrt.export.build import build

    model = ModelDir.open(copy_model(tiny_model_dir, tmp_path))
    build(model, flavour="tensorrt_rtx")
    model.manifest.engines["rtx"]["tensorrt_version"] = "1.0.0.1"
    model.save()
    image = tiny_data / "images" / "test" / "000001.png"
    result = run_cli("predict", str(model.root), str(image), "--backend", "tensorrt", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1.0.0.1" in result.stderr and "visionrt build" in result.stderr
