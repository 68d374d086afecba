"""Mask R-CNN: Faster R-CNN with RoIAlign and a mask branch.

Inference adds ``masks [N, K, M, M]``: the probability of each detection's class, per cell of
its box (see :mod:`.mask_head`); training adds the ``mask`` loss.
"""
from __future__ import annotations

import dataclasses

import torch

from .faster_rcnn import FasterRCNN, FasterRCNNConfig
from .mask_head import MaskBranch
from .roi_heads import NmsSettings


@dataclasses.dataclass
class MaskRCNNConfig(FasterRCNNConfig):
    """:class:`FasterRCNNConfig` with RoIAlign for the box head, plus the mask branch:
    ``mask_pool`` RoIAlign bins (masks are twice that), ``mask_width`` channels, ``mask_layers`` convs."""

    pooler: str = "align"
    mask_pool: int = 14
    mask_width: int = 32
    mask_layers: int = 2


class MaskRCNN(FasterRCNN):
    def __init__(self, num_classes: int, config: MaskRCNNConfig = MaskRCNNConfig(),
                 nms: NmsSettings = NmsSettings()):
        super().__init__(num_classes, config, nms)
        self.mask_branch = MaskBranch(self.backbone.out_channels, self.backbone.stride, num_classes,
                                      config.mask_pool, config.mask_width, config.mask_layers)

    def detect(self, features, proposals, valid, size) -> tuple[torch.Tensor, ...]:
        num, boxes, scores, classes = super().detect(features, proposals, valid, size)
        return num, boxes, scores, classes, self.mask_branch(features, boxes, classes)

    def losses(self, features, proposals, valid, raw, targets, generator) -> dict[str, torch.Tensor]:
        losses, sample = self.box_losses(features, proposals, valid, raw, targets, generator)
        masks = torch.cat([t["masks"] for t in targets])
        return {**losses, **self.mask_branch.loss(features, sample, masks)}
