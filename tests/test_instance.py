"""Instance segmentation: the quick Mask R-CNN pipeline end to end (slow), and the mask geometry
(box-relative masks resampled by RoIAlign and pasted back) and metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_backends_match_pytorch, detection_pipeline_manifest, fp32_parity, run_cli
from visionrt.runtime import tensorrt_env
from visionrt.runtime.manifest import InputSpec, Manifest, ModelDir
from visionrt.runtime.predictor import Predictor
from visionrt.runtime.tasks import detect as runtime_detect
from visionrt.runtime.tasks import instance as runtime_instance


@pytest.fixture(scope="session")
def instance_pipeline(quick_run) -> dict:
    """The quick instance segmentation pipeline (Mask R-CNN), run once through the CLI."""
    return quick_run("instance")


# the quick pipeline (slow) -------------------------------------------------------------------------
@pytest.mark.slow
def test_pipeline_reaches_the_target_mask_map_in_every_backend(instance_pipeline):
    m = detection_pipeline_manifest(instance_pipeline, "instance", "maskrcnn", ["masks"])
    reference = m.metrics["pytorch"]["test"]
    assert reference["mask_map50"] >= 0.7 and reference["box_map50"] >= 0.8, reference
    assert_backends_match_pytorch(m, ("mask_map", "mask_map50", "box_map", "box_map50"))


@pytest.mark.slow
def test_pipeline_parity_compares_pasted_masks(instance_pipeline):
    parity = ModelDir.open(instance_pipeline["model_dir"]).manifest.parity
    assert fp32_parity(parity), f"no fp32 parity report: {sorted(parity)}"
    for backend, report in fp32_parity(parity).items():
        post = report["postprocessed"]
        assert report["passed"] and post["passed"], backend
        assert post["mean_mask_iou"] >= runtime_detect.MASK_IOU_TOLERANCE and post["shown_unmatched"] == 0


@pytest.mark.slow
def test_pipeline_records_why_tensorrt_rtx_cannot_build_it(instance_pipeline):
    report = json.loads(Path(instance_pipeline["summary"]["json"]).read_text())
    if tensorrt_env.installed("tensorrt_rtx") is not None and tensorrt_env.installed("tensorrt") is None:
        assert report["engine"].startswith("skipped:") and "EfficientNms" in report["engine"]
    assert "mask_map" in (instance_pipeline["model_dir"] / "bench" / "bench.md").read_text()


@pytest.mark.slow
def test_predict_cli_returns_masks_and_draws_them(instance_pipeline, tmp_path):
    from pycocotools import mask as coco_mask

    data = instance_pipeline["out"] / "data" / "instance"
    coco = json.loads((data / "annotations" / "test.json").read_text())
    image = coco["images"][0]
    truth = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    result = run_cli("predict", str(instance_pipeline["model_dir"]), str(data / "images" / "test" / image["file_name"]),
                     "--json", "--score-threshold", "0.5", "--save-dir", str(tmp_path))
    (row,) = json.loads(result.stdout)
    masks = [coco_mask.decode(coco_mask.frPyObjects(d["mask"], image["height"], image["width"])).astype(bool)
             for d in row["detections"]]
    assert masks and all(m.shape == (image["height"], image["width"]) for m in masks)
    for a in truth:   # every object's mask is found
        want = coco_mask.decode(a["segmentation"]).astype(bool)
        best = max(np.logical_and(want, m).sum() / np.logical_or(want, m).sum() for m in masks)
        assert best >= 0.5
    assert Path(row["drawn"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_images_without_objects_give_no_masks(instance_pipeline):
    with Predictor(instance_pipeline["model_dir"]) as predictor:
        (result,) = predictor.predict(np.full((64, 64, 3), 200, np.uint8), score_threshold=0.5)
    assert len(result) == 0 and result.to_dict()["detections"] == []


# mask geometry and metrics -------------------------------------------------------------------------
def resample_onto_box(mask: np.ndarray, box: np.ndarray, size: int = 28) -> np.ndarray:
    """``mask [H, W]`` resampled onto ``box`` as the mask head's targets are (RoIAlign, 2×2 samples per cell)."""
    from visionrt.train.models.detection.poolers import RoIAlign

    resample = RoIAlign(size, stride=1, sampling_ratio=2)
    return resample(torch.from_numpy(mask.astype(np.float32))[None, None], torch.from_numpy(box[None]).float(),
                    torch.zeros(1, dtype=torch.int64))[0, 0].numpy()


def test_pasting_undoes_the_roi_align_resampling_of_a_mask():
    """A mask resampled onto its box the way the mask head is trained (RoIAlign, M × M) and pasted
    back (the runtime) is the mask again, up to the M × M resolution."""
    mask = np.zeros((96, 96), bool)
    yy, xx = np.mgrid[:96, :96]
    mask[((yy - 40) / 18) ** 2 + ((xx - 50) / 9) ** 2 <= 1] = True          # an ellipse, 19 × 37 px
    box = np.array([41.0, 22.0, 60.0, 59.0])                                  # its box (pixel edges)
    resampled = resample_onto_box(mask, box)
    pasted = runtime_detect.paste_mask(resampled, box, 96, 96)
    iou = np.logical_and(pasted, mask).sum() / np.logical_or(pasted, mask).sum()
    assert iou >= 0.95 and not pasted[:, :41].any() and not pasted[:, 60:].any()


def test_paste_mask_handles_boxes_at_and_beyond_the_edges():
    full = np.ones((28, 28), np.float32)
    pasted = runtime_detect.paste_mask(full, np.array([-10.0, -5, 20.5, 30]), 40, 50)
    assert pasted[:30, :20].all() and pasted.sum() == 30 * 20     # pixel centres inside the box
    assert runtime_detect.paste_mask(full, np.array([10.0, 10, 10, 20]), 40, 50).sum() == 0    # empty box
    assert runtime_detect.paste_mask(full, np.array([60.0, 50, 70, 60]), 40, 50).sum() == 0    # outside


def test_mask_map_of_the_truth_is_one(tmp_path):
    from pycocotools import mask as coco_mask

    from visionrt.train.data import build_dataset

    data = build_dataset(tmp_path / "d", name="instance", splits={"test": 6}, image_size=96,
                         objects_per_image=(2, 4), digit_scale=(0.16, 0.45))
    _, targets = runtime_detect.heldout(data)
    k = 8
    outputs = {"num_detections": np.zeros((6, 1), np.int32), "boxes": np.zeros((6, k, 4), np.float32),
               "scores": np.zeros((6, k), np.float32), "classes": np.zeros((6, k), np.int32),
               "masks": np.zeros((6, k, 28, 28), np.float32)}
    for i, target in enumerate(targets):
        for j, a in enumerate(target["annotations"]):
            x, y, w, h = a["bbox"]
            box = np.array([x, y, x + w, y + h], np.float32)
            mask = coco_mask.decode(a["segmentation"]).astype(np.float32)
            outputs["masks"][i, j] = resample_onto_box(mask, box)
            outputs["boxes"][i, j], outputs["scores"][i, j] = box, 0.9
            outputs["classes"][i, j] = a["category_id"] - 1
        outputs["num_detections"][i] = len(target["annotations"])
    manifest = Manifest("instance", {"arch": "maskrcnn"}, [str(d) for d in range(10)], InputSpec(height=96, width=96),
                        runtime_detect.detection_outputs(28),
                        {"nms": "graph", "nms_score_threshold": 0.05, "iou_threshold": 0.5, "max_detections": k,
                         "pre_nms_top_k": 100, "score_threshold": 0.5, "mask_threshold": 0.5})
    metrics = runtime_instance.evaluate(outputs, targets, manifest)
    assert metrics["box_map"] == pytest.approx(1.0) and metrics["mask_map50"] == pytest.approx(1.0)
    assert metrics["mask_map"] >= 0.9


@pytest.mark.slow  # trains (a few steps) and exports
def test_mask_rcnn_trains_through_roi_align_and_exports_masks_with_a_dynamic_batch():
    from visionrt.train.models.detection import MaskRCNN, MaskRCNNConfig, NmsSettings
    from visionrt.train.ops import export_with_ops

    torch.manual_seed(0)
    model = MaskRCNN(3, MaskRCNNConfig(widths=(8, 16, 16), hidden=32, mask_width=8), NmsSettings(max_detections=5))
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(1, 64, 64)
    masks[0, 6:28, 6:22] = 1
    targets = [{"boxes": torch.tensor([[6.0, 6, 22, 28]]), "labels": torch.tensor([1]), "masks": masks}] * 2
    losses = model(images, targets, torch.Generator().manual_seed(0))
    assert set(losses) == {"rpn_objectness", "rpn_box", "roi_class", "roi_box", "mask"}
    sum(losses.values()).backward()
    assert model.mask_branch.head[0].weight.grad.abs().sum() > 0
    model.eval()
    proto = export_with_ops(model, (images,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
                        opset_version=20, output_names=[*runtime_detect.DETECTION_OUTPUTS, "masks"])
    assert {"RoiAlign", "EfficientNms", "ConvTranspose"} <= {n.op_type for n in proto.graph.node}
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: torch.randn(3, 3, 64, 64).numpy()})
    assert got[0].shape == (3, 1) and got[4].shape == (3, 5, 28, 28)
