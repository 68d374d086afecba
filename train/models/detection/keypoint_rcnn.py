"""Keypoint R-CNN: Faster R-CNN with RoIAlign and a keypoint branch (Mask R-CNN's pose head).

Inference adds ``heatmaps [N, K, J, M, M]``: per detection and joint, probabilities over the
cells of its box (see :mod:`.keypoint_head`); training adds the ``keypoint`` loss, given each
image's ``keypoints [G, J, 3]`` (x, y input pixels, COCO visibility) beside its boxes.
"""
from __future__ import annotations

import dataclasses

import torch

from .faster_rcnn import FasterRCNN, FasterRCNNConfig
from .keypoint_head import KeypointBranch
from .roi_heads import NmsSettings


@dataclasses.dataclass
class KeypointRCNNConfig(FasterRCNNConfig):
    """:class:`FasterRCNNConfig` with RoIAlign for the box head, plus the keypoint branch:
    ``keypoint_pool`` RoIAlign bins (heatmaps are twice that), ``keypoint_width`` channels,
    ``keypoint_layers`` 3×3 convs. Anchors for standing figures (ratios height / width)."""

    pooler: str = "align"
    anchor_sizes: tuple[float, ...] = (24.0, 44.0, 68.0)
    aspect_ratios: tuple[float, ...] = (1.0, 1.5, 2.2)
    keypoint_pool: int = 14
    keypoint_width: int = 64
    keypoint_layers: int = 4


class KeypointRCNN(FasterRCNN):
    def __init__(self, num_classes: int, joints: int, config: KeypointRCNNConfig = KeypointRCNNConfig(),
                 nms: NmsSettings = NmsSettings()):
        super().__init__(num_classes, config, nms)
        self.keypoint_branch = KeypointBranch(self.backbone.out_channels, self.backbone.stride, joints,
                                              config.keypoint_pool, config.keypoint_width, config.keypoint_layers)

    def detect(self, features, proposals, valid, size) -> tuple[torch.Tensor, ...]:
        num, boxes, scores, classes = super().detect(features, proposals, valid, size)
        return num, boxes, scores, classes, self.keypoint_branch(features, boxes)

    def losses(self, features, proposals, valid, raw, targets, generator) -> dict[str, torch.Tensor]:
        losses, sample = self.box_losses(features, proposals, valid, raw, targets, generator)
        keypoints = torch.cat([t["keypoints"] for t in targets])
        return {**losses, **self.keypoint_branch.loss(features, sample, keypoints)}
