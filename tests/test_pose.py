"""The pose task: figure generator, PCK and post-processing (fast), and the quick pipeline end to
end through the CLI (slow: one run, about 3 minutes on 2 idle cores)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import HAS_RTX, build_rtx_engine, run_cli
from visionrt.runtime import InputError, ModelDir, Predictor
from visionrt.runtime.manifest import InputSpec, Manifest, OutputSpec
from visionrt.runtime.tasks import pose
from visionrt.train.data import DatasetError, build_dataset, load_coco
from visionrt.train.data.figures import JOINTS, SKELETON, TORSO, FigureConfig, make_figure
from visionrt.train.models.pose import PoseConfig, PoseRegressor
from visionrt.train.tasks.pose import flip_permutation

TORSO_INDICES = [JOINTS.index(name) for name in TORSO]


# fast ----------------------------------------------------------------------------------
def test_figures_are_deterministic_inside_and_annotated():
    config = FigureConfig(image_size=(64, 64))
    hidden = 0
    for index in range(30):
        scene = make_figure(config, 0, "val", index)
        (person,) = scene.objects
        keypoints = person.keypoints
        assert scene.image.shape == (64, 64, 3) and keypoints.shape == (14, 3)
        assert np.all(keypoints[:, :2] >= 0) and np.all(keypoints[:, :2] <= 64)
        assert set(keypoints[:, 2]) <= {1.0, 2.0}
        hidden += int((keypoints[:, 2] == 1).sum())
        # every joint lies on the figure (its mask, grown by a pixel for joints on the outline)
        rows, cols = np.clip(keypoints[:, 1].astype(int), 0, 63), np.clip(keypoints[:, 0].astype(int), 0, 63)
        grown = np.pad(person.mask, 1)
        near = np.zeros_like(person.mask)
        for dy in range(3):
            for dx in range(3):
                near |= grown[dy:dy + 64, dx:dx + 64]
        assert near[rows, cols].all(), index
        assert np.array_equal(scene.semantic > 0, person.mask)
        # the person's left is on the image's right (the figure faces the viewer, tilted < 90°)
        left, right = keypoints[JOINTS.index("left_hip"), :2], keypoints[JOINTS.index("right_hip"), :2]
        up, across = keypoints[JOINTS.index("neck"), :2] - (left + right) / 2, left - right
        assert up[0] * across[1] - up[1] * across[0] > 0     # clockwise from up to left (y points down)
        torso = np.linalg.norm(keypoints[TORSO_INDICES[0], :2] - keypoints[TORSO_INDICES[1], :2])
        assert torso >= 8
    assert hidden > 0, "no self-occlusion in 30 figures"
    again = make_figure(config, 0, "val", 7)
    assert np.array_equal(again.image, make_figure(config, 0, "val", 7).image)
    assert not np.array_equal(again.image, make_figure(config, 1, "val", 7).image)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_figure_dataset_is_coco_keypoints(tmp_path):
    from pycocotools.coco import COCO

    root = build_dataset(tmp_path / "pose", name="pose", splits={"val": 4}, scene=FigureConfig(), workers=1)
    split = load_coco(root, "val")
    (category,) = split.coco["categories"]
    assert category["name"] == "person" and category["keypoints"] == list(JOINTS)
    assert category["skeleton"] == [[a + 1, b + 1] for a, b in SKELETON]
    coco = COCO(str(split.annotation_file))
    for image in split.coco["images"]:
        (annotation,) = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        scene = make_figure(FigureConfig(), 0, "val", image["id"] - 1)
        assert np.allclose(np.reshape(annotation["keypoints"], (14, 3)), scene.objects[0].keypoints, atol=0.01)
        assert annotation["num_keypoints"] == 14
        assert np.array_equal(coco.annToMask(annotation).astype(bool), scene.objects[0].mask)
    assert json.loads((root / "dataset.json").read_text())["config"]["scene_kind"] == "figures"
    with pytest.raises(DatasetError, match="too small"):
        FigureConfig(image_size=(16, 16))


def test_pck_follows_the_definition():
    truth = np.zeros((1, 14, 3))
    truth[0, :, 2] = 2
    truth[0, TORSO_INDICES[0], :2] = (0, 0)
    truth[0, TORSO_INDICES[1], :2] = (30, 40)          # torso diameter 50 -> 0.2 × 50 = 10 px
    predicted = truth[..., :2].copy()
    predicted[0, 0] += (6, 8)                           # exactly 10 px away: correct
    predicted[0, 1] += (6, 8.01)                        # just beyond: wrong
    assert pose.pck(predicted, truth, tuple(TORSO_INDICES), 0.2) == pytest.approx(13 / 14)
    assert pose.pck(predicted, truth, tuple(TORSO_INDICES), 0.1) == pytest.approx(12 / 14)
    truth[0, 1, 2] = 0                                   # unlabelled joints do not count
    assert pose.pck(predicted, truth, tuple(TORSO_INDICES), 0.2) == 1.0


def test_postprocess_names_joints_in_original_pixels():
    m = Manifest(task="pose", model={"arch": "resnet"}, classes=list(JOINTS), input=InputSpec(height=64, width=64),
                 outputs=[OutputSpec("keypoints", ["batch", 14, 2], "")],
                 postprocess={"skeleton": [list(e) for e in SKELETON], "torso": TORSO_INDICES})
    points = np.random.default_rng(0).uniform(0, 1, (1, 14, 2)).astype(np.float32)
    (result,) = pose.postprocess({"keypoints": points}, m, image_sizes=[(300, 100)])
    assert list(result.joints) == list(JOINTS)
    assert result.joints["neck"] == pytest.approx((points[0, 1, 0] * 100, points[0, 1, 1] * 300))
    assert result.to_dict()["joints"]["head"] == pytest.approx([points[0, 0, 0] * 100, points[0, 0, 1] * 300])
    drawn = result.draw(np.zeros((300, 100, 3), np.uint8))
    assert drawn.shape[1] == 200 and (drawn[:600] != 0).any(axis=2).sum() > 1000


def test_flip_swaps_sides_and_model_shapes():
    perm = flip_permutation(list(JOINTS))
    assert [JOINTS[i] for i in perm][:4] == ["head", "neck", "right_shoulder", "left_shoulder"]
    assert sorted(perm) == list(range(14)) and [perm[i] for i in perm] == list(range(14))
    model = PoseRegressor(14, PoseConfig(widths=(8, 16, 16), blocks=1)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 14, 2)
    labelled = torch.ones(2, 14, dtype=torch.bool)
    labelled[0, 3] = False
    target = out.clone()
    target[0, 3] += 5.0                                  # an unlabelled joint costs nothing
    assert model.loss(out, target, labelled).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="loss"):
        PoseConfig(loss="l1")


@pytest.mark.slow
def test_integral_variant_trains_exports_and_matches(tmp_path):
    """The other head (soft-argmax) on tiny data for one epoch: ONNX parity per output and PCK."""
    from visionrt.export.stage import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit
    from visionrt.train.tasks.pose import IMAGE_SIZE

    data = build_dataset(tmp_path / "data", name="pose", splits={"train": 64, "val": 16, "test": 16},
                         scene=FigureConfig(image_size=(IMAGE_SIZE, IMAGE_SIZE)), workers=1)
    config = TrainConfig(task="pose", model="integral", epochs=1, batch_size=16, lr=0.01,
                         model_kwargs={"widths": [8, 16, 16], "blocks": 1})
    model_dir = fit(config, data, tmp_path / "model")
    report = export_and_verify(model_dir, data)
    assert report.passed and report.outputs[0].shape == [16, 14, 2]
    assert model_dir.manifest.model["arch"] == "integral"
    keypoints = model_dir.manifest.parity["onnxruntime-cpu"]["outputs"][0]
    assert keypoints["max_abs"] < 1e-4
    if HAS_RTX:
        build_rtx_engine(model_dir)


# the quick pipeline, once -------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(quick_run) -> dict:
    run = quick_run("pose")
    return {**run, "model_dir": ModelDir.open(run["model_dir"])}


@pytest.mark.slow
def test_pck_reaches_the_target(run):
    m = run["model_dir"].manifest
    assert m.task == "pose" and m.primary_metric == "pck@0.2" and m.classes == list(JOINTS)
    for backend in ("pytorch", "onnxruntime-cpu"):
        assert m.metrics[backend]["test"]["pck@0.2"] >= 0.8, backend


@pytest.mark.slow
def test_parity_engine_bench_report(run):
    model_dir = run["model_dir"]
    parity = model_dir.manifest.parity["onnxruntime-cpu"]
    assert parity["passed"] and parity["samples"] == 1000
    (keypoints,) = parity["outputs"]
    assert keypoints["shape"] == [1000, 14, 2] and keypoints["max_abs"] < 1e-3
    assert parity["task"]["pck@0.2"]["difference"] <= 1e-3
    if HAS_RTX:
        facts = model_dir.manifest.engines["rtx"]
        assert [t["shape"][1:] for t in facts["outputs"]] == [[14, 2]]
        assert model_dir.path("rtx").stat().st_size == facts["engine_bytes"]
    bench = json.loads((model_dir.root / "bench" / "bench.json").read_text())
    assert {("onnxruntime-cpu", "end-to-end"), ("pytorch", "model")} <= {
        (r["backend"], r["mode"]) for r in bench["results"] if r["median_ms"] is not None}
    assert "pck@0.2" in (model_dir.root / "report.md").read_text()


@pytest.mark.slow
def test_predict_writes_skeletons_in_original_pixels(run, tmp_path):
    data = run["out"] / "data" / "pose"
    coco = json.loads((data / "annotations" / "test.json").read_text())
    truth = {a["image_id"]: np.reshape(a["keypoints"], (14, 3)) for a in coco["annotations"]}
    images = coco["images"][:10]
    paths = [data / "images" / "test" / image["file_name"] for image in images]
    big = tmp_path / "big.png"             # the first scene at 4× its size (the letterbox keeps the aspect)
    Image.open(paths[0]).resize((256, 256), Image.BILINEAR).save(big)
    result = run_cli("predict", str(run["model_dir"].root), *map(str, paths), str(big), "--json",
                     "--save-dir", str(tmp_path / "drawn"))
    rows = json.loads(result.stdout)
    predicted = np.array([[row["joints"][name] for name in JOINTS] for row in rows])
    targets = np.stack([truth[image["id"]] for image in images])
    assert pose.pck(predicted[:10], targets, tuple(TORSO_INDICES), 0.2) >= 0.7
    # resized back to 64×64 the big image is nearly the first one: its joints, in its own
    # pixels, are the first image's joints scaled by 4
    assert np.abs(predicted[10] / 4 - predicted[0]).max() < 1.5
    for row in rows:
        assert Image.open(row["drawn"]).width >= 256


@pytest.mark.slow
def test_bad_input(run):
    with Predictor(run["model_dir"]) as predictor:
        gray = np.asarray(Image.open(run["out"] / "data" / "pose" / "images" / "test" / "000001.png").convert("L"))
        (result,) = predictor.predict(gray)           # grayscale is converted to RGB
        assert len(result.joints) == 14
        with pytest.raises(InputError, match="at least 32 px"):
            predictor.predict(np.zeros((31, 31, 3), np.uint8))
        with pytest.raises(InputError, match="expected \\[H, W, 3\\]"):
            predictor.predict(np.zeros((64, 64, 2), np.uint8))
