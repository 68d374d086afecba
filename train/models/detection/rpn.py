"""Region proposal network: objectness and box deltas for every anchor, proposals by NMS.

The head predicts ``k`` objectness logits per position, one per anchor, scored with a
sigmoid (binary cross-entropy), as torchvision does; the paper's ``2k`` two-way softmax is
equivalent with one logit fewer per anchor. Proposals are a fixed number per image (the
top-scoring ``pre_nms_top_n`` anchors decoded, NMS, the best ``post_nms_top_n`` kept, zeros
after them), so the exported graph has static shapes.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ....runtime.plugins.nms.onnx_node import EFFICIENT_NMS
from ...ops import efficient_nms
from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .boxes import clip
from .matcher import BACKGROUND, Matcher
from .sampler import BalancedSampler


@dataclasses.dataclass(frozen=True)
class ProposalCounts:
    """Anchors entering NMS and proposals kept per image."""

    pre_nms_top_n: int
    post_nms_top_n: int

    def __post_init__(self):
        """The NMS plugin's limits (:class:`PluginError` naming the limit)."""
        EFFICIENT_NMS.resolve({"score_threshold": float("-inf"), "iou_threshold": 0.0,
                               "max_output_boxes": self.post_nms_top_n, "pre_nms_top_k": self.pre_nms_top_n})


class RPNHead(nn.Module):
    """3×3 conv + ReLU, then 1×1 convs: ``[N, C, h, w] -> objectness [N, h*w*k]``, ``deltas [N, h*w*k, 4]``
    (anchor order of :class:`AnchorGenerator`)."""

    def __init__(self, channels: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, num_anchors, 1)
        self.deltas = nn.Conv2d(channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = features.shape
        t = F.relu(self.conv(features))
        objectness = self.objectness(t).permute(0, 2, 3, 1).reshape(n, -1)
        deltas = self.deltas(t).reshape(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        return objectness, deltas


class RegionProposalNetwork(nn.Module):
    """``features -> (proposals [N, P, 4], valid [N, P])``; :meth:`loss` trains the head.

    Training: anchors with IoU >= ``fg_iou`` with an object are positive (and each object's
    best anchors), below ``bg_iou`` negative; ``batch_per_image`` of them sampled, half
    positive at most; binary cross-entropy on objectness, smooth L1 on deltas of positives.
    """

    def __init__(self, channels: int, anchors: AnchorGenerator, train: ProposalCounts, test: ProposalCounts,
                 nms_iou: float = 0.7, fg_iou: float = 0.7, bg_iou: float = 0.3, batch_per_image: int = 128):
        super().__init__()
        self.anchors = anchors
        self.head = RPNHead(channels, anchors.num_anchors)
        self.coder = BoxCoder()
        self.counts = {True: train, False: test}
        self.nms_iou = nms_iou
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality=True)
        self.sampler = BalancedSampler(batch_per_image, 0.5)

    def forward(self, features: torch.Tensor, image_size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """Proposals ``[N, P, 4]`` (image pixels), ``valid [N, P]`` bool and the head's raw
        outputs ``(objectness, deltas, anchors)`` for :meth:`loss`."""
        objectness, deltas = self.head(features)
        anchors = self.anchors(*features.shape[2:])
        counts = self.counts[self.training]
        boxes = clip(self.coder.decode(deltas.detach(), anchors), *image_size)
        # NMS ranks by the objectness logits (the sigmoid keeps their order) and takes them all
        num, proposals, _, _ = efficient_nms(boxes, objectness.detach()[..., None], float("-inf"), self.nms_iou,
                                             counts.post_nms_top_n, counts.pre_nms_top_n)
        valid = torch.arange(counts.post_nms_top_n, device=num.device)[None] < num
        return proposals, valid, (objectness, deltas, anchors)

    def loss(self, raw: tuple[torch.Tensor, ...], gt_boxes: list[torch.Tensor],
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``rpn_objectness`` and ``rpn_box`` losses, averaged over the sampled anchors of the batch."""
        objectness, deltas, anchors = raw
        picked, labels, box_terms = [], [], []
        for i, boxes in enumerate(gt_boxes):
            matched = self.matcher(boxes, anchors)
            pos, neg = self.sampler(matched >= 0, matched == BACKGROUND, generator)
            picked.append(torch.cat([pos, neg]) + i * len(anchors))
            labels.append(torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]))
            target = self.coder.encode(boxes[matched[pos]], anchors[pos])
            box_terms.append(F.smooth_l1_loss(deltas[i, pos], target, beta=1 / 9, reduction="sum"))
        picked = torch.cat(picked)
        sampled = max(len(picked), 1)
        return {"rpn_objectness": F.binary_cross_entropy_with_logits(objectness.reshape(-1)[picked],
                                                                     torch.cat(labels).to(objectness)),
                "rpn_box": torch.stack(box_terms).sum() / sampled}
