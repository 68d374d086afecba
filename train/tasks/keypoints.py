"""Keypoints (pose per detected person) with Keypoint R-CNN: the detection task's machinery plus
per-joint heatmaps from RoIAlign features.

The built-in data: scenes of one to three articulated figures (the pose task's, smaller, sometimes
overlapping) on real photos, 96×96, in COCO person-keypoints format (:mod:`~visionrt.train.data.people`);
or anyone's COCO keypoint set (one category with ``keypoints`` names and ``skeleton``). Metric:
COCO keypoint AP50 (OKS, per-joint sigmas: :func:`visionrt.runtime.tasks.keypoints.oks_sigmas`),
with keypoint AP@[.5:.95] and box mAP / mAP50 beside it. Heatmaps are 28×28 (14×14 RoIAlign, one
2× transposed conv; Mask R-CNN's paper upsamples once more to 56×56, which on these figures of
30-70 px gains nothing: a cell is already under 3 px).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...runtime.manifest import OutputSpec
from ...runtime.preprocess import fit
from ...runtime.tasks import detect as runtime_detect
from ...runtime.tasks import keypoints as runtime_keypoints
from ..config import TrainConfig
from ..data import build_dataset, load_coco
from ..data.check import Report, check_coco
from ..data.errors import DatasetError
from ..data.people import PeopleConfig
from ..models.detection import KeypointRCNN, KeypointRCNNConfig
from . import detect
from .architectures import register_model
from .base import Baseline
from .inputs import flip_choice, mirror, mirror_boxes, to_input
from .pose import check_joint_names, check_keypoints, flip_permutation

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 1500, "val": 100, "test": 200},
              False: {"train": 8000, "val": 500, "test": 1000}}
IMAGE_SIZE = 96
#: The joints of a model built before training named them (the built-in figures' 14).
DEFAULT_JOINTS = 14


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """96×96 scenes of 1-3 figures each (COCO person keypoints, boxes and masks)."""
    return build_dataset(out_dir, name="keypoints", splits=DATA_SIZES[quick], seed=seed, progress=progress,
                         scene=PeopleConfig(image_size=(IMAGE_SIZE, IMAGE_SIZE)))


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="keypoints", model="keypoint_rcnn", epochs=12 if quick else 30, batch_size=16,
                       optimizer="adam", lr=0.002, weight_decay=1e-4, patience=4)


@register_model("keypoints", "keypoint_rcnn")
def keypoint_rcnn(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    """Keypoint R-CNN with a heatmap per joint the manifest's ``postprocess["joints"]`` names."""
    joints = len(postprocess["joints"]) if postprocess else DEFAULT_JOINTS
    return KeypointRCNN(len(classes), joints, KeypointRCNNConfig(**kwargs), detect.nms_settings(postprocess))


def check_people(a: dict, size: tuple[int, int], path: Path, report: Report, joints: int | None) -> None:
    """The dataset check's rule on an annotation: ``keypoints`` ``[x, y, v] × joints`` (``joints``: the
    category's names, when known), labelled ones inside the image."""
    points = a.get("keypoints")
    if not isinstance(points, list) or len(points) % 3 or (joints and len(points) != 3 * joints):
        report.problem(path, f"annotation {a.get('id')} has no keypoints [x, y, v] for each of the "
                             f"{joints or 'named'} joints", "write `keypoints` as [x1, y1, v1, x2, y2, v2, ...]")
        return
    check_keypoints(a, size, path, report)


class Task(detect.Task):
    """People with joints on real backgrounds; metric COCO keypoint AP50."""

    name = "keypoints"
    metric = "keypoint_ap50"
    runtime = runtime_keypoints

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        super().__init__(data_dir, config)
        categories = load_coco(data_dir, "train").categories
        if len(categories) != 1 or not categories[0].get("keypoints"):
            raise DatasetError(f"{data_dir}: keypoints needs one category naming its joints in `keypoints`",
                               fix="list the joint names (and a `skeleton`) in the person category")
        self.joints = list(categories[0]["keypoints"])
        self.skeleton = [[a - 1, b - 1] for a, b in categories[0].get("skeleton", [])]
        self.swap = flip_permutation(self.joints)
        self.keypoints = {split: [self.input_keypoints(target["image"], found)
                                  for target, found in zip(data.targets, data.annotations)]
                          for split, data in self.splits.items()}
        self.arch, self.kwargs = "keypoint_rcnn", {}

    def input_keypoints(self, image: dict, annotations: list[dict]) -> torch.Tensor:
        """``[G, P, 3]`` joints of an image's people: x, y in input pixels, COCO visibility."""
        points = np.array([a["keypoints"] for a in annotations], np.float64)
        points = points.reshape(len(annotations), len(self.joints), 3)
        points[..., :2] = fit(image["height"], image["width"], self.spec).to_input(points[..., :2])
        return torch.from_numpy(points.astype(np.float32))

    def build_model(self, config: TrainConfig) -> nn.Module:
        self.arch, self.kwargs = config.model, config.model_kwargs
        return super().build_model(config)

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """COCO json of people: one category naming the joints, each person's ``[x, y, v] × joints``."""
        joints: list[int] = []

        def categories(found: list, annotation_file: Path, report: Report) -> None:
            check_joint_names(found, annotation_file, report)
            joints.extend(len(c.get("keypoints") or []) for c in found[:1])

        def people(a: dict, size: tuple[int, int], path: Path, report: Report) -> None:
            check_people(a, size, path, report, joints[0] if joints else None)

        check_coco(data_dir, split, report, category_rule=categories, annotation_rule=people)

    def targets(self, split: str, indices: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes``, ``labels`` and ``keypoints [G, P, 3]`` (input pixels, visibility)."""
        targets = super().targets(split, indices)
        for target, i in zip(targets, indices.tolist()):
            target["keypoints"] = self.keypoints[split][i]
        return targets

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Half the images mirrored (boxes and joints with them, left and right joints swapped), then
        detection's shift and channel permutation (:func:`~.detect.augment`, whose moved boxes give the shift)."""
        images, targets = self.splits["train"].images[indices], self.targets("train", indices)
        width = images.shape[2]
        flipped = flip_choice(len(indices), generator, self.flip)
        images = mirror(images, flipped)
        for target, f in zip(targets, flipped.tolist()):
            if f:
                points = target["keypoints"][:, self.swap].clone()
                points[..., 0] = width - points[..., 0]
                target.update(boxes=mirror_boxes(target["boxes"], width), keypoints=points)
        images, moved = detect.augment(images, targets, generator)
        for before, after in zip(targets, moved):
            if len(before["boxes"]):
                shift = (after["boxes"] - before["boxes"])[0, :2]
                after["keypoints"] = torch.cat([before["keypoints"][..., :2] + shift, before["keypoints"][..., 2:]], -1)
        return sum(model(to_input(images, self.mean, self.std), moved, generator).values())

    def baseline(self, split: str) -> Baseline:
        return Baseline(self.metric, 0.0, "no people")

    def outputs(self) -> list[OutputSpec]:
        m = 2 * KeypointRCNNConfig(**self.kwargs).keypoint_pool
        return [*runtime_detect.detection_outputs(), OutputSpec(
            "heatmaps", ["batch", "K", len(self.joints), m, m],
            "per detection and joint (in the order of postprocess.joints), probabilities over the cells of its "
            "box (cell (u, v) covers x1 + [u, u+1) * (x2 - x1) / M, likewise y)")]

    def postprocess_defaults(self) -> dict:
        return {**detect.default_postprocess(self.arch), "joints": self.joints, "skeleton": self.skeleton,
                "oks_sigmas": runtime_keypoints.oks_sigmas(self.joints)}
