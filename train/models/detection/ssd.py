"""SSD-style single-shot detector: class scores and box offsets regressed against default boxes
on several feature maps, in one forward pass.

``SSD`` takes ``[N, 3, H, W]`` float32 (normalised; H, W fixed at export, multiples of the last
map's stride). The backbone (:class:`~.backbone.Backbone`, stride 8) gives the finest map; each
extra layer (a 3×3 stride-2 conv-BN-ReLU, SSD's "extra feature layers") one twice coarser:
strides 8, 16, 32 by default (12×12, 6×6, 3×3 on 96×96 inputs). On each map a 3×3
conv-BN-ReLU (``head`` channels), then a 3×3 conv gives per cell ``k × (C + 1)`` class logits (0 = background) and another ``k × 4`` box offsets against
the cell's ``k`` default boxes (:mod:`.default_boxes`). Offsets are R-CNN's ``(dx, dy, dw, dh)``
divided by SSD's variances ``(0.1, 0.1, 0.2, 0.2)`` (:class:`~.box_coder.BoxCoder` with weights
``1 / variance``).

A candidate (one default box) has its box ``(x1, y1, x2, y2)`` in input pixels, clipped to the
input, ``[N, D, 4]``, and its softmax class probabilities without the background, ``[N, D, C]``.
With ``nms_in_graph`` the model ends in ``visionrt.train.ops.efficient_nms`` and returns the
fixed-size detections (``num_detections [N, 1]``, ``boxes [N, K, 4]``, ``scores [N, K]``,
``classes [N, K]``); without it, the candidates, and NMS runs in the runtime, so its engine builds
on TensorRT-RTX (as YOLO's raw variant). The loss is :func:`~.ssd_loss.ssd_loss`.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ...ops import efficient_nms
from ..classify import conv_bn_relu
from .backbone import Backbone
from .box_coder import BoxCoder
from .boxes import clip
from .default_boxes import boxes_per_cell, default_boxes
from .roi_heads import NmsSettings
from .ssd_loss import ssd_loss


@dataclasses.dataclass
class SSDConfig:
    """widths, blocks: the backbone (its map is the finest, stride ``2 ** len(widths)``).
    extras: the channels of each coarser map (one stride-2 3×3 conv each).
    head: the channels of the 3×3 conv-BN-ReLU on each map before its class and box convs (SSD's
        deep VGG features feed the heads directly; this small backbone gets one nonlinear layer
        more, as YOLO's head has).
    scales: default-box scales as fractions of the input side, one per map plus one more (the
        last map's extra scale): the digits are 15-45 % of the image high.
    aspect_ratios: besides 1, each ``a`` and ``1 / a`` (width / height); the digits are 1.3-2.9
        times as high as wide.
    variances: of the centre and of the log-size offsets. iou_threshold: matching.
    negatives_per_positive: hard-negative mining. nms_in_graph: see the module doc."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1
    extras: tuple[int, ...] = (128, 128)
    head: int = 96
    scales: tuple[float, ...] = (0.12, 0.2, 0.32, 0.45)
    aspect_ratios: tuple[float, ...] = (2.0,)
    variances: tuple[float, float] = (0.1, 0.2)
    iou_threshold: float = 0.5
    negatives_per_positive: float = 3.0
    nms_in_graph: bool = True


class SSD(nn.Module):
    def __init__(self, num_classes: int, config: SSDConfig = SSDConfig(), nms: NmsSettings = NmsSettings()):
        super().__init__()
        self.config, self.nms, self.num_classes = config, nms, num_classes
        self.backbone = Backbone(config.widths, config.blocks)
        channels, extras = [self.backbone.out_channels], []
        for width in config.extras:
            extras.append(conv_bn_relu(channels[-1], width, 3, stride=2))
            channels.append(width)
        self.extras = nn.ModuleList(extras)
        k = boxes_per_cell(config.aspect_ratios)
        self.necks = nn.ModuleList(conv_bn_relu(c, config.head, 3) for c in channels)
        self.class_heads = nn.ModuleList(nn.Conv2d(config.head, k * (num_classes + 1), 3, padding=1) for _ in channels)
        self.box_heads = nn.ModuleList(nn.Conv2d(config.head, k * 4, 3, padding=1) for _ in channels)
        v_centre, v_size = config.variances
        self.coder = BoxCoder((1 / v_centre, 1 / v_centre, 1 / v_size, 1 / v_size))

    def heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[N, 3, H, W]`` -> ``class_logits [N, D, C + 1]``, ``deltas [N, D, 4]`` (encoded offsets) and
        ``defaults [D, 4]`` (default boxes in input pixels)."""
        n, _, height, width = images.shape
        features = [self.backbone(images)]
        for extra in self.extras:
            features.append(extra(features[-1]))
        maps = [neck(f) for neck, f in zip(self.necks, features)]
        logits = [h(f).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1)
                  for h, f in zip(self.class_heads, maps)]
        deltas = [h(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, f in zip(self.box_heads, maps)]
        defaults = default_boxes([tuple(f.shape[-2:]) for f in features], height, width, self.config.scales,
                                 self.config.aspect_ratios).to(images.device)
        return torch.cat(logits, 1), torch.cat(deltas, 1), defaults

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None,
                generator: torch.Generator | None = None):
        """Detections (or candidates) as the module doc says; with ``targets`` (per image ``boxes
        [G, 4]`` in input pixels, ``labels [G]``), the losses ``ssd_class`` and ``ssd_box``
        (``generator`` is unused: the signature is the two-stage detectors')."""
        logits, deltas, defaults = self.heads(images)
        c = self.config
        if targets is not None:
            return ssd_loss(logits, deltas, defaults, targets, self.coder, c.iou_threshold, c.negatives_per_positive)
        height, width = images.shape[-2:]
        boxes = clip(self.coder.decode(deltas, defaults), height, width)
        scores = F.softmax(logits, dim=-1)[..., 1:]
        if not c.nms_in_graph:
            return boxes, scores
        s = self.nms
        return efficient_nms(boxes, scores, s.score_threshold, s.iou_threshold, s.max_detections, s.pre_nms_top_k)
