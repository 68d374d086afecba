"""A user's first small dataset trains well at the default flags: the batch size and schedule are
sized to the training set (flags win), BatchNorm statistics are re-estimated before validation when
epochs are short, a model no better than ignoring the image is named in a warning, and boxes that
overflow their image by under a pixel are clipped. The slow tests train a few dozen real photos per
task through ``visionrt train`` with no training flags but a tiny ``--image-size`` (detect and pose:
no flags at all)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_own_data import (_edit_json, cli, coco_photos, crops, keypoint_photos, mask_folder,  # noqa: F401
                           single_photos, write_coco)
from visionrt.runtime.tasks import TASKS
from visionrt.train import tasks
from visionrt.train.config import TrainConfig
from visionrt.train.loop import SETTLE_BELOW_STEPS, settle_batchnorm
from visionrt.train.schedule import (AUTO_FIELDS, MIN_BATCH, MIN_STEPS, describe, may_stop_early, min_steps,
                                     size_to_data, steps_per_epoch)
from visionrt.train.tasks.base import Baseline
from visionrt.train.verdict import judge


def builtin_train_size(task: str, quick: bool) -> int:
    """Training samples per epoch of ``task``'s built-in data: images, or the photo tasks' patches
    or crops per epoch."""
    module = tasks.get(task)
    if hasattr(module, "DATA_SIZES"):
        return module.DATA_SIZES[quick]["train"]
    return getattr(module, "PATCHES_PER_EPOCH", None) or module.CROPS_PER_EPOCH


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("task", TASKS)
def test_the_automatic_choice_leaves_the_builtin_configurations_as_they_are(task, quick):
    config = tasks.get(task).default_config(quick)
    n = builtin_train_size(task, quick)
    sized = size_to_data(dataclasses.replace(config, auto=list(AUTO_FIELDS)), n)
    assert (sized.batch_size, sized.epochs, sized.model) == (config.batch_size, config.epochs, config.model)
    steps = steps_per_epoch(config.batch_size, n)
    assert steps >= SETTLE_BELOW_STEPS  # BatchNorm statistics as before: no re-estimation
    assert may_stop_early(sized, (config.patience + 1) * steps)  # the earliest early stop stays possible


def test_small_sets_get_a_smaller_batch_and_enough_steps():
    config = TrainConfig(batch_size=64, epochs=8, auto=list(AUTO_FIELDS))
    sized = size_to_data(config, 140)  # the ImageFolder
    assert sized.batch_size == 140 // 8 and sized.epochs * steps_per_epoch(sized.batch_size, 140) >= MIN_STEPS
    assert size_to_data(config, 40).batch_size == MIN_BATCH                       # never below 8 ...
    assert size_to_data(config, 5).batch_size == 5                                # ... unless fewer samples
    assert size_to_data(dataclasses.replace(config, auto=["epochs"]), 140).batch_size == 64  # --batch-size wins
    only_batch = size_to_data(dataclasses.replace(config, auto=["batch_size"]), 140)
    assert only_batch.epochs == 8                                                 # --epochs wins
    assert not may_stop_early(config, MIN_STEPS - 1) and may_stop_early(config, MIN_STEPS)
    assert may_stop_early(dataclasses.replace(config, auto=[]), 1)                # patience set: as given
    detect = size_to_data(tasks.configure("detect", auto=list(AUTO_FIELDS)), 24)   # a detector trains longer
    assert detect.epochs * steps_per_epoch(detect.batch_size, 24) >= min_steps("detect") > MIN_STEPS
    assert not may_stop_early(detect, min_steps("detect") - 1) and may_stop_early(detect, min_steps("detect"))


def test_small_pose_sets_train_the_integral_head_unless_a_model_is_named():
    config = tasks.configure("pose", auto=list(AUTO_FIELDS))
    assert config.model == "deeppose"
    small = size_to_data(config, 24)
    assert (small.model, small.model_kwargs) == ("integral", {})
    line = describe(small, 24)
    assert "model integral" in line and "--batch-size, --epochs and --model chosen" in line
    assert size_to_data(config, 8000).model == "deeppose"                         # the built-in data: as before
    named = dataclasses.replace(config, auto=["batch_size", "epochs", "patience"])  # --model deeppose
    assert size_to_data(named, 24).model == "deeppose" and "model" not in describe(size_to_data(named, 24), 24)
    assert size_to_data(TrainConfig(task="classify", auto=list(AUTO_FIELDS)), 24).model == "resnet"


def test_settle_batchnorm_matches_the_statistics_of_the_current_weights():
    class Task:
        data = torch.randn(32, 3, 4, 4) * 3 + 5

        def train_loss(self, model, indices, generator):
            return model(self.data[indices]).sum()

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))
    settle_batchnorm(model, Task(), [torch.arange(i, i + 8) for i in range(0, 32, 8)], seed=0)
    with torch.no_grad():
        features = model[0](Task.data)
    norm = model[1]
    torch.testing.assert_close(norm.running_mean, features.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert norm.momentum == 0.1 and norm.num_batches_tracked == 4


def test_judge_names_the_cause_and_the_flag():
    class Task:
        def baseline(self, split):
            return Baseline("top1", 0.57, "the most frequent training class (a)")

    config = TrainConfig(batch_size=64, epochs=8)
    warning = judge(Task(), {"top1": 0.57}, config, steps=16, n_train=140)
    assert "no better than always predicting the most frequent training class" in warning
    assert "only 16 optimizer steps" in warning and "--batch-size 17" in warning
    assert "--lr" in judge(Task(), {"top1": 0.58}, config, steps=MIN_STEPS, n_train=140)
    assert judge(Task(), {"top1": 0.9}, config, steps=16, n_train=140) is None
    pose = TrainConfig(task="pose", model="deeppose", batch_size=8, epochs=60)
    assert "pass --model integral" in judge(Task(), {"top1": 0.5}, pose, steps=MIN_STEPS, n_train=24)
    assert "--lr" in judge(Task(), {"top1": 0.5}, dataclasses.replace(pose, model="integral"), steps=MIN_STEPS,
                           n_train=24)


# boxes a pixel over their image --------------------------------------------------------------
def _overflow(root: Path, by: float) -> int:
    """Stretch the train split's first three boxes to end ``by`` px past their image's right edge."""
    moved = []

    def edit(d):
        widths = {image["id"]: image["width"] for image in d["images"]}
        for a in d["annotations"][:3]:
            x, y, w, h = a["bbox"]
            a["bbox"] = [x, y, widths[a["image_id"]] - x + by, h]
            moved.append(a["id"])
    _edit_json(root / "annotations" / "train.json", edit)
    return len(moved)


def test_boxes_under_a_pixel_over_are_clipped_and_counted(tmp_path):
    from visionrt.train.data import load_coco
    from visionrt.train.data.check import check_dataset

    root = write_coco(tmp_path / "d", seed=5, sizes=(3, 1, 1), most=2)
    moved = _overflow(root, 0.7)
    report = check_dataset(root, "detect")
    assert report.ok, report.problems
    assert report.summary["clipped_boxes"] == moved and f"clipped {moved} boxes" in report.text()
    data = load_coco(root, "train")
    sizes = {image["id"]: image["width"] for image in data.images}
    for a in data.coco["annotations"]:
        assert a["bbox"][0] + a["bbox"][2] <= sizes[a["image_id"]]
    _overflow(root, 3)
    report = check_dataset(root, "detect")
    assert not report.ok and any("lies outside" in p and "more than 1 px" in p for p in report.problems)


# a few dozen real photos per task at the default flags -----------------------------------------
@pytest.fixture(scope="module")
def two_textures(tmp_path_factory) -> Path:
    """An ImageFolder of two grey textures (brick, grass): 40 training crops per class, 40-120 px."""
    root = tmp_path_factory.mktemp("textures")
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("val", 10), ("test", 10)):
        for name in ("brick", "grass"):
            (root / split / name).mkdir(parents=True)
            for i, crop in enumerate(crops(name, count, rng)):
                Image.fromarray(crop).save(root / split / name / f"{i}.png")
    return root


#: Per task: its dataset fixture, the tiny input side trained at (None: the task's), the margin by
#: which the test metric must beat the baseline (the majority class, no objects, all background,
#: the mean pose or box) and any other flags; detect and pose at their default input (96, 64 px)
#: with no flags at all (pose: the integral head chosen for the 24 photos reaches 0.29, DeepPose's
#: regression gave the mean pose, 0.04).
SMALL_SETS = {
    "classify": ("two_textures", 32, 0.3, ()),
    "detect": ("coco_photos", None, 0.45, ()),  # 96 px, 420 steps: mAP50 0.61 (180 steps: 0.18)
    "segment": ("mask_folder", 32, 0.5, ()),
    "localize": ("single_photos", 32, 0.1, ()),
    "pose": ("keypoint_photos", None, 0.2, ()),
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(SMALL_SETS))
def test_a_few_dozen_photos_train_well_above_the_baseline(task, request, tmp_path):
    fixture, size, margin, flags = SMALL_SETS[task]
    data = request.getfixturevalue(fixture)
    out = tmp_path / "m"
    size_flag = ("--image-size", str(size)) if size else ()
    result = cli("train", "--task", task, "--data", str(data), "--out", str(out), *size_flag, "--threads", "1", *flags,
                 timeout=600)  # 20-25 s of CPU, minutes on a loaded machine
    assert result.returncode == 0, result.stderr[-2000:]
    assert "schedule: batch" in result.stderr and "chosen for" in result.stderr
    assert "no better than" not in result.stderr, result.stderr[-1000:]
    loaded = tasks.load_task(task, data, TrainConfig(task=task, image_size=size))
    batch = json.loads((out / "config.json").read_text())["batch_size"]
    assert batch < tasks.get(task).default_config().batch_size  # sized to the few dozen images
    manifest = json.loads((out / "manifest.json").read_text())
    trained = next(h for h in manifest["history"] if h["stage"] == "train")["epochs"]
    assert len(trained) * (len(loaded) // batch) >= min_steps(task)  # no early stop before the minimum
    baseline = loaded.baseline("test")
    value = manifest["metrics"]["pytorch"]["test"][baseline.metric]
    assert value >= baseline.value + margin, (task, value, baseline)


@pytest.mark.slow
def test_flags_win_over_the_automatic_choice(two_textures, tmp_path):
    out = tmp_path / "m"
    result = cli("train", "--task", "classify", "--data", str(two_textures), "--out", str(out), "--image-size", "16",
                 "--batch-size", "64", "--epochs", "1", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    used = json.loads((out / "config.json").read_text())
    assert (used["batch_size"], used["epochs"], used["auto"]) == (64, 1, ["patience", "model"])
    assert "schedule: batch 64, 1 epochs of 1 steps" in result.stderr


@pytest.mark.slow
def test_a_named_model_wins_over_the_small_set_choice(keypoint_photos, tmp_path):
    out = tmp_path / "m"
    result = cli("train", "--task", "pose", "--model", "deeppose", "--data", str(keypoint_photos), "--out", str(out),
                 "--image-size", "32", "--epochs", "1", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    used = json.loads((out / "config.json").read_text())
    assert (used["model"], used["auto"]) == ("deeppose", ["batch_size", "patience"])
    assert "--model" not in result.stderr.split("schedule:")[1].splitlines()[0]


def test_unknown_automatic_fields_are_refused():
    from visionrt.runtime.errors import InputError
    from visionrt.train.loop import check_config

    with pytest.raises(InputError, match="auto must be a list of batch_size, epochs, patience"):
        check_config(TrainConfig(auto=["lr"]))
