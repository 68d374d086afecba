"""Classification + localisation in the runtime: ``logits [N, K]`` and ``boxes [N, 4]`` -> label,
softmax score and the box in pixels of the original image, per image.

The model's boxes are ``(x1, y1, x2, y2)`` normalised by the input's width and height; the
manifest's resize policy (stretch or letterbox) is undone by
:func:`~visionrt.runtime.preprocess.to_original_normalised`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..datasets import read_coco_split
from ..manifest import Manifest
from ..preprocess import require_detail, to_original_normalised
from ..render import PALETTE, caption, draw_boxes
from .base import Architecture, Contract, RuntimeTask, Tensor, Variant
from .classify import LOGITS
from .scores import paired_box_iou, softmax

#: Allowed |ONNX - PyTorch| of the metrics: mean IoU moves by float rounding only; a near tie
#: between two classes (or an IoU of 0.5 within rounding) may flip one image in a thousand.
PARITY_TOLERANCE = {"top1": (2e-3, 0.0), "mean_iou": (1e-4, 0.0), "iou@0.5": (2e-3, 0.0)}
#: Dtype of the held-out targets: class index, box (x1, y1, x2, y2) normalised by the image's
#: size and that size (width, height) in pixels.
TARGET = np.dtype([("label", np.int64), ("box", np.float64, 4), ("size", np.float64, 2)])


@dataclasses.dataclass
class Localization:
    """One image's result: ``label`` (class name), its ``index``, softmax ``score`` and
    ``box`` ``(x1, y1, x2, y2)`` in pixels of the original image (pixel edges, x right, y down)."""

    label: str
    index: int
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "score": self.score, "box": list(self.box)}

    def summary(self) -> str:
        x1, y1, x2, y2 = self.box
        return f"{self.label} ({self.score:.3f}) at [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]"

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The image (RGB uint8) with the box and its label drawn, the summary beneath."""
        return caption(draw_boxes(image, [self.box], [f"{self.label} {self.score:.2f}"]), self.summary())


def prepare(image: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Refuse images under half the model's input side; the resize to the input comes later."""
    return require_detail(image, manifest.input)


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes: list[tuple[int, int]]) -> list[Localization]:
    """One :class:`Localization` per image; ``image_sizes`` are the originals' ``(height, width)``."""
    logits, boxes = (outputs[o.name] for o in manifest.outputs)
    probs = softmax(logits)
    best = probs.argmax(axis=1)
    results = []
    for p, k, box, (height, width) in zip(probs, best, valid_boxes(boxes), image_sizes):
        scaled = np.clip(to_original_normalised(box, manifest.input, height, width), 0, 1) * np.array([width, height] * 2)
        results.append(Localization(manifest.classes[k], int(k), float(p[k]), tuple(float(v) for v in scaled)))
    return results


def report_picture(result: Localization, image: np.ndarray, target: np.void) -> np.ndarray:
    """The predicted box (coloured, labelled) and the true one (white) with their IoU."""
    height, width = image.shape[:2]
    truth = target["box"] * [width, height, width, height]
    iou = paired_box_iou(np.array([result.box]), truth[None])[0]
    drawn = draw_boxes(image, [result.box, truth], [f"{result.label} {result.score:.2f}"],
                       colours=[PALETTE[0], (255, 255, 255)])
    return caption(drawn, f"IoU {iou:.2f} with the truth (white)")


def heldout(data_dir: str | Path, count: int | None = None,
            manifest: Manifest | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their targets (:data:`TARGET`: class index, normalised box)."""
    split = read_coco_split(data_dir, "test", count)
    index_of = split.class_index
    targets = np.zeros(len(split.images), TARGET)
    for row, image, annotation in zip(targets, split.images, split.single_annotations()):
        x, y, w, h = annotation["bbox"]
        row["label"] = index_of[annotation["category_id"]]
        size = np.array([image["width"], image["height"]] * 2, np.float64)
        row["box"] = np.array([x, y, x + w, y + h]) / size
        row["size"] = size[:2]
    return split.image_paths, targets


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """Raw normalised boxes ``[N, 4]`` -> float64 boxes inside [0, 1] with x1 <= x2 and y1 <= y2
    (the two corners come from separate sigmoids, so they may arrive swapped)."""
    b = np.clip(boxes.astype(np.float64), 0.0, 1.0)
    return np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)


def metrics(logits: np.ndarray, boxes: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``top1`` accuracy, ``mean_iou`` of the predicted and true boxes, and ``iou@0.5`` (the
    share with IoU >= 0.5, i.e. correctly localised in the PASCAL sense)."""
    iou = paired_box_iou(valid_boxes(boxes), targets["box"])
    return {"top1": float(np.mean(logits.argmax(axis=1) == targets["label"])), "mean_iou": float(iou.mean()),
            "iou@0.5": float(np.mean(iou >= 0.5))}


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """:func:`metrics` of the model outputs against :func:`heldout` targets."""
    logits, boxes = (outputs[o.name] for o in manifest.outputs)
    boxes = np.stack([to_original_normalised(box, manifest.input, height, width)
                      for box, (width, height) in zip(valid_boxes(boxes), targets["size"])])
    return metrics(logits, boxes, targets)


TASK = RuntimeTask(
    name="localize",
    architectures=(Architecture("resnet", default=True),),
    contract=Contract("fixed", "the class names, in logit order", (Variant("logits + box", (LOGITS, Tensor(
        "boxes", ("N", 4), "float", "the object's box x1, y1, x2, y2 divided by the input width and height (0..1)")),
        False),)),
    postprocess=postprocess, heldout=heldout, evaluate=evaluate, prepare=prepare, report_picture=report_picture,
    parity_tolerance=PARITY_TOLERANCE, precision_tolerance={"top1": (0.005, 0.0), "mean_iou": (0.005, 0.0)},
)
