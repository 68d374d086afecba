"""SSD's training objective: matching default boxes to objects, hard-negative mining, the loss.

* :func:`match`: a default box takes the object it overlaps best when that IoU is at least
  ``threshold`` (0.5); besides, each object takes the default box it overlaps best, whatever the
  IoU (so no object goes unmatched; where two objects want the same box, the later one has it).
* :func:`hard_negatives`: of the unmatched default boxes of an image, the ``ratio`` × (its matched
  count) with the highest confidence loss (at most all of them); the rest are left out of the loss.
* :func:`ssd_loss`: softmax cross-entropy over ``C + 1`` classes (0 = background) on the matched
  and the mined boxes, plus smooth L1 on the encoded offsets of the matched ones, both summed and
  divided by the number of matched boxes in the batch (SSD's ``L = (L_conf + L_loc) / N``).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .box_coder import BoxCoder
from .boxes import pairwise_iou
from .matcher import BACKGROUND


def match(gt_boxes: torch.Tensor, defaults: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """``gt_boxes [G, 4]``, ``defaults [D, 4]`` -> ``[D]`` int64: the matched object's index, or
    :data:`~.matcher.BACKGROUND`."""
    if not len(gt_boxes):
        return torch.full((len(defaults),), BACKGROUND, dtype=torch.int64, device=defaults.device)
    quality = pairwise_iou(gt_boxes, defaults)                                # [G, D]
    best, matched = quality.max(dim=0)
    matched[best < threshold] = BACKGROUND
    matched[quality.argmax(dim=1)] = torch.arange(len(gt_boxes), device=defaults.device)
    return matched


def hard_negatives(conf_loss: torch.Tensor, positive: torch.Tensor, ratio: float = 3.0) -> torch.Tensor:
    """``conf_loss [N, D]`` (each default box's cross-entropy against background for the unmatched),
    ``positive [N, D]`` bool -> ``[N, D]`` bool: per image the ``ratio × positives`` unmatched boxes of
    highest loss (ties broken by position)."""
    loss = conf_loss.detach().masked_fill(positive, -float("inf"))
    rank = loss.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    wanted = (ratio * positive.sum(dim=1, keepdim=True)).floor().long()
    return (rank < wanted) & ~positive


def ssd_loss(class_logits: torch.Tensor, deltas: torch.Tensor, defaults: torch.Tensor,
             targets: list[dict[str, torch.Tensor]], coder: BoxCoder, iou_threshold: float = 0.5,
             negatives_per_positive: float = 3.0) -> dict[str, torch.Tensor]:
    """``class_logits [N, D, C + 1]``, ``deltas [N, D, 4]`` (encoded offsets), ``defaults [D, 4]``,
    ``targets`` (per image ``boxes [G, 4]`` in input pixels, ``labels [G]`` 0-based) -> the two
    terms ``ssd_class`` and ``ssd_box``."""
    labels, offsets = [], []
    for target in targets:
        matched = match(target["boxes"], defaults, iou_threshold)
        found = matched.clamp(min=0)
        labels.append(torch.where(matched >= 0, target["labels"][found] + 1, 0) if len(target["boxes"])
                      else torch.zeros_like(matched))
        offsets.append(coder.encode(target["boxes"][found], defaults) if len(target["boxes"])
                       else torch.zeros_like(defaults))
    labels, offsets = torch.stack(labels), torch.stack(offsets)                  # [N, D], [N, D, 4]
    positive = labels > 0
    conf_loss = F.cross_entropy(class_logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    kept = positive | hard_negatives(conf_loss, positive, negatives_per_positive)
    matches = positive.sum().clamp(min=1)
    box = F.smooth_l1_loss(deltas[positive], offsets[positive], beta=1.0, reduction="sum")
    return {"ssd_class": conf_loss[kept].sum() / matches, "ssd_box": box / matches}
