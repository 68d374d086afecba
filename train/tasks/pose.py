"""Human pose by regression (DeepPose-style): data, model, loss, metric and manifest entries.

Scenes are articulated figures with 14 joints over real photos (:mod:`visionrt.train.data.figures`).
The metric is PCK@0.2 on the held-out split (see :mod:`visionrt.runtime.tasks.pose`). Training
flips half of each batch left-right and swaps the left and right joints with it (a mirrored
person facing the viewer is still one, with sides exchanged), and blurs half of it as a
resize would (:func:`~visionrt.train.tasks.localize.random_resample`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...runtime.manifest import OutputSpec
from ...runtime.preprocess import fit
from ...runtime.tasks.pose import pck
from ..checkpoint import unwrap
from ..config import TrainConfig
from ..data import build_dataset, load_coco
from ..data.check import Report, check_coco
from ..data.lazy import LazyImages
from ..data.figures import TORSO, FigureConfig
from ..models.pose import build_pose_regressor
from .architectures import register_model
from .base import Baseline, TrainTask
from .inputs import channel_stats, flip_choice, mirror, random_resample, to_input

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 8000, "val": 1000, "test": 1000},
              False: {"train": 30000, "val": 2000, "test": 2000}}
IMAGE_SIZE = 64


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """64×64 scenes with one figure each (COCO keypoints, category ``person``)."""
    return build_dataset(out_dir, name="pose", splits=DATA_SIZES[quick], seed=seed, progress=progress,
                         scene=FigureConfig(image_size=(IMAGE_SIZE, IMAGE_SIZE)))


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="pose", model="deeppose", epochs=10 if quick else 40, lr=0.1)


#: ``visionrt train`` without ``--model`` trains the integral head on fewer training images than
#: this (:func:`visionrt.train.schedule.size_to_data`): DeepPose's fully connected layers map each
#: position of the feature map to coordinates separately, so a few dozen images teach them those
#: images' poses only (24 photos: training loss 0.005, test PCK@0.2 0.06-0.31, the mean pose
#: 0.08; at lr 0.1 it stays at the mean pose), while the integral head's heatmaps are convolutions,
#: the same at every position (PCK@0.2 0.66 on the same data and schedule).
SMALL_SET_MODEL = (1000, "integral")


# The architecture is the head on a ResNet backbone; ``classes`` are the joint names: what the
# output's joint axis indexes.
@register_model("pose", "deeppose")
def deeppose(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    return build_pose_regressor({**kwargs, "head": "deeppose"}, len(classes))


@register_model("pose", "integral")
def integral(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    return build_pose_regressor({**kwargs, "head": "integral"}, len(classes))


def check_joint_names(categories: list, annotation_file: Path, report: Report) -> None:
    """The dataset check's rule on a COCO file's categories: one, naming the joints."""
    if len(categories) != 1 or not categories[0].get("keypoints"):
        report.problem(annotation_file, "pose needs one category with `keypoints` names (and a `skeleton`)",
                       "list the joint names in the category's `keypoints`")


def check_keypoints(a: dict, size: tuple[int, int], path: Path, report: Report) -> None:
    """The dataset check's rule on an annotation: its labelled keypoints lie in the ``(width, height)`` image."""
    width, height = size
    points = np.reshape(a.get("keypoints", []), (-1, 3))
    shown = points[points[:, 2] > 0]
    if len(shown) and ((shown[:, 0] < 0) | (shown[:, 0] > width) | (shown[:, 1] < 0) | (shown[:, 1] > height)).any():
        report.problem(path, f"annotation {a.get('id')} has labelled keypoints outside the {width}x{height} image",
                       "set their visibility to 0 or fix x, y")


def flip_permutation(joints: list[str]) -> list[int]:
    """Index of each joint's mirror image: ``left_x`` <-> ``right_x``, others stay."""
    swap = lambda name: (name.replace("left_", "right_") if name.startswith("left_")
                         else name.replace("right_", "left_") if name.startswith("right_") else name)
    return [joints.index(swap(name)) for name in joints]


def reference_pair(joints: list[str], keypoints: np.ndarray) -> list[int]:
    """The two joints whose true distance normalises PCK (the manifest's ``torso``): the torso
    diagonal ``TORSO`` (COCO's and the built-in figures' names) where the joints have those names,
    else the pair farthest apart on average over the labelled ``keypoints [N, J, 3]`` of training."""
    if all(name in joints for name in TORSO):
        return [joints.index(name) for name in TORSO]
    xy, labelled = keypoints[..., :2], keypoints[..., 2] > 0
    both = labelled[:, :, None] & labelled[:, None, :]
    distance = np.linalg.norm(xy[:, :, None] - xy[:, None, :], axis=-1)
    mean = np.where(both, distance, 0).sum(0) / np.maximum(both.sum(0), 1)
    a, b = np.unravel_index(np.argmax(mean), mean.shape)
    return sorted([int(a), int(b)])


class Task(TrainTask):
    """One person per image (the built-in figures on real backgrounds, or a COCO keypoints
    dataset: the category's ``keypoints`` names and ``skeleton``); metric PCK@0.2."""

    name = "pose"
    metric = "pck@0.2"
    resize = "letterbox"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        self.spec = self.fitted_input(config)
        self.splits = {}
        for split in ("train", "val", "test"):
            data = load_coco(data_dir, split)
            (category,) = data.categories
            keypoints = []
            for image, annotation in zip(data.images, data.single_annotations()):
                points = np.reshape(annotation["keypoints"], (-1, 3)).astype(np.float64)
                points[:, :2] = fit(image["height"], image["width"], self.spec).to_input(points[:, :2])
                keypoints.append(points)
            keypoints = torch.from_numpy(np.array(keypoints, np.float32).reshape(len(data.images), -1, 3))
            self.splits[split] = (LazyImages(data.image_paths, self.spec),
                                  keypoints)
        self.joints = list(category["keypoints"])
        self.skeleton = [[a - 1, b - 1] for a, b in category["skeleton"]]
        self.swap = flip_permutation(self.joints)
        self.torso = reference_pair(self.joints, self.splits["train"][1].numpy())
        self.flip = self.mirrors(data_dir, config)
        self.classes = self.joints   # the manifest's classes: what the output's joint axis indexes
        self.mean, self.std = channel_stats(self.splits["train"][0].sample())

    def __len__(self) -> int:
        return len(self.splits["train"][1])

    def size(self) -> torch.Tensor:
        """(width, height) of the model input in pixels."""
        return torch.tensor([self.spec.width, self.spec.height], dtype=torch.float32)

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """COCO json with keypoints: one category naming the joints, one person per image."""
        check_coco(data_dir, split, report, one_object=True, category_rule=check_joint_names,
                   annotation_rule=check_keypoints)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, keypoints = (t[indices] for t in self.splits["train"])
        xy, labelled = keypoints[..., :2] / self.size(), keypoints[..., 2] > 0
        flip = flip_choice(len(indices), generator, self.flip)
        images = mirror(images, flip)
        mirrored = xy[flip][:, self.swap]
        mirrored[..., 0] = 1 - mirrored[..., 0]
        xy[flip], labelled[flip] = mirrored, labelled[flip][:, self.swap]
        x = to_input(random_resample(images, generator), self.mean, self.std)
        return unwrap(model).loss(model(x), xy, labelled)

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, batch_size: int = 256) -> torch.Tensor:
        """Normalised keypoints ``[N, J, 2]`` for a whole split."""
        images = self.splits[split][0]
        model.eval()
        return torch.cat([model(to_input(images[i:i + batch_size], self.mean, self.std))
                          for i in range(0, len(images), batch_size)])

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        predicted = (self.predict(model, split) * self.size()).double().numpy()
        truth = self.splits[split][1].double().numpy()
        torso = tuple(self.torso)
        return {**{f"pck@{a}": pck(predicted, truth, torso, a) for a in (0.2, 0.1)}, "images": len(truth)}

    def baseline(self, split: str) -> Baseline:
        train, truth = self.splits["train"][1].double().numpy(), self.splits[split][1].double().numpy()
        labelled = train[..., 2:] > 0
        mean = (train[..., :2] * labelled).sum(0) / np.maximum(labelled.sum(0), 1)
        predicted = np.broadcast_to(mean, truth[..., :2].shape)
        return Baseline("pck@0.2", pck(predicted, truth, tuple(self.torso), 0.2), "the mean training pose")

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("keypoints", ["batch", len(self.joints), 2],
                           "each joint's (x, y) divided by the input width and height (0..1 inside the "
                           "image), joints in the order of `classes`; multiply by the original "
                           "image's width and height for pixels")]

    def postprocess_defaults(self) -> dict:
        return {"skeleton": self.skeleton, "torso": self.torso}
