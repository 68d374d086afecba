"""The localize task: box geometry and post-processing (fast), and the quick pipeline end to end
through the CLI (slow: one run, about 3 minutes on 2 idle cores)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import HAS_RTX, run_cli
from visionrt.runtime import InputError, ModelDir, Predictor
from visionrt.runtime.manifest import InputSpec, Manifest, OutputSpec
from visionrt.runtime.tasks import localize
from visionrt.runtime.tasks.scores import paired_box_iou
from visionrt.train.models.localize import Localizer, LocalizerConfig



# fast ----------------------------------------------------------------------------------
def manifest(classes=("0", "1", "2")) -> Manifest:
    return Manifest(task="localize", model={"arch": "resnet"}, classes=list(classes),
                    input=InputSpec(height=64, width=64),
                    outputs=[OutputSpec("logits", ["batch", 3], ""), OutputSpec("boxes", ["batch", 4], "")])


def test_box_iou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 1, 1]], float)
    b = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [2, 2, 4, 4], [1, 1, 1, 1]], float)
    assert np.allclose(paired_box_iou(a, b), [1.0, 1 / 7, 0.0, 0.0])
    # invariant to scaling x and y separately: the same IoU in pixels and in normalised units
    scale = np.array([640, 480, 640, 480])
    assert np.allclose(paired_box_iou(a * scale, b * scale), paired_box_iou(a, b))


def test_postprocess_maps_boxes_to_the_original_pixels():
    outputs = {"logits": np.array([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]], np.float32),
               "boxes": np.array([[0.25, 0.5, 0.75, 1.0], [0.5, 0.5, -0.1, 0.0]], np.float32)}
    first, second = localize.postprocess(outputs, manifest(), image_sizes=[(200, 100), (64, 64)])
    assert first.label == "1" and first.index == 1 and first.score == pytest.approx(np.exp(5) / (np.exp(5) + 2))
    assert first.box == pytest.approx((25.0, 100.0, 75.0, 200.0))   # x by the width, y by the height
    assert second.box == pytest.approx((0.0, 0.0, 32.0, 32.0))     # clipped to the image, corners ordered
    assert first.to_dict()["box"] == pytest.approx([25.0, 100.0, 75.0, 200.0])
    drawn = first.draw(np.zeros((200, 100, 3), np.uint8))
    assert drawn.shape[1] == 200 and drawn.shape[0] > 400    # enlarged ×2 (shorter side >= 256), caption beneath
    assert (drawn[:400].reshape(-1, 3) != 0).any(axis=1).sum() > 500   # the box and its tag


def test_metrics():
    targets = np.zeros(2, localize.TARGET)
    targets["label"], targets["box"] = [0, 1], [[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]
    logits = np.array([[1.0, 0.0], [1.0, 0.0]])
    boxes = np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1.0, 0.75]])
    assert localize.metrics(logits, boxes, targets) == {"top1": 0.5, "mean_iou": 0.75, "iou@0.5": 1.0}


def test_model_shapes_and_loss_weights():
    torch.manual_seed(0)
    model = Localizer(10, LocalizerConfig(widths=(8, 16, 16), blocks=1)).eval()
    with torch.no_grad():
        logits, boxes = model(torch.randn(3, 3, 64, 64))
    assert logits.shape == (3, 10) and boxes.shape == (3, 4)
    assert boxes.min() >= 0 and boxes.max() <= 1
    labels, target = torch.tensor([0, 1, 2]), torch.rand(3, 4)
    only_class = Localizer(10, LocalizerConfig(widths=(8, 16, 16), blocks=1, box_weight=0.0))
    only_class.load_state_dict(model.state_dict())
    assert only_class.loss(logits, boxes, labels, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item())
    l2 = Localizer(10, LocalizerConfig(widths=(8, 16, 16), blocks=1, box_loss="l2", class_weight=0.0, box_weight=1.0))
    assert l2.loss(logits, boxes, labels, target).item() == pytest.approx(((boxes - target) ** 2).sum(1).mean().item())
    with pytest.raises(ValueError, match="box_loss"):
        LocalizerConfig(box_loss="giou")


# the quick pipeline, once -------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(quick_run) -> dict:
    run = quick_run("localize")
    return {**run, "model_dir": ModelDir.open(run["model_dir"])}


@pytest.mark.slow
def test_metrics_reach_the_targets(run):
    m = run["model_dir"].manifest
    assert m.task == "localize" and m.primary_metric == "mean_iou"
    for backend in ("pytorch", "onnxruntime-cpu"):
        assert m.metrics[backend]["test"]["mean_iou"] >= 0.75, backend
        assert m.metrics[backend]["test"]["top1"] >= 0.9, backend


@pytest.mark.slow
def test_parity_per_output_and_metric(run):
    parity = run["model_dir"].manifest.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["samples"] == 1000
    assert {o["name"]: o["shape"] for o in parity["outputs"]} == {"logits": [1000, 10], "boxes": [1000, 4]}
    assert all(o["max_abs"] < 1e-3 for o in parity["outputs"])
    assert parity["task"]["mean_iou"]["difference"] <= 1e-4
    assert parity["task"]["top1"]["difference"] <= 2e-3


@pytest.mark.slow
def test_engine_bench_and_report(run):
    model_dir = run["model_dir"]
    if HAS_RTX:
        facts = model_dir.manifest.engines["rtx"]
        assert facts["flavour"] == "tensorrt_rtx" and facts["onnx_sha256"] == model_dir.manifest.files["onnx"].sha256
        assert {t["name"] for t in facts["outputs"]} == {"logits", "boxes"}
        assert model_dir.path("rtx").stat().st_size == facts["engine_bytes"]
    bench = json.loads((model_dir.root / "bench" / "bench.json").read_text())
    measured = {(r["backend"], r["mode"]) for r in bench["results"] if r["median_ms"] is not None}
    assert {("onnxruntime-cpu", "model"), ("onnxruntime-cpu", "end-to-end"), ("pytorch", "model")} <= measured
    report = (model_dir.root / "report.md").read_text()
    assert "mean_iou" in report and "## Latency" in report


@pytest.mark.slow
def test_predict_draws_boxes_in_original_pixels(run, tmp_path):
    data = run["out"] / "data" / "localize"
    coco = json.loads((data / "annotations" / "test.json").read_text())
    truth = {a["image_id"]: a for a in coco["annotations"]}
    images = coco["images"][:8]
    paths = [data / "images" / "test" / image["file_name"] for image in images]
    # the same scene at 4× its size (a uniform scale: the letterbox policy keeps the aspect): the
    # box must follow, in its pixels
    wide = tmp_path / "wide.png"
    Image.open(paths[0]).resize((256, 256), Image.BILINEAR).save(wide)
    result = run_cli("predict", str(run["model_dir"].root), *map(str, paths), str(wide), "--json",
                     "--save-dir", str(tmp_path / "drawn"))
    rows = json.loads(result.stdout)
    ious = [paired_box_iou(np.array([row["box"]]), np.array([[x, y, x + w, y + h]]))[0]
            for row, (x, y, w, h) in zip(rows, (truth[image["id"]]["bbox"] for image in images))]
    assert np.mean(ious) >= 0.6
    assert np.mean([row["label"] == str(truth[image["id"]]["category_id"] - 1)
                    for row, image in zip(rows, images)]) >= 0.75
    # resized back to 64×64 the large image is nearly the first one: its box, in its own pixels,
    # is the first image's box scaled by 4
    assert rows[-1]["label"] == rows[0]["label"]
    assert np.abs(np.array(rows[-1]["box"]) / 4 - rows[0]["box"]).max() < 1.5
    for row in rows:
        drawn = Image.open(row["drawn"])
        assert drawn.mode == "RGB" and drawn.width >= 256


@pytest.mark.slow
def test_bad_input(run):
    with Predictor(run["model_dir"]) as predictor:
        gray = np.asarray(Image.open(run["out"] / "data" / "localize" / "images" / "test" / "000001.png").convert("L"))
        (result,) = predictor.predict(gray)           # grayscale is converted to RGB
        assert all(0 <= v <= 64 for v in result.box)
        rgba = np.zeros((48, 80, 4), np.uint8)
        (result,) = predictor.predict(rgba)           # alpha is dropped; any size is resized
        x1, y1, x2, y2 = result.box
        assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 48
        with pytest.raises(InputError, match="at least 32 px"):
            predictor.predict(np.zeros((20, 200, 3), np.uint8))
        with pytest.raises(InputError, match="must be uint8"):
            predictor.predict(np.zeros((64, 64, 3), np.float32))
