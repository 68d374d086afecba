"""Classification in the runtime: logits ``[N, K]`` -> label, softmax score and top-k per image."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..manifest import Manifest
from ..render import caption


#: Architectures, each with the plugin ops its TensorRT engine needs (none: any TensorRT).
MODELS = {"resnet": (), "inception": (), "densenet": ()}


@dataclasses.dataclass
class Classification:
    """One image's result: best ``label`` (class name), its ``index`` and softmax ``score``;
    ``top_k`` lists ``(label, score)`` best first."""

    label: str
    index: int
    score: float
    top_k: list[tuple[str, float]]

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "score": self.score,
                "top_k": [{"label": label, "score": score} for label, score in self.top_k]}

    def summary(self) -> str:
        return f"{self.label} ({self.score:.3f})"

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The image (RGB uint8) with the label and score written under it."""
        return caption(image, self.summary())


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes: list[tuple[int, int]] | None = None,
                top_k: int | None = None) -> list[Classification]:
    """One result per image (``image_sizes`` is not needed: labels do not depend on the size)."""
    k = min(top_k or manifest.postprocess.get("top_k", 5), len(manifest.classes))
    probs = softmax(outputs[manifest.outputs[0].name])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [Classification(manifest.classes[row[0]], int(row[0]), float(p[row[0]]),
                           [(manifest.classes[i], float(p[i])) for i in row])
            for p, row in zip(probs, order)]


def heldout(data_dir: str | Path, count: int | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their class indices (COCO categories in id order)."""
    root = Path(data_dir)
    coco = json.loads((root / "annotations" / "test.json").read_text())
    index_of = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    label_of = {a["image_id"]: index_of[a["category_id"]] for a in coco["annotations"]}
    images = coco["images"][:count]
    return ([root / "images" / "test" / image["file_name"] for image in images],
            np.array([label_of[image["id"]] for image in images]))


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """Top-1 accuracy of the logits against integer class ``targets``."""
    return {"top1": float(np.mean(outputs[manifest.outputs[0].name].argmax(axis=1) == targets))}
