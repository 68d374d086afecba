"""Classification post-processing and metric (numpy): logits ``[N, K]`` -> labels and scores."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..manifest import Manifest


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


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, top_k: int | None = None) -> list[Classification]:
    k = min(top_k or manifest.postprocess.get("top_k", 5), len(manifest.classes))
    probs = softmax(outputs[manifest.outputs[0].name])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [Classification(manifest.classes[row[0]], int(row[0]), float(p[row[0]]),
                           [(manifest.classes[i], float(p[i])) for i in row])
            for p, row in zip(probs, order)]


def evaluate(outputs: dict[str, np.ndarray], labels: np.ndarray, output_name: str = "logits") -> dict[str, float]:
    """Top-1 accuracy of ``outputs[output_name]`` against integer ``labels``."""
    return {"top1": float(np.mean(outputs[output_name].argmax(axis=1) == labels))}
