"""NumPy references of non-maximum suppression: ONNX NonMaxSuppression and the fixed-size form.

:func:`non_max_suppression` is ONNX NonMaxSuppression exactly as onnxruntime computes it:
per batch and class, candidates scoring above ``score_threshold`` (all when it is ``None``)
are visited by score, ties by lower box index first; a candidate is kept unless its IoU with a
box kept before it exceeds ``iou_threshold``; at most ``max_output_boxes_per_class`` per class
(0 gives none). Output rows ``(batch, class, box)`` come batch by batch, class by class, in
the order kept.

:func:`efficient_nms` is the fixed-size (EfficientNMS-style) form the TensorRT plugin
computes: candidates are the (box, class) pairs of an image scoring above the threshold,
ordered by score, ties by lower flat index ``box * C + class``; the first ``pre_nms_top_k`` go
through greedy NMS (same class only, or any class when ``class_agnostic``); at most
``max_output_boxes`` are kept, in that order, zero-padded.

IoU is onnxruntime's ``SuppressByIOU`` in float32: the four numbers of a box are two opposite
corners in either order (so ``(x1, y1, x2, y2)`` and ``(y1, x1, y2, x2)`` both work), and a
box with zero area or zero overlap never suppresses another.
"""
from __future__ import annotations

import numpy as np

from ...errors import InputError


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, max_output_boxes_per_class: int = 0,
                        iou_threshold: float = 0.0, score_threshold: float | None = None,
                        center_point_box: int = 0) -> np.ndarray:
    """``boxes [B, N, 4]``, ``scores [B, C, N]`` -> selected ``[M, 3]`` int64 rows (batch, class, box)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    _check(boxes, scores.shape[0], scores.shape[2], iou_threshold)
    if center_point_box not in (0, 1):
        raise InputError(f"NonMaxSuppression: center_point_box must be 0 or 1, got {center_point_box}")
    corners = _centers_to_corners(boxes) if center_point_box else _sorted_corners(boxes)
    limit = max(int(max_output_boxes_per_class), 0)
    selected = []
    for b in range(scores.shape[0] if limit else 0):
        for c in range(scores.shape[1]):
            candidates = np.arange(scores.shape[2])
            if score_threshold is not None:
                candidates = candidates[scores[b, c] > np.float32(score_threshold)]
            order = candidates[np.argsort(-scores[b, c, candidates], kind="stable")]
            kept = order[greedy_nms(corners[b, order], None, limit, iou_threshold)]
            selected.extend((b, c, int(i)) for i in kept)
    return np.array(selected, dtype=np.int64).reshape(-1, 3)


def efficient_nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
                  max_output_boxes: int, pre_nms_top_k: int, class_agnostic: bool = False):
    """``boxes [B, N, 4]``, ``scores [B, N, C]`` -> ``(num_detections [B, 1] int32, boxes [B, K, 4],
    scores [B, K], classes [B, K] int32)`` with ``K = max_output_boxes``, best score first."""
    boxes, scores = np.asarray(boxes), np.asarray(scores)
    batch, num_boxes, num_classes = scores.shape
    _check(boxes, batch, num_boxes, iou_threshold)
    corners = _sorted_corners(boxes.astype(np.float32))
    k = int(max_output_boxes)
    num_detections = np.zeros((batch, 1), dtype=np.int32)
    out_boxes = np.zeros((batch, k, 4), dtype=boxes.dtype)
    out_scores = np.zeros((batch, k), dtype=scores.dtype)
    out_classes = np.zeros((batch, k), dtype=np.int32)
    for b in range(batch):
        flat = scores[b].reshape(-1).astype(np.float32)
        candidates = np.flatnonzero(flat > np.float32(score_threshold))
        order = candidates[np.argsort(-flat[candidates], kind="stable")][:max(int(pre_nms_top_k), 0)]
        box, cls = order // num_classes, order % num_classes
        kept = order[greedy_nms(corners[b, box], None if class_agnostic else cls, k, iou_threshold)]
        num_detections[b, 0] = len(kept)
        out_boxes[b, :len(kept)] = boxes[b, kept // num_classes]
        out_scores[b, :len(kept)] = scores[b].reshape(-1)[kept]
        out_classes[b, :len(kept)] = kept % num_classes
    return num_detections, out_boxes, out_scores, out_classes


def greedy_nms(corners: np.ndarray, groups: np.ndarray | None, limit: int, iou_threshold: float) -> np.ndarray:
    """Positions kept by greedy NMS over candidates already in visiting order.

    ``corners [n, 4]`` as (min_a, min_b, max_a, max_b); ``groups [n]`` (e.g. classes): only
    candidates of the same group suppress each other (``None``: all do); at most ``limit`` kept.
    """
    remaining = np.arange(len(corners))
    kept = []
    while len(remaining) and len(kept) < limit:
        first, rest = remaining[0], remaining[1:]
        kept.append(first)
        suppressed = _iou_exceeds(corners[first], corners[rest], iou_threshold)
        if groups is not None:
            suppressed &= groups[rest] == groups[first]
        remaining = rest[~suppressed]
    return np.array(kept, dtype=np.int64)


def _iou_exceeds(box: np.ndarray, others: np.ndarray, iou_threshold: float) -> np.ndarray:
    """onnxruntime's SuppressByIOU of one box against many, float32 in its order of operations."""
    lo = np.maximum(box[:2], others[:, :2])
    hi = np.minimum(box[2:], others[:, 2:])
    overlap = np.all(hi > lo, axis=1)
    intersection = (hi[:, 0] - lo[:, 0]) * (hi[:, 1] - lo[:, 1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - intersection
    valid = overlap & (intersection > 0) & (area > 0) & (areas > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return valid & (intersection / union > np.float32(iou_threshold))


def _sorted_corners(boxes: np.ndarray) -> np.ndarray:
    """Two opposite corners in either order -> (min_a, min_b, max_a, max_b), float32."""
    return np.concatenate([np.minimum(boxes[..., :2], boxes[..., 2:]),
                           np.maximum(boxes[..., :2], boxes[..., 2:])], axis=-1)


def _centers_to_corners(boxes: np.ndarray) -> np.ndarray:
    """(x_center, y_center, width, height) -> (x_min, y_min, x_max, y_max) as onnxruntime computes them."""
    half = boxes[..., 2:] / np.float32(2)
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def _check(boxes: np.ndarray, batch: int, num_boxes: int, iou_threshold: float) -> None:
    if boxes.shape != (batch, num_boxes, 4):
        raise InputError(f"NMS: boxes have shape {boxes.shape}, expected [{batch}, {num_boxes}, 4] to match the scores")
    if not 0.0 <= iou_threshold <= 1.0:
        raise InputError(f"NMS: iou_threshold {iou_threshold} outside [0, 1]")
