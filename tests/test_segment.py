"""Semantic segmentation: metrics, post-processing and drawing (fast); every network trained one
epoch on tiny data, exported with parity and built (or refused with the plugin message for
DeconvNet on TensorRT-RTX) (about 20 s each); the quick pipeline (FCN) end to end through the
CLI (slow: one run, about 2-3 minutes on 2 idle cores)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import HAS_RTX, run_cli
from visionrt.runtime import InputError, ModelDir, Predictor
from visionrt.runtime.errors import PluginError
from visionrt.runtime.manifest import InputSpec, Manifest, OutputSpec
from visionrt.runtime.tasks import architectures, segment
from visionrt.train.models.segment import bilinear_upsampler
from visionrt.train.tasks.architectures import model_builders

HAS_ORT_EXTENSIONS = importlib.util.find_spec("onnxruntime_extensions") is not None
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25)]


def manifest(classes=("background", "0", "1", "2")) -> Manifest:
    k = len(classes)
    return Manifest(task="segment", model={"arch": "fcn"}, classes=list(classes), input=InputSpec(height=8, width=8),
                    outputs=[OutputSpec("logits", ["batch", k, 8, 8], "")], postprocess={"palette": PALETTE[:k]})


def logits_for(maps: np.ndarray, classes: int = 4) -> np.ndarray:
    """Logits ``[N, K, H, W]`` whose argmax is ``maps``."""
    return np.moveaxis(np.eye(classes, dtype=np.float32)[maps], -1, 1)


# metrics, post-processing, drawing -------------------------------------------------------------
def test_iou_from_the_confusion_matrix():
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]], np.uint8)[None]
    predicted = target.copy()
    predicted[0, 0, 2] = 0      # one pixel of class 1 missed
    predicted[0, 3, 3] = 2      # one background pixel called class 2
    confusion = segment.confusion_matrix(predicted, target, 4)
    assert confusion.sum() == 16 and confusion[1, 0] == 1 and confusion[0, 2] == 1
    metrics = segment.iou_metrics(confusion, ["background", "0", "1", "2"])
    assert metrics["iou/background"] == pytest.approx(7 / 9)     # 7 right of 8 true + 1 taken
    assert metrics["iou/0"] == pytest.approx(3 / 4)
    assert metrics["iou/1"] == pytest.approx(4 / 5)
    assert "iou/2" not in metrics                                 # absent from the targets: no IoU
    assert metrics["miou"] == pytest.approx((7 / 9 + 3 / 4 + 4 / 5) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(14 / 16)
    assert segment.evaluate({"logits": logits_for(target)}, target, manifest())["miou"] == 1.0


def test_postprocess_gives_class_maps_at_the_original_size():
    maps = np.zeros((2, 8, 8), np.uint8)
    maps[0, :4, :4] = 1          # a quarter of the first image is class "0"
    maps[0, 6:, 6:] = 3
    first, second = segment.postprocess({"logits": logits_for(maps)}, manifest(), image_sizes=[(16, 24), (8, 8)])
    assert first.class_map.shape == (16, 24) and first.class_map.dtype == np.uint8
    assert (first.class_map[:8, :12] == 1).all() and (first.class_map[8:12] == 0).all()
    assert list(first.fractions) == ["background", "0", "2"]     # largest share first
    assert first.fractions["0"] == pytest.approx(0.25) and sum(first.fractions.values()) == pytest.approx(1)
    assert first.to_dict() == {"size": [16, 24], "fractions": first.fractions, "classes_present": ["0", "2"]}
    assert first.summary() == "0: 25.0%, 2: 6.2%" and second.summary() == "only background"


def test_draw_blends_class_colours_and_adds_a_legend():
    maps = np.zeros((1, 8, 8), np.uint8)
    maps[0, 2:6, 2:6] = 2
    (result,) = segment.postprocess({"logits": logits_for(maps)}, manifest(), image_sizes=[(64, 64)])
    image = np.full((64, 64, 3), 100, np.uint8)
    drawn = result.draw(image)
    assert drawn.shape[1] == 256 and drawn.shape[0] > 256          # enlarged ×4, legend beneath
    blended = (1 - segment.OVERLAY_ALPHA) * 100 + segment.OVERLAY_ALPHA * np.array(PALETTE[2])
    assert np.abs(drawn[100, 100] - blended).max() <= 0.5         # inside the class-"1" square
    assert (drawn[10, 10] == 100).all()                           # background left as it was
    legend = drawn[256:].reshape(-1, 3)
    assert (legend == PALETTE[2]).all(axis=1).sum() > 20          # the swatch of class "1"


def test_compare_counts_differing_pixels():
    maps = np.zeros((2, 8, 8), np.uint8)
    other = maps.copy()
    other[1, 0, 0] = 1
    same = segment.compare({"logits": logits_for(maps)}, {"logits": logits_for(maps)}, maps, manifest())
    assert same["passed"] and same["differing_pixels"] == 0
    one = segment.compare({"logits": logits_for(maps)}, {"logits": logits_for(other)}, maps, manifest())
    assert one["differing_pixels"] == 1 and not one["passed"]      # 1 of 128 pixels is above 0.1 %


# models --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", sorted(model_builders("segment")))
def test_every_network_gives_per_pixel_logits(arch):
    torch.manual_seed(0)
    model = model_builders("segment")[arch]({}, [str(c) for c in range(11)], None)
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 11, 64, 96)
    logits[:, :, 10, 20].sum().backward()                          # gradients reach the input
    assert x.grad.abs().sum() > 0


def test_bilinear_upsampler_starts_as_bilinear_interpolation():
    up = bilinear_upsampler(3, 2)
    x = torch.rand(1, 3, 6, 6)
    expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(up(x)[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-6)  # borders: zero pad
    assert up.weight.requires_grad


# every network: one epoch on tiny data, export, parity, build ------------------------------------
@pytest.fixture(scope="module")
def tiny_segment_data(tmp_path_factory) -> Path:
    from visionrt.train.data import build_dataset
    from visionrt.train.tasks import segment as task

    return build_dataset(tmp_path_factory.mktemp("data") / "tiny-segment", name="segment",
                         splits={"train": 64, "val": 16, "test": 16}, image_size=task.IMAGE_SIZE,
                         objects_per_image=task.OBJECTS_PER_IMAGE, digit_scale=task.DIGIT_SCALE)


@pytest.fixture(scope="module")
def tiny_model(tiny_segment_data, tmp_path_factory):
    """``tiny_model(arch)``: one epoch of ``arch`` (accuracy irrelevant), exported and checked; once per arch."""
    from visionrt.export.stage import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit

    trained = {}

    def get(arch: str) -> ModelDir:
        if arch not in trained:
            out = tmp_path_factory.mktemp("models") / arch
            model_dir = fit(TrainConfig(task="segment", model=arch, epochs=1, batch_size=16), tiny_segment_data,
                            out)
            report = export_and_verify(model_dir, tiny_segment_data)
            assert report.passed, report.summary()
            trained[arch] = ModelDir.open(out)
        return trained[arch]
    return get


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["unet", "deeplab", "deconvnet"])
def test_tiny_export_parity_and_build(tiny_model, arch):
    tiny_model = tiny_model(arch)
    m = tiny_model.manifest
    portable = m.parity["onnxruntime-cpu"]
    assert portable["passed"] and portable["samples"] == 16 and portable["postprocessed"]["passed"]
    assert portable["task"]["miou"]["difference"] <= 1e-3
    ops = {n.op_type for n in onnx.load(tiny_model.path("onnx")).graph.node}
    if m.model["arch"] != "deconvnet":
        assert portable["outputs"][0]["max_abs"] < 1e-3          # logits agree to float rounding
        assert "onnx_trt" not in m.files                          # standard ops only: no TensorRT flavour
        if HAS_RTX:
            from visionrt.export.build import build

            result = build(tiny_model)
            assert result.key == "rtx" and result.facts["onnx"] == "onnx"
            assert result.facts["outputs"][0]["shape"][1:] == [11, 64, 64]
        return
    # DeconvNet: pool indices + unpooling, standard ops in the portable ONNX, plugins in the TensorRT one
    assert {"MaxPool", "MaxUnpool"} <= ops
    trt_model = onnx.load(tiny_model.path("onnx_trt"))
    assert {n.op_type for n in trt_model.graph.node if n.domain == "visionrt"} == set(architectures("segment")["deconvnet"].plugin_ops)
    if HAS_ORT_EXTENSIONS:
        flavour = m.parity["onnxruntime-cpu-trt-flavour"]
        assert flavour["passed"] and flavour["postprocessed"]["passed"]
        assert flavour["task"]["miou"]["reference"] == portable["task"]["miou"]["reference"]
    if HAS_RTX:
        from visionrt.export.build import build
        from visionrt.benchmarks.pipeline import _build

        with pytest.raises(PluginError, match="MaxPool2dWithIndices, MaxUnpool2d"):
            build(tiny_model)                                     # the build takes the TensorRT flavour
        assert _build(tiny_model).startswith("skipped: TensorRT-RTX has no plugin layer")  # the pipeline's note
        cli = run_cli("build", str(tiny_model.root), check=False)
        assert cli.returncode == 2 and "full TensorRT" in cli.stderr
        assert not ModelDir.open(tiny_model.root).manifest.engines


@pytest.mark.slow
def test_bad_input(tiny_model, tiny_segment_data):
    image = np.asarray(Image.open(tiny_segment_data / "images" / "test" / "000001.png"))
    with Predictor(tiny_model("unet")) as predictor:
        (gray,) = predictor.predict(np.asarray(Image.fromarray(image).convert("L")))  # gray -> RGB
        assert gray.class_map.shape == (64, 64)
        (rgba,) = predictor.predict(np.dstack([image, np.full((64, 64), 255, np.uint8)]))  # alpha dropped
        (rgb,) = predictor.predict(image)
        assert (rgba.class_map == rgb.class_map).all()
        (large,) = predictor.predict(np.asarray(Image.fromarray(image).resize((1200, 900))))
        assert large.class_map.shape == (900, 1200)               # resized to 64×64, the map back to 900×1200
        with pytest.raises(InputError, match="at least 32 px"):
            predictor.predict(np.zeros((20, 200, 3), np.uint8))
        with pytest.raises(InputError, match=r"expected \[H, W, 3\]"):
            predictor.predict(np.zeros((64, 64, 2), np.uint8))


# the quick pipeline, once -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def segment_pipeline(quick_run) -> dict:
    """The quick segmentation pipeline (FCN), run once through the CLI as the README says."""
    run = quick_run("segment")
    return {**run, "model_dir": ModelDir.open(run["model_dir"])}


@pytest.mark.slow
def test_miou_reaches_the_target(segment_pipeline):
    m = segment_pipeline["model_dir"].manifest
    assert m.task == "segment" and m.model["arch"] == "fcn" and m.primary_metric == "miou"
    for backend in ("pytorch", "onnxruntime-cpu"):
        test = m.metrics[backend]["test"]
        assert test["miou"] >= 0.7, backend
        assert {f"iou/{c}" for c in segment.CLASSES} <= set(test), backend
        assert test["iou/background"] >= 0.95 and min(test[f"iou/{d}"] for d in "0123456789") >= 0.4, backend


@pytest.mark.slow
def test_parity_logits_and_class_maps(segment_pipeline):
    parity = segment_pipeline["model_dir"].manifest.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["samples"] == 500
    (logits,) = parity["outputs"]
    assert logits["shape"] == [500, 11, 64, 64] and logits["max_abs"] < 1e-3
    assert parity["postprocessed"]["differing_share"] <= segment.MAX_DIFFERING_PIXELS
    assert parity["task"]["miou"]["difference"] <= 1e-3


@pytest.mark.slow
def test_engine_bench_pictures_and_report(segment_pipeline):
    model_dir = segment_pipeline["model_dir"]
    if HAS_RTX:
        facts = model_dir.manifest.engines["rtx"]
        assert facts["flavour"] == "tensorrt_rtx" and facts["onnx_sha256"] == model_dir.manifest.files["onnx"].sha256
        assert facts["outputs"][0]["shape"][1:] == [11, 64, 64]
        assert model_dir.path("rtx").stat().st_size == facts["engine_bytes"]
    bench = json.loads((model_dir.root / "bench" / "bench.json").read_text())
    measured = {(r["backend"], r["mode"], r["batch"]) for r in bench["results"] if r["median_ms"] is not None}
    assert {(b, mode, n) for b in ("onnxruntime-cpu", "pytorch") for mode in ("model", "end-to-end")
            for n in (1, 8, 32)} <= measured
    report = (model_dir.root / "report.md").read_text()
    assert "| miou |" in report and "## Pictures" in report
    pictures = sorted((model_dir.root / "pictures").glob("*.png"))
    assert len(pictures) == 3
    picture = np.asarray(Image.open(pictures[0]))
    assert picture.shape[1] > 3 * 256                              # image | predicted | truth


@pytest.mark.slow
def test_predict_cli_writes_overlays(segment_pipeline, tmp_path):
    data = segment_pipeline["out"] / "data" / "segment"
    paths, maps = segment.heldout(data, 12)
    result = run_cli("predict", str(segment_pipeline["model_dir"].root), *map(str, paths), "--json",
                     "--save-dir", str(tmp_path / "drawn"))
    rows = json.loads(result.stdout)
    assert len(rows) == 12
    found = [set(row["classes_present"]) for row in rows]
    truth = [{segment.CLASSES[c] for c in np.unique(m) if c} for m in maps]
    assert np.mean([t <= f for t, f in zip(truth, found)]) >= 0.75     # every true digit found
    for row, path in zip(rows, paths):
        assert row["size"] == [64, 64] and sum(row["fractions"].values()) == pytest.approx(1)
        drawn = np.asarray(Image.open(row["drawn"]))
        assert drawn.shape[1] == 256 and drawn.shape[0] > 256       # enlarged ×4, legend beneath
