"""Keypoint R-CNN's keypoint branch: one heatmap per joint of each detected person.

RoIAlign gives ``[R, C, s, s]`` features of each box; ``layers`` 3×3 convs + ReLU and a 2×
transposed conv give ``[R, J, 2s, 2s]`` joint logits. A heatmap is in box coordinates as a
mask is (:mod:`.mask_head`): cell ``(u, v)`` of an ``M × M`` heatmap covers
``x1 + [u, u + 1) * (x2 - x1) / M`` (likewise y). Inference returns each heatmap's softmax
(probabilities over its ``M²`` cells); the runtime takes the arg-max cell's centre as the joint
(``visionrt.runtime.tasks.keypoints``). Trained on positive RoIs with a softmax cross-entropy
over each heatmap against the one-hot cell of the joint, for joints labelled inside the RoI.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .poolers import RoIAlign
from .roi_heads import RoISample


class KeypointHead(nn.Sequential):
    """``[R, C, s, s] -> [R, joints, 2s, 2s]`` joint logits."""

    def __init__(self, channels: int, width: int, layers: int, joints: int):
        convs = []
        for i in range(layers):
            convs += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
        super().__init__(*convs, nn.ConvTranspose2d(width, joints, 4, stride=2, padding=1))


def heatmap_targets(keypoints: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Joints ``keypoints [R, J, 3]`` (x, y input pixels, COCO visibility) of RoIs ``boxes [R, 4]`` ->
    ``(cell [R, J]`` int64 index ``v * size + u`` of the ``size × size`` heatmap cell holding the
    joint, ``valid [R, J]`` bool: labelled and inside the box)."""
    x1, y1, x2, y2 = boxes.unbind(1)
    u = ((keypoints[..., 0] - x1[:, None]) / (x2 - x1).clamp(min=1e-6)[:, None] * size).floor()
    v = ((keypoints[..., 1] - y1[:, None]) / (y2 - y1).clamp(min=1e-6)[:, None] * size).floor()
    valid = (keypoints[..., 2] > 0) & (u >= 0) & (u < size) & (v >= 0) & (v < size)
    cell = (v.clamp(0, size - 1) * size + u.clamp(0, size - 1)).long()
    return cell, valid


class KeypointBranch(nn.Module):
    def __init__(self, channels: int, stride: int, joints: int, pooled: int = 14, width: int = 64, layers: int = 4):
        super().__init__()
        self.pooler = RoIAlign(pooled, stride)
        self.head = KeypointHead(channels, width, layers, joints)
        self.size = 2 * pooled

    def forward(self, features: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``boxes [N, K, 4]`` -> heatmaps ``[N, K, J, M, M]``: per joint, probabilities over the box's cells."""
        n, k, _ = boxes.shape
        batch_index = torch.arange(n, device=boxes.device).repeat_interleave(k)
        logits = self.head(self.pooler(features, boxes.reshape(-1, 4), batch_index))    # [N*K, J, M, M]
        joints = logits.shape[1]
        probabilities = F.softmax(logits.reshape(n * k, joints, -1), dim=-1)
        return probabilities.reshape(n, k, joints, self.size, self.size)

    def loss(self, features: torch.Tensor, sample: RoISample, gt_keypoints: torch.Tensor) -> dict[str, torch.Tensor]:
        """``keypoint`` loss: cross-entropy of each positive RoI's heatmaps against its object's joints
        (``gt_keypoints [G, J, 3]``, the batch's concatenated people), over the joints labelled inside it."""
        pos = torch.nonzero(sample.labels > 0).flatten()
        if len(pos) == 0:
            return {"keypoint": features.sum() * 0}
        boxes = sample.boxes[pos]
        logits = self.head(self.pooler(features, boxes, sample.batch_index[pos]))
        cell, valid = heatmap_targets(gt_keypoints[sample.gt_index[pos]], boxes, self.size)
        if not valid.any():
            return {"keypoint": logits.sum() * 0}
        return {"keypoint": F.cross_entropy(logits.flatten(2)[valid], cell[valid])}
