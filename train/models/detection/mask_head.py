"""Mask R-CNN's mask branch: a small fully convolutional head predicting a mask per RoI and class.

RoIAlign gives ``[R, C, s, s]`` features of each box; ``layers`` 3×3 convs + ReLU, a 2×
transposed conv + ReLU and a 1×1 conv give ``[R, num_classes, 2s, 2s]`` mask logits. Each
RoI's mask is the channel of its class, in box coordinates: cell ``(u, v)`` of an ``M × M``
mask covers ``x1 + (u, u + 1) * (x2 - x1) / M`` (and likewise in y), so pasting it back into
the image is a resampling (``visionrt.runtime.tasks.instance``). Trained on positive RoIs
with binary cross-entropy against the object's mask resampled onto the RoI the same way.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .poolers import RoIAlign
from .roi_heads import RoISample


class MaskHead(nn.Sequential):
    """``[R, C, s, s] -> [R, num_classes, 2s, 2s]`` mask logits."""

    def __init__(self, channels: int, width: int, layers: int, num_classes: int):
        convs = []
        for i in range(layers):
            convs += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
        super().__init__(*convs, nn.ConvTranspose2d(width, width, 2, stride=2), nn.ReLU(inplace=True),
                         nn.Conv2d(width, num_classes, 1))


class MaskBranch(nn.Module):
    def __init__(self, channels: int, stride: int, num_classes: int, pooled: int = 14, width: int = 32,
                 layers: int = 2):
        super().__init__()
        self.pooler = RoIAlign(pooled, stride)
        self.head = MaskHead(channels, width, layers, num_classes)
        self.size = 2 * pooled

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """``boxes [N, K, 4]``, ``classes [N, K]`` (int) -> mask probabilities ``[N, K, M, M]`` of each box's class."""
        n, k, _ = boxes.shape
        batch_index = torch.arange(n, device=boxes.device).repeat_interleave(k)
        logits = self.head(self.pooler(features, boxes.reshape(-1, 4), batch_index))    # [N*K, C, M, M]
        index = classes.reshape(-1, 1, 1, 1).to(torch.int64).expand(-1, 1, self.size, self.size)
        return torch.sigmoid(logits.gather(1, index)).reshape(n, k, self.size, self.size)

    def loss(self, features: torch.Tensor, sample: RoISample, gt_masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """``mask`` loss: binary cross-entropy of positive RoIs' class channel against ``gt_masks [G, H, W]``
        (the batch's concatenated object masks) resampled onto each RoI."""
        pos = torch.nonzero(sample.labels > 0).flatten()
        if len(pos) == 0:
            return {"mask": features.sum() * 0}
        boxes, gt_index = sample.boxes[pos], sample.gt_index[pos]
        logits = self.head(self.pooler(features, boxes, sample.batch_index[pos]))
        logits = logits[torch.arange(len(pos)), sample.labels[pos] - 1]
        with torch.no_grad():
            resample = RoIAlign(self.size, stride=1, sampling_ratio=2)
            target = resample(gt_masks[:, None].to(logits.dtype), boxes, gt_index)[:, 0]
        return {"mask": F.binary_cross_entropy_with_logits(logits, target)}
