"""Pose in the runtime: ``keypoints [N, J, 2]`` (normalised x, y) -> named joints in pixels of the
original image, per image; PCK against held-out keypoints.

The joint names are the manifest's ``classes`` (what the output's joint axis indexes); the
skeleton (pairs of joint indices) and the torso joints of PCK are ``manifest.postprocess``
``skeleton`` and ``torso``. Training writes them from the dataset's COCO ``person`` category.

**PCK@α** (percentage of correct keypoints, as for LSP and DeepPose's PDJ): a joint is correct
when its distance to the truth is at most ``α ×`` the torso diameter, the distance between the
true left shoulder and right hip of the same person; the score is the share of correct
joints over all labelled joints of all images.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..datasets import read_coco_split
from ..manifest import Manifest
from ..preprocess import require_detail, to_original_normalised
from ..render import caption, draw_skeleton
from .base import Architecture, Contract, RuntimeTask, Tensor, Variant

#: Allowed |ONNX - PyTorch| of the metrics (a joint within 1e-5 px of the threshold may flip).
PARITY_TOLERANCE = {"pck@0.2": (1e-3, 0.0), "pck@0.1": (1e-3, 0.0)}
#: Limb colours: the person's left side, right side, and the head and torso.
LEFT, RIGHT, CENTRE = (60, 180, 75), (230, 25, 75), (255, 225, 25)


def target_dtype(joints: int) -> np.dtype:
    """Held-out targets: ``keypoints [J, 3]`` (x, y in pixels, COCO visibility) and the image
    ``size`` (width, height)."""
    return np.dtype([("keypoints", np.float64, (joints, 3)), ("size", np.float64, 2)])


@dataclasses.dataclass
class Pose:
    """One image's joints: ``joints`` maps each name to ``(x, y)`` in pixels of the original image
    (continuous coordinates: pixel column i spans [i, i + 1)); ``skeleton`` the limbs as name pairs."""

    joints: dict[str, tuple[float, float]]
    skeleton: list[tuple[str, str]]

    def to_dict(self) -> dict:
        return {"joints": {name: list(xy) for name, xy in self.joints.items()}}

    def summary(self) -> str:
        xy = np.array(list(self.joints.values()))
        (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
        return f"{len(xy)} joints in [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]"

    def draw(self, image: np.ndarray, text: str | None = None) -> np.ndarray:
        """The image (RGB uint8) with the skeleton drawn (the person's left side green, right red,
        head and torso yellow) and ``text`` (default: the summary) beneath."""
        names = list(self.joints)
        edges = [(names.index(a), names.index(b)) for a, b in self.skeleton]
        side = lambda a, b: LEFT if a.startswith("left") and b.startswith("left") else (
            RIGHT if a.startswith("right") and b.startswith("right") else CENTRE)
        drawn = draw_skeleton(image, np.array(list(self.joints.values())), edges,
                              edge_colours=[side(a, b) for a, b in self.skeleton])
        return caption(drawn, self.summary() if text is None else text)


def prepare(image: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Refuse images under half the model's input side; the resize to the input comes later."""
    return require_detail(image, manifest.input)


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes: list[tuple[int, int]]) -> list[Pose]:
    """One :class:`Pose` per image; ``image_sizes`` are the originals' ``(height, width)``."""
    names = manifest.classes
    skeleton = [(names[a], names[b]) for a, b in manifest.postprocess["skeleton"]]
    keypoints = outputs[manifest.outputs[0].name].astype(np.float64)
    return [Pose({name: (float(x), float(y)) for name, (x, y) in
                  zip(names, to_original_normalised(points, manifest.input, height, width) * (width, height))}, skeleton)
            for points, (height, width) in zip(keypoints, image_sizes)]


def report_picture(result: Pose, image: np.ndarray, target: np.void) -> np.ndarray:
    """The true skeleton (left) beside the predicted one (right), with the mean error in pixels."""
    truth = target["keypoints"][:, :2]
    error = np.linalg.norm(np.array(list(result.joints.values())) - truth, axis=1).mean()
    true_pose = Pose(dict(zip(result.joints, map(tuple, truth))), result.skeleton)
    return np.concatenate([true_pose.draw(image, "truth"), result.draw(image, f"predicted: {error:.1f} px off")], 1)


def heldout(data_dir: str | Path, count: int | None = None,
            manifest: Manifest | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their targets (:func:`target_dtype`), one person per image."""
    split = read_coco_split(data_dir, "test", count)
    (category,) = split.categories
    targets = np.zeros(len(split.images), target_dtype(len(category["keypoints"])))
    for row, image, annotation in zip(targets, split.images, split.single_annotations()):
        row["keypoints"] = np.reshape(annotation["keypoints"], (-1, 3))
        row["size"] = (image["width"], image["height"])
    return split.image_paths, targets


def pck(predicted: np.ndarray, truth: np.ndarray, torso: tuple[int, int], alpha: float) -> float:
    """PCK@``alpha``: ``predicted [N, J, 2]`` and ``truth [N, J, 3]`` (x, y, visibility) in pixels;
    ``torso`` the two joint indices whose true distance is the torso diameter. Joints with
    visibility 0 (not labelled) do not count."""
    diameter = np.linalg.norm(truth[:, torso[0], :2] - truth[:, torso[1], :2], axis=-1)
    distance = np.linalg.norm(predicted - truth[..., :2], axis=-1)
    labelled = truth[..., 2] > 0
    return float(np.sum((distance <= alpha * diameter[:, None]) & labelled) / max(1, labelled.sum()))


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """PCK@0.2 and PCK@0.1 of the model outputs against :func:`heldout` targets."""
    predicted = np.stack([to_original_normalised(points, manifest.input, height, width) * (width, height)
                          for points, (width, height) in zip(outputs[manifest.outputs[0].name], targets["size"])])
    torso = tuple(manifest.postprocess["torso"])
    return {f"pck@{alpha}": pck(predicted, targets["keypoints"], torso, alpha) for alpha in (0.2, 0.1)}


TASK = RuntimeTask(
    name="pose",
    architectures=(Architecture("deeppose", default=True), Architecture("integral")),
    contract=Contract("fixed", "the joint names, in output order", (Variant("keypoints", (Tensor(
        "keypoints", ("N", "J", 2), "float", "each joint's x, y divided by the input width and height (0..1)"),),
        False, {"skeleton": "limbs as pairs of joint indices"}),),
        lambda variant, classes, bound: {"skeleton": []}),
    postprocess=postprocess, heldout=heldout, evaluate=evaluate, prepare=prepare, report_picture=report_picture,
    parity_tolerance=PARITY_TOLERANCE, precision_tolerance={"pck@0.2": (0.005, 0.0)},
)
