"""Keypoints (Keypoint R-CNN): the quick pipeline end to end (slow); the heatmap geometry (targets
of training, arg-max decoding of the runtime), COCO keypoint AP with the chosen OKS sigmas, the
built-in multi-person data and the check of one's own."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_backends_match_pytorch, detection_pipeline_manifest, fp32_parity, run_cli
from visionrt.runtime.manifest import InputSpec, Manifest, OutputSpec
from visionrt.runtime.tasks import detect as runtime_detect
from visionrt.runtime.tasks import keypoints as runtime_keypoints
from visionrt.train.data.figures import JOINTS, SKELETON

M = 28


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    """A few built-in multi-person scenes per split."""
    from visionrt.train.data import build_dataset
    from visionrt.train.data.people import PeopleConfig

    return build_dataset(tmp_path_factory.mktemp("people") / "keypoints", name="keypoints", workers=1,
                         splits={"train": 6, "val": 2, "test": 8}, scene=PeopleConfig())


def manifest(k: int = 8) -> Manifest:
    postprocess = {**runtime_detect.import_defaults(runtime_detect.GRAPH_NMS, ["person"], {"K": k}),
                   "nms_score_threshold": 0.05, "score_threshold": 0.5, "joints": list(JOINTS),
                   "skeleton": [list(e) for e in SKELETON], "oks_sigmas": runtime_keypoints.oks_sigmas(list(JOINTS))}
    outputs = [*runtime_detect.detection_outputs(), OutputSpec("heatmaps", ["batch", k, len(JOINTS), M, M], "heatmaps")]
    return Manifest("keypoints", {"arch": "keypoint_rcnn"}, ["person"], InputSpec(height=96, width=96), outputs,
                    postprocess)


def perfect_outputs(targets: np.ndarray, k: int = 8) -> dict[str, np.ndarray]:
    """The model outputs that detect every person at its true box with one-hot heatmaps at its joints."""
    from visionrt.train.models.detection.keypoint_head import heatmap_targets

    n = len(targets)
    out = {"num_detections": np.zeros((n, 1), np.int32), "boxes": np.zeros((n, k, 4), np.float32),
           "scores": np.zeros((n, k), np.float32), "classes": np.zeros((n, k), np.int32),
           "heatmaps": np.zeros((n, k, len(JOINTS), M, M), np.float32)}
    for i, target in enumerate(targets):
        for j, a in enumerate(target["annotations"]):
            x, y, w, h = a["bbox"]
            box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float32)
            cell, _ = heatmap_targets(torch.tensor(a["keypoints"], dtype=torch.float32).reshape(1, -1, 3), box, M)
            flat = out["heatmaps"][i, j].reshape(len(JOINTS), M * M)
            flat[np.arange(len(JOINTS)), cell[0].numpy()] = 1.0
            out["boxes"][i, j], out["scores"][i, j] = box[0].numpy(), 0.9 - 0.01 * j
        out["num_detections"][i] = len(target["annotations"])
    return out


# heatmap geometry ------------------------------------------------------------------------------------
def test_heatmap_targets_decode_back_to_the_joints_within_half_a_cell():
    from visionrt.train.models.detection.keypoint_head import heatmap_targets

    rng = np.random.default_rng(0)
    boxes = np.array([[10.0, 5.0, 40.0, 80.0], [0.0, 0.0, 28.0, 28.0]], np.float32)
    points = rng.uniform(0, 1, (2, 14, 2)) * (boxes[:, None, 2:] - boxes[:, None, :2]) + boxes[:, None, :2]
    keypoints = np.concatenate([points, np.full((2, 14, 1), 2.0)], -1).astype(np.float32)
    keypoints[0, 3, 2] = 0            # unlabelled
    keypoints[1, 5, :2] = (35.0, 3.0)  # outside its box
    cell, valid = heatmap_targets(torch.from_numpy(keypoints), torch.from_numpy(boxes), M)
    assert valid.sum() == 26 and not valid[0, 3] and not valid[1, 5]
    heatmaps = np.zeros((2, 14, M * M), np.float32)
    np.put_along_axis(heatmaps, cell.numpy()[..., None], 1.0, -1)
    xy, scores = runtime_keypoints.decode_heatmaps(heatmaps.reshape(2, 14, M, M), boxes)
    half_cell = (boxes[:, 2:] - boxes[:, :2]) / M / 2
    error = np.abs(xy - keypoints[..., :2])
    assert (error[valid.numpy()] <= np.repeat(half_cell[:, None], 14, 1)[valid.numpy()] + 1e-4).all()
    assert (scores == 1.0).all()


# metric ------------------------------------------------------------------------------------------------
def test_a_perfect_prediction_scores_keypoint_ap_one_and_the_sigmas_reach_pycocotools(people):
    _, targets = runtime_detect.heldout(people)
    m = manifest()
    outputs = perfect_outputs(targets)
    metrics = runtime_keypoints.evaluate({**outputs}, targets, m)
    assert metrics["keypoint_ap50"] == pytest.approx(1.0) and metrics["box_map50"] == pytest.approx(1.0)
    sizes = [(t["image"]["height"], t["image"]["width"]) for t in targets]
    results = runtime_keypoints.postprocess(outputs, m, sizes, score_threshold=0.05)
    for result, target in zip(results, targets):   # the truth itself: exactly AP 1.0
        for person, a in zip(result, target["annotations"]):
            person.joints = {name: (x, y, 1.0) for name, (x, y, _) in zip(JOINTS, np.reshape(a["keypoints"], (-1, 3)))}
    assert runtime_keypoints.keypoint_metrics(results, targets, m.postprocess["oks_sigmas"])["ap"] == pytest.approx(1.0)
    for result in results:   # every joint 2 px off: the sigmas decide
        for person in result:
            person.joints = {name: (x + 2.0, y, s) for name, (x, y, s) in person.joints.items()}
    assert runtime_keypoints.keypoint_metrics(results, targets, [1.0] * 14)["ap"] == pytest.approx(1.0)
    assert runtime_keypoints.keypoint_metrics(results, targets, [0.001] * 14)["ap50"] == 0.0


def test_sigmas_of_the_built_in_and_coco_joints():
    sigmas = dict(zip(JOINTS, runtime_keypoints.oks_sigmas(list(JOINTS))))
    assert sigmas["left_wrist"] == 0.062 and sigmas["head"] == sigmas["neck"] == 0.079
    assert runtime_keypoints.oks_sigmas(["nose", "tail"]) == [0.026, runtime_keypoints.DEFAULT_SIGMA]


def test_results_name_the_joints_in_original_pixels_and_draw_boxes_and_skeletons(people):
    _, targets = runtime_detect.heldout(people)
    outputs = perfect_outputs(targets[:1])
    (result,) = runtime_keypoints.postprocess(outputs, manifest(), [(192, 192)])   # twice the input size
    row = result.to_dict()
    a = targets[0]["annotations"][0]
    assert row["count"] == len(targets[0]["annotations"]) and set(row["people"][0]["joints"]) == set(JOINTS)
    assert np.allclose(row["people"][0]["box"], np.array([a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                          a["bbox"][1] + a["bbox"][3]]) * 2, atol=1e-3)
    image = np.zeros((192, 192, 3), np.uint8)
    drawn = result.draw(image)
    assert drawn.shape[1] >= 192 and (drawn != 0).any()
    assert "people" in result.summary() or "person" in result.summary()


# data ----------------------------------------------------------------------------------------------------
def test_the_built_in_scenes_are_coco_person_keypoints(people):
    coco = json.loads((people / "annotations" / "test.json").read_text())
    (category,) = coco["categories"]
    assert category["keypoints"] == list(JOINTS) and category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]])[1:]
    assert per_image.min() >= 1 and per_image.max() <= 3 and per_image.max() >= 2
    for a in coco["annotations"]:
        points = np.reshape(a["keypoints"], (-1, 3))
        assert points.shape == (14, 3) and set(points[:, 2]) <= {1.0, 2.0} and a["num_keypoints"] == 14
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and (points[:, 0] >= x - 1).all() and (points[:, 0] <= x + w + 1).all()
    hidden = sum((np.reshape(a["keypoints"], (-1, 3))[:, 2] == 1).sum() for a in coco["annotations"])
    assert hidden > 0   # overlaps and arms in front of the body hide joints


def test_data_check_of_a_bad_keypoint_set_is_one_line_exit_2(people, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(people, root)
    path = root / "annotations" / "train.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["keypoints"] = coco["annotations"][0]["keypoints"][:-3]   # 13 joints of 14
    path.write_text(json.dumps(coco))
    assert run_cli("data", "check", str(people), "--task", "keypoints").returncode == 0
    result = run_cli("data", "check", str(root), "--task", "keypoints", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "for each of the 14 joints" in problems[0] and "fix:" in problems[0], result.stdout


# the quick pipeline (slow; Keypoint R-CNN, run once per session by quick_run) --------------------------
@pytest.mark.slow
def test_pipeline_reaches_its_metrics_and_parity_in_onnxruntime(quick_run):
    m = detection_pipeline_manifest(quick_run("keypoints"), "keypoints", "keypoint_rcnn", ["heatmaps"])
    reference = m.metrics["pytorch"]["test"]
    assert reference["keypoint_ap50"] >= 0.7 and reference["box_map50"] >= 0.8, reference
    assert_backends_match_pytorch(m, ("keypoint_ap50", "keypoint_ap", "box_map50"), ["onnxruntime-cpu"])
    reports = fp32_parity(m.parity)
    assert reports and all(report["passed"] for report in reports.values()), reports


@pytest.mark.slow
def test_predict_cli_returns_people_with_joints(quick_run, tmp_path):
    run = quick_run("keypoints")
    data = run["out"] / "data" / "keypoints"
    coco = json.loads((data / "annotations" / "test.json").read_text())
    image = coco["images"][0]
    image_path = data / "images" / "test" / image["file_name"]
    result = run_cli("predict", str(run["model_dir"]), str(image_path), "--json", "--save-dir", str(tmp_path))
    (row,) = json.loads(result.stdout)
    assert row["people"] and set(row["people"][0]["joints"]) == set(JOINTS)
    assert Path(row["drawn"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
