"""Classification in the runtime: logits ``[N, K]`` -> label, softmax score and top-k per image."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..datasets import read_coco_split
from ..folders import is_image_folder, read_image_folder
from ..manifest import Manifest
from ..render import caption
from .base import Architecture, Contract, Imported, Option, Options, RuntimeTask, Tensor, Variant
from .scores import softmax


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


#: The output: one row of class scores per image (also the first output of localisation).
LOGITS = Tensor("logits", ("N", "C"), "float", "unnormalised class scores; softmax gives probabilities over `classes`")
#: ``predict``'s options.
OPTIONS = Options((Option("top_k", int, "how many classes to list", low=1, default=5),))


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes: list[tuple[int, int]] | None = None,
                **options) -> list[Classification]:
    """One result per image (``image_sizes`` is not needed: labels do not depend on the size);
    ``options``: :data:`OPTIONS`."""
    k = min(OPTIONS.resolve(manifest, options)["top_k"], len(manifest.classes))
    scores = outputs[manifest.outputs[0].name]  # the model's own probabilities where its graph normalises them
    probs = scores.astype(np.float64) if manifest.postprocess.get("outputs") == "probabilities" else softmax(scores)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [Classification(manifest.classes[row[0]], int(row[0]), float(p[row[0]]),
                           [(manifest.classes[i], float(p[i])) for i in row])
            for p, row in zip(probs, order)]


def heldout(data_dir: str | Path, count: int | None = None,
            manifest: Manifest | None = None) -> tuple[list[Path], np.ndarray]:
    """Test-split image paths and their class indices: an ImageFolder's (class folders sorted by
    name) or a COCO split's (categories in id order)."""
    if is_image_folder(data_dir):
        folder = read_image_folder(data_dir, "test", count)
        return folder.image_paths, folder.labels
    split = read_coco_split(data_dir, "test", count)
    index_of = split.class_index
    return split.image_paths, np.array([index_of[a["category_id"]] for a in split.single_annotations()])


def own_classes(outputs: dict[str, np.ndarray], manifest: Manifest) -> np.ndarray:
    """The model's own top classes ``[N]`` (targets of an imported model's reduced precisions)."""
    return outputs[manifest.outputs[0].name].argmax(axis=1)


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """Top-1 accuracy of the logits against integer class ``targets``."""
    return {"top1": float(np.mean(outputs[manifest.outputs[0].name].argmax(axis=1) == targets))}


TASK = RuntimeTask(
    name="classify",
    architectures=(Architecture("resnet", default=True), Architecture("inception"), Architecture("densenet")),
    contract=Contract("fixed", "the class names, in logit order",
                      (Variant("logits", (LOGITS,), False, {"top_k": "classes listed per image"}),),
                      lambda variant, classes, bound: {"top_k": min(5, len(classes))}),
    options=OPTIONS, postprocess=postprocess, heldout=heldout, evaluate=evaluate,
    precision_tolerance={"top1": (0.005, 0.0)}, imported=Imported(own_targets=own_classes),
)
