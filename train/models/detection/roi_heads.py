"""The second stage: pool each proposal's features, classify it and refine its box per class.

Training (:meth:`RoIHeads.loss`): proposals (plus the ground-truth boxes) with IoU >= 0.5
with an object take its class, the others are background; ``batch_per_image`` sampled, a
quarter positive at most; cross-entropy over ``C + 1`` classes (0 = background) and smooth L1
on the deltas of the true class for positives.

Inference (:meth:`RoIHeads.forward`): per-class boxes and softmax scores of every proposal,
then class-aware NMS to the fixed-size detections ``(num_detections [N, 1], boxes [N, K, 4],
scores [N, K], classes [N, K])``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ....runtime.plugins.nms.onnx_node import EFFICIENT_NMS
from ...ops import efficient_nms
from ..classify import conv_bn_relu
from .box_coder import BoxCoder
from .boxes import clip
from .matcher import Matcher
from .sampler import BalancedSampler


@dataclasses.dataclass(frozen=True)
class NmsSettings:
    """The final NMS: detections scoring above ``score_threshold``, suppressed above
    ``iou_threshold`` within a class, at most ``max_detections`` per image, from the best
    ``pre_nms_top_k`` (proposal, class) candidates."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 20
    pre_nms_top_k: int = 1000

    def __post_init__(self):
        """The NMS plugin's limits (``runtime/plugins/nms/onnx_node.py``), checked when the model is built
        (so at export): :class:`~visionrt.runtime.errors.PluginError` naming the limit."""
        EFFICIENT_NMS.resolve({"score_threshold": self.score_threshold, "iou_threshold": self.iou_threshold,
                               "max_output_boxes": self.max_detections, "pre_nms_top_k": self.pre_nms_top_k})


class BoxHead(nn.Sequential):
    """``[R, C, s, s] -> [R, hidden]``: ``convs`` 3×3 conv-BN-ReLU layers on the pooled features, then
    flatten and fully connected layers with ReLU: two without convs (torchvision's TwoMLPHead), one
    after them (its FastRCNNConvFCHead)."""

    def __init__(self, channels: int, size: int, hidden: int, convs: int = 0):
        layers = [conv_bn_relu(channels, channels, 3) for _ in range(convs)]
        layers += [nn.Flatten(), nn.Linear(channels * size * size, hidden), nn.ReLU(inplace=True)]
        if not convs:
            layers += [nn.Linear(hidden, hidden), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class BoxPredictor(nn.Module):
    """``[R, hidden] -> (logits [R, C + 1], deltas [R, C, 4])``: class scores (0 = background)
    and a box refinement for every object class."""

    def __init__(self, hidden: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(hidden, num_classes + 1)
        self.bbox_pred = nn.Linear(hidden, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_score(x), self.bbox_pred(x).reshape(-1, self.num_classes, 4)


@dataclasses.dataclass
class RoISample:
    """The proposals :meth:`RoIHeads.sample` picked for training, concatenated over the batch."""

    boxes: torch.Tensor        # [R, 4]
    batch_index: torch.Tensor  # [R]
    labels: torch.Tensor       # [R], 0 = background, c + 1 = class c
    gt_index: torch.Tensor     # [R], index into the batch's concatenated ground truth (valid where labels > 0)


class RoIHeads(nn.Module):
    def __init__(self, pooler: nn.Module, channels: int, num_classes: int, hidden: int, nms: NmsSettings,
                 batch_per_image: int = 64, positive_fraction: float = 0.25, convs: int = 0):
        super().__init__()
        self.pooler = pooler
        self.head = BoxHead(channels, pooler.size, hidden, convs)
        self.predictor = BoxPredictor(hidden, num_classes)
        self.coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.matcher = Matcher(0.5, 0.5)
        self.sampler = BalancedSampler(batch_per_image, positive_fraction)
        self.nms = nms

    def forward(self, features: torch.Tensor, proposals: torch.Tensor, valid: torch.Tensor,
                image_size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """``proposals [N, P, 4]``, ``valid [N, P]`` -> ``(num_detections, boxes, scores, classes)``;
        classes are 0-based object classes (int32)."""
        n, p, _ = proposals.shape
        c = self.predictor.num_classes
        boxes = proposals.reshape(-1, 4)
        batch_index = torch.arange(n, device=boxes.device).repeat_interleave(p)
        logits, deltas = self.predictor(self.head(self.pooler(features, boxes, batch_index)))
        scores = F.softmax(logits, dim=1)[:, 1:] * valid.reshape(-1, 1)                  # [N*P, C]
        class_boxes = clip(self.coder.decode(deltas, boxes[:, None]), *image_size)       # [N*P, C, 4]
        # one NMS candidate per (proposal, class), scored only in its own class's column
        own_class = torch.eye(c, device=boxes.device).repeat(p, 1)                         # [P*C, C]
        candidate_scores = scores.reshape(n, p * c, 1) * own_class
        s = self.nms
        return efficient_nms(class_boxes.reshape(n, p * c, 4), candidate_scores, s.score_threshold,
                             s.iou_threshold, s.max_detections, s.pre_nms_top_k)

    @torch.no_grad()
    def sample(self, proposals: torch.Tensor, valid: torch.Tensor, gt_boxes: list[torch.Tensor],
               gt_labels: list[torch.Tensor], generator: torch.Generator | None = None) -> RoISample:
        """Match each image's valid proposals and its ground-truth boxes to the objects; sample them."""
        parts, offset = [], 0
        for i, (boxes, labels) in enumerate(zip(gt_boxes, gt_labels)):
            candidates = torch.cat([proposals[i][valid[i]], boxes])
            matched = self.matcher(boxes, candidates)
            pos, neg = self.sampler(matched >= 0, matched < 0, generator)
            keep = torch.cat([pos, neg])
            gt = matched[keep].clamp(min=0)
            cls = torch.where(matched[keep] >= 0, labels[gt] + 1, 0) if len(boxes) else torch.zeros_like(keep)
            parts.append((candidates[keep], torch.full_like(keep, i), cls, gt + offset))
            offset += len(boxes)
        return RoISample(*(torch.cat(column) for column in zip(*parts)))

    def loss(self, features: torch.Tensor, sample: RoISample, gt_boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``roi_class`` (cross-entropy) and ``roi_box`` (smooth L1 of positives, per sampled RoI) losses;
        ``gt_boxes [G, 4]`` is the batch's concatenated ground truth."""
        logits, deltas = self.predictor(self.head(self.pooler(features, sample.boxes, sample.batch_index)))
        pos = torch.nonzero(sample.labels > 0).flatten()
        target = self.coder.encode(gt_boxes[sample.gt_index[pos]], sample.boxes[pos])
        box = F.smooth_l1_loss(deltas[pos, sample.labels[pos] - 1], target, beta=1 / 9, reduction="sum")
        return {"roi_class": F.cross_entropy(logits, sample.labels), "roi_box": box / max(len(sample.labels), 1)}
