"""Classification + localisation in the runtime: ``logits [N, K]`` and ``boxes [N, 4]`` -> label,
softmax score and the box in pixels of the original image, per image.

The model's boxes are ``(x1, y1, x2, y2)`` normalised by the input's width and height. A
resize (even one that changes the aspect ratio) scales x and y separately, so multiplying
by the original image's width and height undoes it exactly.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..manifest import Manifest
from ..preprocess import require_detail
from ..render import PALETTE, caption, draw_boxes
from .classify import softmax

#: Architectures, each with the plugin ops its TensorRT engine needs (none: any TensorRT).
MODELS = {"resnet": ()}

#: Allowed |ONNX - PyTorch| of the metrics: mean IoU moves by float rounding only; a near tie
#: between two classes (or an IoU of 0.5 within rounding) may flip one image in a thousand.
PARITY_TOLERANCE = {"top1": (2e-3, 0.0), "mean_iou": (1e-4, 0.0), "iou@0.5": (2e-3, 0.0)}
#: Dtype of the held-out targets: class index and normalised box (x1, y1, x2, y2).
TARGET = np.dtype([("label", np.int64), ("box", np.float64, 4)])


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
        scaled = box * np.array([width, height, width, height])
        results.append(Localization(manifest.classes[k], int(k), float(p[k]), tuple(float(v) for v in scaled)))
    return results


def report_picture(result: Localization, image: np.ndarray, target: np.void) -> np.ndarray:
    """The predicted box (coloured, labelled) and the true one (white) with their IoU."""
    height, width = image.shape[:2]
    truth = target["box"] * [width, height, width, height]
    iou = box_iou(np.array([result.box]), truth[None])[0]
    drawn = draw_boxes(image, [result.box, truth], [f"{result.label} {result.score:.2f}"],
                       colours=[PALETTE[0], (255, 255, 255)])
    return caption(drawn, f"IoU {iou:.2f} with the truth (white)")


def heldout(data_dir: str | Path, count: int | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their targets (:data:`TARGET`: class index, normalised box)."""
    root = Path(data_dir)
    coco = json.loads((root / "annotations" / "test.json").read_text())
    index_of = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    annotation_of = {a["image_id"]: a for a in coco["annotations"]}
    images = coco["images"][:count]
    targets = np.zeros(len(images), TARGET)
    for row, image in zip(targets, images):
        annotation = annotation_of[image["id"]]
        x, y, w, h = annotation["bbox"]
        row["label"] = index_of[annotation["category_id"]]
        size = np.array([image["width"], image["height"]] * 2, np.float64)
        row["box"] = np.array([x, y, x + w, y + h]) / size
    return [root / "images" / "test" / image["file_name"] for image in images], targets


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """Raw normalised boxes ``[N, 4]`` -> float64 boxes inside [0, 1] with x1 <= x2 and y1 <= y2
    (the two corners come from separate sigmoids, so they may arrive swapped)."""
    b = np.clip(boxes.astype(np.float64), 0.0, 1.0)
    return np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of ``a`` and ``b`` (``[N, 4]`` as x1, y1, x2, y2) -> ``[N]``; 0 for empty boxes.

    The same in pixels and in normalised coordinates: scaling x and y scales every area alike."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda box: np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def metrics(logits: np.ndarray, boxes: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``top1`` accuracy, ``mean_iou`` of the predicted and true boxes, and ``iou@0.5`` (the
    share with IoU >= 0.5, i.e. correctly localised in the PASCAL sense)."""
    iou = box_iou(valid_boxes(boxes), targets["box"])
    return {"top1": float(np.mean(logits.argmax(axis=1) == targets["label"])), "mean_iou": float(iou.mean()),
            "iou@0.5": float(np.mean(iou >= 0.5))}


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """:func:`metrics` of the model outputs against :func:`heldout` targets."""
    logits, boxes = (outputs[o.name] for o in manifest.outputs)
    return metrics(logits, boxes, targets)
