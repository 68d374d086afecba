"""``visionrt::efficient_nms``: batched multi-class NMS with fixed-size outputs (no backward).

The semantics of ``runtime/plugins/nms`` (README): candidates above ``score_threshold``, by
score then flat index ``box * C + class``; the first ``pre_nms_top_k`` through greedy NMS (same
class, or any class when ``class_agnostic``); at most ``max_output_boxes`` kept, zero-padded.
It exports as one ``visionrt::EfficientNms`` node; :func:`..onnx_export.export_with_ops` gives that
node its standard-ONNX definition (NonMaxSuppression + TopK), so the file is portable.
"""
from __future__ import annotations

import onnxscript
import torch

from ...runtime.errors import InputError
from ...runtime.plugins.nms.reference import greedy_nms

_VISIONRT = onnxscript.values.Opset("visionrt", 1)


@torch.library.custom_op("visionrt::efficient_nms", mutates_args=())
def efficient_nms(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float, iou_threshold: float,
                  max_output_boxes: int, pre_nms_top_k: int = 4096, class_agnostic: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``boxes [B, N, 4]``, ``scores [B, N, C]`` -> ``(num_detections [B, 1] int32, boxes [B, K, 4],
    scores [B, K], classes [B, K] int32)``, best first."""
    batch, num_boxes, num_classes = scores.shape
    if boxes.shape != (batch, num_boxes, 4) or not 0.0 <= iou_threshold <= 1.0:
        raise InputError(f"efficient_nms: boxes {tuple(boxes.shape)} must be [{batch}, {num_boxes}, 4] "
                         f"and iou_threshold {iou_threshold} in [0, 1]")
    k = max_output_boxes
    num_detections = torch.zeros(batch, 1, dtype=torch.int32, device=boxes.device)
    out_boxes, out_scores = boxes.new_zeros(batch, k, 4), scores.new_zeros(batch, k)
    out_classes = torch.zeros(batch, k, dtype=torch.int32, device=boxes.device)
    corners = torch.cat([torch.minimum(boxes[..., :2], boxes[..., 2:]),
                         torch.maximum(boxes[..., :2], boxes[..., 2:])], dim=-1).to(torch.float32)
    threshold = torch.tensor(score_threshold, dtype=torch.float32, device=scores.device)  # compared in float32
    for b in range(batch):
        flat = scores[b].reshape(-1).to(torch.float32)
        candidates = torch.nonzero(flat > threshold).reshape(-1)
        order = candidates[torch.sort(flat[candidates], descending=True, stable=True).indices][:pre_nms_top_k]
        group = None if class_agnostic else order % num_classes
        kept = order[_greedy(corners[b, order // num_classes], group, k, iou_threshold)]
        num_detections[b, 0] = len(kept)
        out_boxes[b, :len(kept)] = boxes[b, kept // num_classes]
        out_scores[b, :len(kept)] = scores[b].reshape(-1)[kept]
        out_classes[b, :len(kept)] = (kept % num_classes).to(torch.int32)
    return num_detections, out_boxes, out_scores, out_classes


@efficient_nms.register_fake
def _(boxes, scores, score_threshold, iou_threshold, max_output_boxes, pre_nms_top_k=4096, class_agnostic=False):
    batch = boxes.shape[0]
    return (boxes.new_empty(batch, 1, dtype=torch.int32), boxes.new_empty(batch, max_output_boxes, 4),
            scores.new_empty(batch, max_output_boxes), boxes.new_empty(batch, max_output_boxes, dtype=torch.int32))


def efficient_nms_onnx(boxes, scores, score_threshold: float, iou_threshold: float, max_output_boxes: int,
                       pre_nms_top_k: int = 4096, class_agnostic: bool = False):
    """ONNX: one ``visionrt::EfficientNms`` node (its portable definition is attached after export)."""
    return _VISIONRT.EfficientNms(boxes, scores, score_threshold=score_threshold, iou_threshold=iou_threshold,
                                  max_output_boxes=max_output_boxes, pre_nms_top_k=pre_nms_top_k,
                                  class_agnostic=int(class_agnostic), _num_outputs=4)


def _greedy(corners: torch.Tensor, groups: torch.Tensor | None, limit: int, iou_threshold: float) -> torch.Tensor:
    """Positions kept by greedy NMS over candidates in visiting order: the NumPy reference's own
    loop (one small step per kept box, where NumPy's per-call cost is a fraction of torch's)."""
    kept = greedy_nms(corners.detach().cpu().numpy(), None if groups is None else groups.cpu().numpy(), limit,
                      iou_threshold)
    return torch.from_numpy(kept).to(corners.device)
