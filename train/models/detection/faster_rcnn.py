"""Faster R-CNN: backbone -> RPN -> RoI max pooling -> box head -> per-class NMS.

``FasterRCNN`` takes ``[N, 3, H, W]`` float32 (normalised; H, W fixed at export) and

* without targets (inference, export) returns the fixed-size detections
  ``num_detections [N, 1] int32``, ``boxes [N, K, 4]`` (x1, y1, x2, y2 in input pixels),
  ``scores [N, K]``, ``classes [N, K] int32`` (0-based object classes), best first;
* with ``targets`` (a list of per-image dicts: ``boxes [G, 4]`` in input pixels,
  ``labels [G]`` int64, and ``masks [G, H, W]`` for Mask R-CNN) returns the losses:
  ``rpn_objectness``, ``rpn_box``, ``roi_class``, ``roi_box``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .anchors import AnchorGenerator
from .backbone import Backbone
from .poolers import make_pooler
from .roi_heads import NmsSettings, RoIHeads, RoISample
from .rpn import ProposalCounts, RegionProposalNetwork


@dataclasses.dataclass
class FasterRCNNConfig:
    """Architecture and training settings (``TrainConfig.model_kwargs``); NMS thresholds are
    the manifest's ``postprocess`` (:class:`NmsSettings`).

    widths, blocks, top_down: the backbone (stride ``2 ** len(widths)``, half that with a
        ``top_down`` pathway of that many channels).
    anchor_sizes, aspect_ratios: ``k = 3 × 3`` anchors per position; sizes in input pixels,
        ratios height / width (digits are taller than wide).
    rpn_train, rpn_test: (anchors entering NMS, proposals kept) per image.
    pooler: ``"max"`` (RoI max pooling, Faster R-CNN) or ``"align"`` (RoIAlign); ``pool_size`` bins.
    hidden, box_convs: the box head: ``box_convs`` 3×3 convs on the pooled features, then fully
        connected layers of ``hidden`` units (two without convs, one after them).
    rpn_batch, roi_batch: examples sampled per image for the RPN and the box head;
        roi_positive_fraction: at most that share of the box head's positive.
    """

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1
    top_down: int = 32           # stride 4, not 8: quick Mask R-CNN mask mAP50 0.76 -> 0.86
    anchor_sizes: tuple[float, ...] = (16.0, 28.0, 44.0)
    aspect_ratios: tuple[float, ...] = (1.0, 1.6, 2.5)
    rpn_train: tuple[int, int] = (200, 32)
    rpn_test: tuple[int, int] = (200, 32)
    rpn_nms_iou: float = 0.7
    pooler: str = "max"
    pool_size: int = 7
    hidden: int = 128
    box_convs: int = 0
    rpn_batch: int = 128
    roi_batch: int = 16
    roi_positive_fraction: float = 0.25


class FasterRCNN(nn.Module):
    def __init__(self, num_classes: int, config: FasterRCNNConfig = FasterRCNNConfig(),
                 nms: NmsSettings = NmsSettings()):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config.widths, config.blocks, config.top_down)
        channels, stride = self.backbone.out_channels, self.backbone.stride
        anchors = AnchorGenerator(tuple(config.anchor_sizes), tuple(config.aspect_ratios), stride)
        self.rpn = RegionProposalNetwork(channels, anchors, ProposalCounts(*config.rpn_train),
                                         ProposalCounts(*config.rpn_test), config.rpn_nms_iou,
                                         batch_per_image=config.rpn_batch)
        self.roi_heads = RoIHeads(make_pooler(config.pooler, config.pool_size, stride), channels, num_classes,
                                  config.hidden, nms, batch_per_image=config.roi_batch,
                                  positive_fraction=config.roi_positive_fraction, convs=config.box_convs)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None,
                generator: torch.Generator | None = None):
        features = self.backbone(images)
        size = tuple(images.shape[-2:])
        proposals, valid, raw = self.rpn(features, size)
        if targets is None:
            return self.detect(features, proposals, valid, size)
        return self.losses(features, proposals, valid, raw, targets, generator)

    def detect(self, features: torch.Tensor, proposals: torch.Tensor, valid: torch.Tensor,
               size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """The fixed-size detections of the proposals."""
        return self.roi_heads(features, proposals, valid, size)

    def losses(self, features, proposals, valid, raw, targets, generator) -> dict[str, torch.Tensor]:
        return self.box_losses(features, proposals, valid, raw, targets, generator)[0]

    def box_losses(self, features, proposals, valid, raw, targets, generator) -> tuple[dict, RoISample]:
        """The four losses and the RoIs the box head was trained on."""
        gt_boxes = [t["boxes"] for t in targets]
        sample = self.roi_heads.sample(proposals, valid, gt_boxes, [t["labels"] for t in targets], generator)
        losses = {**self.rpn.loss(raw, gt_boxes, generator),
                  **self.roi_heads.loss(features, sample, torch.cat(gt_boxes))}
        return losses, sample
