"""Scores and boxes shared by several tasks' runtime modules."""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits ``[N, K]`` (float64)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a [N, 4]`` with every box of ``b [M, 4]`` (x1, y1, x2, y2) -> ``[N, M]``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    return _iou(a[:, None], b[None, :])


def paired_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of ``a`` and ``b`` (``[N, 4]`` each, x1, y1, x2, y2) -> ``[N]``."""
    return _iou(np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``[..., 4]`` broadcast against each other; 0 for empty boxes. The same in pixels
    and in normalised coordinates: scaling x and y scales every area alike."""
    lo, hi = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.clip(hi - lo, 0, None).prod(axis=-1)
    area = lambda x: np.clip(x[..., 2:] - x[..., :2], 0, None).prod(axis=-1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
