"""Matching reference boxes (anchors, proposals) to ground-truth boxes by IoU."""
from __future__ import annotations

import torch

from .boxes import pairwise_iou

BACKGROUND = -1   # best IoU below ``low``
IGNORE = -2       # best IoU in [low, high): neither object nor background


class Matcher:
    """Each reference box gets the index of its best ground truth if that IoU >= ``high``,
    :data:`BACKGROUND` below ``low``, :data:`IGNORE` in between. With ``allow_low_quality``,
    the references that overlap a ground truth best (ties included) are matched to it too,
    so every object has at least one match."""

    def __init__(self, high: float, low: float, allow_low_quality: bool = False):
        if not 0 <= low <= high <= 1:
            raise ValueError(f"matcher thresholds must satisfy 0 <= low <= high <= 1, got {low}, {high}")
        self.high, self.low, self.allow_low_quality = high, low, allow_low_quality

    def __call__(self, gt_boxes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``gt_boxes [G, 4]``, ``boxes [R, 4]`` -> ``[R]`` int64: ground-truth index, or a negative code."""
        if len(gt_boxes) == 0:
            return torch.full((len(boxes),), BACKGROUND, dtype=torch.int64, device=boxes.device)
        quality = pairwise_iou(gt_boxes, boxes)                        # [G, R]
        best, matches = quality.max(dim=0)
        matched = matches.clone()
        matched[best < self.high] = IGNORE
        matched[best < self.low] = BACKGROUND
        if self.allow_low_quality:
            best_for_gt = quality.max(dim=1, keepdim=True).values
            ref = torch.nonzero((quality == best_for_gt) & (best_for_gt > 0))[:, 1]
            matched[ref] = matches[ref]
        return matched
