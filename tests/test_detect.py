"""Detection: the quick YOLO pipeline end to end (slow), tiny exports of the other variants, the
post-processing contract (thresholds, empty images, NMS limits) and the model parts."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (assert_backends_match_pytorch, detection_pipeline_manifest, fp32_parity, needs_extra,
                      require_or_skip, run_cli)
from visionrt.runtime import tensorrt_env
from visionrt.runtime.errors import InputError, PluginError
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.predictor import Predictor
from visionrt.runtime.datasets import uncompressed_rle
from visionrt.runtime.tasks import architectures
from visionrt.runtime.tasks import detect as runtime_detect
from visionrt.runtime.tasks.scores import box_iou

needs_rtx = needs_extra(tensorrt_env.installed("tensorrt_rtx") is not None,
                        "TensorRT-RTX is not installed (pip install 'visionrt[rtx]')")


# fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_detect_data(tmp_path_factory) -> Path:
    """A few dozen 96×96 scenes with 2-4 digits (seconds)."""
    from visionrt.train.data import build_dataset
    from visionrt.train.tasks import detect

    return build_dataset(tmp_path_factory.mktemp("data") / "tiny-detect", name="detect",
                         splits={"train": 32, "val": 8, "test": 12}, image_size=detect.IMAGE_SIZE,
                         objects_per_image=detect.OBJECTS_PER_IMAGE, digit_scale=detect.DIGIT_SCALE)


def train_tiny(task: str, arch: str, data: Path, out: Path) -> ModelDir:
    """One epoch of ``arch`` on ``data``, exported with its parity checked (accuracy irrelevant)."""
    from visionrt.export.stage import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit

    model_dir = fit(TrainConfig(task=task, model=arch, epochs=1, batch_size=16, optimizer="adam", lr=1e-3),
                    data, out)
    export_and_verify(model_dir, data)
    return ModelDir.open(out)


@pytest.fixture(scope="module")
def tiny_yolo_raw(tiny_detect_data, tmp_path_factory) -> ModelDir:
    return train_tiny("detect", "yolo_raw", tiny_detect_data, tmp_path_factory.mktemp("models") / "yolo_raw")


@pytest.fixture(scope="module")
def tiny_fasterrcnn(tiny_detect_data, tmp_path_factory) -> ModelDir:
    return train_tiny("detect", "fasterrcnn", tiny_detect_data, tmp_path_factory.mktemp("models") / "fasterrcnn")


@pytest.fixture(scope="session")
def detect_pipeline(quick_run) -> dict:
    """The quick detection pipeline (YOLO), run once through the CLI as the README says."""
    return quick_run("detect")


def heldout_images(data: Path, count: int) -> tuple[list[Path], list[dict]]:
    coco = json.loads((data / "annotations" / "test.json").read_text())
    images = coco["images"][:count]
    truth = [[a for a in coco["annotations"] if a["image_id"] == image["id"]] for image in images]
    return [data / "images" / "test" / image["file_name"] for image in images], truth


# the quick pipeline (slow) -------------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_reaches_the_target_map_in_every_backend(detect_pipeline):
    m = detection_pipeline_manifest(detect_pipeline, "detect", "yolo")
    assert m.postprocess["nms"] == "graph"
    reference = m.metrics["pytorch"]["test"]
    assert reference["map50"] >= 0.8, reference
    assert_backends_match_pytorch(m, ("map", "map50"))


@pytest.mark.slow
def test_pipeline_parity_after_postprocessing(detect_pipeline):
    parity = ModelDir.open(detect_pipeline["model_dir"]).manifest.parity
    assert fp32_parity(parity), f"no fp32 parity report: {sorted(parity)}"
    for backend, report in fp32_parity(parity).items():
        post = report["postprocessed"]
        assert report["passed"] and post["passed"], backend
        assert post["reference"] > 300 and post["shown_unmatched"] == 0
        assert post["max_score_diff"] <= runtime_detect.SCORE_TOLERANCE
        assert all(t["difference"] <= runtime_detect.PARITY_TOLERANCE for t in report["task"].values())


@pytest.mark.slow
def test_pipeline_records_the_engine_or_why_not(detect_pipeline):
    summary = detect_pipeline["summary"]
    report = json.loads(Path(summary["json"]).read_text())
    if tensorrt_env.installed("tensorrt_rtx") is not None and tensorrt_env.installed("tensorrt") is None:
        assert report["engine"].startswith("skipped:") and "EfficientNms" in report["engine"]
    bench = json.loads((detect_pipeline["model_dir"] / "bench" / "bench.json").read_text())
    measured = {(r["backend"], r["mode"]) for r in bench["results"] if r["median_ms"] is not None}
    assert {("onnxruntime-cpu", "model"), ("onnxruntime-cpu", "end-to-end"), ("pytorch", "model")} <= measured
    assert "map" in (detect_pipeline["model_dir"] / "bench" / "bench.md").read_text()


@pytest.mark.slow
def test_predict_cli_finds_the_digits_and_draws_them(detect_pipeline, tmp_path):
    data = detect_pipeline["out"] / "data" / "detect"
    paths, truth = heldout_images(data, 100)
    result = run_cli("predict", str(detect_pipeline["model_dir"]), *map(str, paths), "--json",
                     "--save-dir", str(tmp_path))   # the manifest's thresholds
    rows = json.loads(result.stdout)
    found = expected = 0
    for row, objects in zip(rows, truth):
        assert row["count"] == len(row["detections"])
        boxes = [d["box"] for d in row["detections"]]
        for a in objects:
            x, y, w, h = a["bbox"]
            overlap = box_iou([[x, y, x + w, y + h]], boxes)[0] if boxes else np.zeros(0)
            labels = [d["label"] for d in row["detections"]]
            found += any(o >= 0.5 and labels[k] == str(a["category_id"] - 1) for k, o in enumerate(overlap))
            expected += 1
    # recall at the default threshold (a precision / recall trade-off): 0.82 on the 300 test images
    assert found / expected >= 0.75, f"found {found} of {expected} objects"
    drawn = Path(rows[0]["drawn"])
    assert drawn.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    strict = json.loads(run_cli("predict", str(detect_pipeline["model_dir"]), *map(str, paths), "--json",
                                "--score-threshold", "0.5").stdout)   # an override keeps the best of the same list
    for row, loose in zip(strict, rows):
        assert row["detections"] == [d for d in loose["detections"] if d["score"] > 0.5]


@pytest.mark.slow
def test_images_without_objects_give_no_detections(detect_pipeline):
    with Predictor(detect_pipeline["model_dir"]) as predictor:
        blank = np.full((96, 96, 3), 127, np.uint8)
        noise = np.random.default_rng(0).integers(0, 256, (120, 80, 3), dtype=np.uint8)
        results = predictor.predict([blank, noise], score_threshold=0.5)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].to_dict() == {"count": 0, "detections": []} and results[0].summary() == "no objects"
    assert results[0].draw(blank).ndim == 3


@pytest.mark.slow
def test_out_of_range_threshold_is_a_clear_cli_error(detect_pipeline):
    image = sorted((detect_pipeline["out"] / "data" / "detect" / "images" / "test").glob("*.png"))[0]
    result = run_cli("predict", str(detect_pipeline["model_dir"]), str(image), "--score-threshold", "1.5", check=False)
    assert result.returncode == 2 and "--score-threshold: score_threshold 1.5 is outside [0, 1]" in result.stderr


# the other variants: tiny exports ------------------------------------------------------------------
@pytest.mark.slow
def test_yolo_raw_exports_candidates_and_runs_nms_in_the_runtime(tiny_yolo_raw):
    m = tiny_yolo_raw.manifest
    assert m.postprocess["nms"] == "runtime"
    assert [o.name for o in m.outputs] == list(runtime_detect.CANDIDATE_OUTPUTS)
    parity = m.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["postprocessed"]["passed"]
    assert all(o["passed"] for o in parity["outputs"])   # no NMS in the graph: raw outputs agree too
    onnx = require_or_skip("onnx")
    ops = {n.op_type for n in onnx.load(str(tiny_yolo_raw.path("onnx"))).graph.node}
    assert "EfficientNms" not in ops and "NonMaxSuppression" not in ops
    assert not tiny_yolo_raw.has("onnx_trt")   # nothing TensorRT lacks: no TensorRT flavour needed
    image = sorted((Path(m.model["dataset"]) / "images" / "test").glob("*.png"))[0]
    with Predictor(tiny_yolo_raw) as predictor:   # NMS here: any IoU threshold may be asked for
        loose = predictor.predict(image, score_threshold=0.0, iou_threshold=1.0, max_detections=50)[0]
        tight = predictor.predict(image, score_threshold=0.0, iou_threshold=0.1, max_detections=50)[0]
    def worst_overlap(result):
        boxes, classes = np.array([d.box for d in result]), np.array([d.index for d in result])
        overlap = box_iou(boxes, boxes) * (classes[:, None] == classes[None, :])
        return (overlap - np.eye(len(boxes))).max()

    assert len(loose) == 50 and worst_overlap(loose) > 0.1 >= worst_overlap(tight)


@pytest.mark.slow
@needs_rtx
def test_yolo_raw_builds_on_tensorrt_rtx(tiny_yolo_raw):
    from visionrt.export.build import build

    result = build(tiny_yolo_raw, flavour="tensorrt_rtx", max_batch=4, opt_batch=2)
    assert [t["name"] for t in result.facts["outputs"]] == list(runtime_detect.CANDIDATE_OUTPUTS)
    assert result.path.stat().st_size > 10_000


@pytest.mark.slow
def test_fasterrcnn_exports_roi_pooling_and_nms_as_standard_ops(tiny_fasterrcnn):
    onnx = require_or_skip("onnx")
    model = onnx.load(str(tiny_fasterrcnn.path("onnx")))
    ops = {n.op_type for n in model.graph.node}
    assert {"MaxRoiPool", "EfficientNms"} <= ops
    assert all(f.domain == "visionrt" for f in model.functions)  # EfficientNms defined in standard ops
    assert "NonMaxSuppression" in {n.op_type for f in model.functions for n in f.node}
    parity = tiny_fasterrcnn.manifest.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["postprocessed"]["passed"]


@pytest.mark.slow
def test_fasterrcnn_trt_flavour_runs_in_onnxruntime_like_pytorch(tiny_fasterrcnn):
    """The export stage wrote the TensorRT flavour (plugin nodes) and checked it in onnxruntime."""
    require_or_skip("onnxruntime_extensions")
    from visionrt.export.trt_flavour import plugin_ops
    from visionrt.export.stage import TRT_FLAVOUR_RUNNER

    onnx = require_or_skip("onnx")
    assert plugin_ops(onnx.load(str(tiny_fasterrcnn.path("onnx_trt")))) == list(architectures("detect")["fasterrcnn"].plugin_ops)
    parity = tiny_fasterrcnn.manifest.parity[TRT_FLAVOUR_RUNNER]
    assert parity["passed"] and parity["postprocessed"]["passed"]
    assert parity["postprocessed"]["reference"] == parity["postprocessed"]["matched"]


@pytest.mark.slow
@needs_rtx
def test_fasterrcnn_on_tensorrt_rtx_stops_naming_the_plugins(tiny_fasterrcnn):
    from visionrt.export.build import build

    with pytest.raises(PluginError) as err:
        build(tiny_fasterrcnn, flavour="tensorrt_rtx")
    assert "EfficientNms" in str(err.value) and "RoiPool2d" in str(err.value)


@pytest.mark.slow
def test_more_nms_candidates_than_the_plugin_takes_is_an_export_error(tiny_fasterrcnn):
    from visionrt.export.onnx_export import export_onnx

    model_dir = ModelDir.open(tiny_fasterrcnn.root)
    model_dir.manifest.postprocess["pre_nms_top_k"] = 5000
    with pytest.raises(PluginError, match="pre_nms_top_k = 5000 is outside the plugin's limit"):
        export_onnx(model_dir)


# post-processing contract --------------------------------------------------------------------------
def fake_manifest(nms: str = "graph", **postprocess):
    from visionrt.runtime.manifest import InputSpec, Manifest
    from visionrt.train.tasks.detect import default_postprocess

    outputs = runtime_detect.detection_outputs() if nms == "graph" else runtime_detect.candidate_outputs(3)
    arch = "fasterrcnn" if nms == "graph" else "yolo_raw"
    return Manifest("detect", {"arch": arch}, ["a", "b", "c"], InputSpec(height=96, width=96), outputs,
                    {**default_postprocess(arch), **postprocess})


def detections_output(rows: list[list[tuple]], k: int = 20) -> dict[str, np.ndarray]:
    """Graph outputs from per-image rows ``(x1, y1, x2, y2, score, class)``."""
    out = {"num_detections": np.array([[len(r)] for r in rows], np.int32),
           "boxes": np.zeros((len(rows), k, 4), np.float32), "scores": np.zeros((len(rows), k), np.float32),
           "classes": np.zeros((len(rows), k), np.int32)}
    for i, found in enumerate(rows):
        for j, (*box, score, cls) in enumerate(found):
            out["boxes"][i, j], out["scores"][i, j], out["classes"][i, j] = box, score, cls
    return out


@pytest.mark.parametrize("options, message", [
    ({"score_threshold": 1.5}, "score_threshold 1.5 is outside [0, 1]"),
    ({"score_threshold": -0.1}, "score_threshold -0.1 is outside [0, 1]"),
    ({"score_threshold": math.nan}, "score_threshold nan is outside [0, 1]"),
    ({"iou_threshold": 2.0}, "iou_threshold 2.0 is outside [0, 1]"),
    ({"max_detections": 0}, "max_detections 0 is not a positive integer"),
    ({"max_detections": 2.5}, "max_detections 2.5 is not a positive integer"),
    ({"score_threshold": 0.01}, "below 0.05, the floor of this model's NMS"),
    ({"max_detections": 21}, "exceeds the 20 detections"),
    ({"iou_threshold": 0.3}, "which this model's NMS has built in"),
    ({"mask_threshold": 1.2}, "mask_threshold 1.2 is outside [0, 1]"),
])
def test_thresholds_out_of_range_are_clear_errors(options, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        runtime_detect.postprocess(detections_output([[]]), fake_manifest(), [(96, 96)], **options)
    assert err.value.fix


def test_no_detections_is_an_empty_result_not_an_error():
    (result,) = runtime_detect.postprocess(detections_output([[]]), fake_manifest(), [(50, 70)])
    assert len(result) == 0 and result.summary() == "no objects"
    assert result.draw(np.zeros((50, 70, 3), np.uint8)).dtype == np.uint8


def test_boxes_come_back_in_original_pixels_and_thresholds_filter_exactly():
    rows = [[(12, 24, 48, 72, 0.9, 1), (0, 0, 96, 96, 0.6, 2), (10, 10, 20, 20, 0.3, 0)]]
    manifest = fake_manifest()
    (result,) = runtime_detect.postprocess(detections_output(rows), manifest, [(192, 144)])   # h, w
    assert [d.label for d in result] == ["b", "c"]                      # default threshold 0.5
    np.testing.assert_allclose(result[0].box, [18, 48, 72, 144])       # x * 144/96, y * 192/96
    np.testing.assert_allclose(result[1].box, [0, 0, 144, 192])
    (everything,) = runtime_detect.postprocess(detections_output(rows), manifest, [(96, 96)], score_threshold=0.05)
    assert len(everything) == 3
    (best,) = runtime_detect.postprocess(detections_output(rows), manifest, [(96, 96)], score_threshold=0.05,
                                         max_detections=1)
    assert [d.score for d in best] == [pytest.approx(0.9)]


def test_runtime_nms_equals_the_graph_op():
    """The ``yolo_raw`` path (NumPy reference) and the torch op give the same detections."""
    from visionrt.train.ops import efficient_nms

    rng = np.random.default_rng(1)
    corner = rng.uniform(0, 70, (2, 60, 2)).astype(np.float32)
    boxes = np.concatenate([corner, corner + rng.uniform(5, 25, (2, 60, 2)).astype(np.float32)], -1)
    scores = rng.uniform(0, 1, (2, 60, 3)).astype(np.float32)
    manifest = fake_manifest("runtime")
    p = manifest.postprocess
    runtime = runtime_detect.postprocess({"candidate_boxes": boxes, "candidate_scores": scores}, manifest,
                                         [(96, 96)] * 2, score_threshold=0.05)
    graph = efficient_nms(torch.from_numpy(boxes), torch.from_numpy(scores), p["nms_score_threshold"],
                          p["iou_threshold"], p["max_detections"], p["pre_nms_top_k"])
    graph = runtime_detect.postprocess(dict(zip(runtime_detect.DETECTION_OUTPUTS, (t.numpy() for t in graph))),
                                       fake_manifest("graph"), [(96, 96)] * 2, score_threshold=0.05)
    assert [[(d.index, d.score, d.box) for d in r] for r in runtime] == \
           [[(d.index, d.score, d.box) for d in r] for r in graph]


def test_mask_rle_reads_back_in_pycocotools():
    from pycocotools import mask as coco_mask

    mask = np.zeros((7, 5), bool)
    mask[0, 0] = mask[2:5, 1:4] = mask[6, 4] = True
    rle = coco_mask.frPyObjects(uncompressed_rle(mask), 7, 5)
    np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), mask)


def test_parity_matches_detections_by_iou_not_by_position():
    manifest = fake_manifest()
    targets = np.array([{"image": {"id": 1, "width": 96, "height": 96}, "annotations": []}], object)
    reference = detections_output([[(10, 10, 40, 50, 0.9, 1), (50, 50, 80, 90, 0.8, 2)]])
    swapped = detections_output([[(50.2, 50, 80, 90, 0.8, 2), (10, 10, 40, 50, 0.9000001, 1)]])
    assert runtime_detect.compare(reference, swapped, targets, manifest)["passed"]
    missing = detections_output([[(10, 10, 40, 50, 0.9, 1)]])
    report = runtime_detect.compare(reference, missing, targets, manifest)
    assert not report["passed"] and report["shown_unmatched"] == 1


# the model parts -----------------------------------------------------------------------------------
def test_anchors_are_nine_per_cell_centred_on_it():
    from visionrt.train.models.detection.anchors import AnchorGenerator

    anchors = AnchorGenerator((16.0, 32.0, 48.0), (0.5, 1.0, 2.0), stride=8)(2, 3)
    assert anchors.shape == (2 * 3 * 9, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(centres[9 * 4], torch.tensor([12.0, 12.0]))    # row 1, column 1
    sizes = anchors[:9, 2:] - anchors[:9, :2]
    torch.testing.assert_close(sizes.prod(1), torch.tensor([16.0, 16, 16, 32, 32, 32, 48, 48, 48]) ** 2)
    torch.testing.assert_close(sizes[:3, 1] / sizes[:3, 0], torch.tensor([0.5, 1.0, 2.0]))


def test_box_coder_round_trips():
    from visionrt.train.models.detection.box_coder import BoxCoder

    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    reference = torch.tensor([[10.0, 10, 30, 50], [0, 0, 8, 8]])
    boxes = torch.tensor([[12.0, 8, 35, 47], [1, 2, 9, 12]])
    torch.testing.assert_close(coder.decode(coder.encode(boxes, reference), reference), boxes)


def test_matcher_and_sampler():
    from visionrt.train.models.detection.matcher import BACKGROUND, IGNORE, Matcher
    from visionrt.train.models.detection.sampler import BalancedSampler

    gt = torch.tensor([[0.0, 0, 10, 10]])
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 6], [0, 0, 10, 2], [50, 50, 60, 60]])
    assert Matcher(0.7, 0.3)(gt, boxes).tolist() == [0, IGNORE, BACKGROUND, BACKGROUND]
    assert Matcher(0.7, 0.3, allow_low_quality=True)(gt, boxes[1:]).tolist() == [0, BACKGROUND, BACKGROUND]
    positive = torch.tensor([True] * 10 + [False] * 90)
    pos, neg = BalancedSampler(16, 0.25)(positive, ~positive, torch.Generator().manual_seed(0))
    assert len(pos) == 4 and len(neg) == 12 and positive[pos].all() and not positive[neg].any()


def test_yolo_loss_learns_one_batch():
    """YOLOv1's loss falls on a fixed batch (the targets are reachable; its gradients flow)."""
    from visionrt.train.models.yolo import YOLO, YOLOConfig

    torch.manual_seed(0)
    model = YOLO(3, YOLOConfig(widths=(8, 16, 16), head=32))
    images = torch.randn(4, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[8.0, 8, 30, 40], [36, 20, 60, 50]]), "labels": torch.tensor([0, 2])}] * 4
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = sum(model(images, targets).values())
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    assert set(model(images, targets)) == {"coord", "obj", "noobj", "class"}


def test_faster_rcnn_outputs_have_static_shapes_and_losses_are_finite():
    from visionrt.train.models.detection import FasterRCNN, FasterRCNNConfig, NmsSettings

    torch.manual_seed(0)
    model = FasterRCNN(4, FasterRCNNConfig(widths=(8, 16, 16), hidden=32), NmsSettings(max_detections=7))
    images = torch.randn(2, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[4.0, 4, 24, 30]]), "labels": torch.tensor([3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]   # no objects
    losses = model(images, targets, torch.Generator().manual_seed(0))
    assert set(losses) == {"rpn_objectness", "rpn_box", "roi_class", "roi_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    num, boxes, scores, classes = model.eval()(images)
    assert num.shape == (2, 1) and boxes.shape == (2, 7, 4) and scores.shape == classes.shape == (2, 7)
    assert num.dtype == classes.dtype == torch.int32
