"""YOLO (v1-style) single-shot detector: an S×S grid, B boxes per cell, C class scores per cell.

``YOLO`` takes ``[N, 3, H, W]`` float32 (normalised; H, W fixed at export, multiples of the
backbone stride ``s``; ``S = H / s``). Its head gives ``[N, S, S, 5B + C]`` logits: per cell,
B boxes of ``(x, y, w, h, confidence)`` then C class scores. Decoded (:meth:`YOLO.decode`):

* ``x, y``: the box centre inside its cell, ``sigmoid`` -> [0, 1) of the cell;
* ``w, h``: ``sigmoid`` -> the square root of the box size as a fraction of the image
  (YOLOv1 regresses square roots so that errors on small boxes weigh more);
* confidence: ``sigmoid`` -> Pr(object) · IoU; classes: ``softmax`` -> Pr(class | object).

A candidate's class scores are confidence × class probability, ``[N, S·S·B, C]``, with its box
``(x1, y1, x2, y2)`` in input pixels, ``[N, S·S·B, 4]``. With ``nms_in_graph`` the model ends in
``visionrt.train.ops.efficient_nms`` and returns the fixed-size detections (``num_detections
[N, 1]``, ``boxes [N, K, 4]``, ``scores [N, K]``, ``classes [N, K]``); without it, it returns
the candidates ``(boxes, scores)`` and NMS runs in the runtime (the NumPy reference of the same
op), so an engine builds on TensorRT-RTX, which takes no plugins.

The loss is YOLOv1's (:meth:`YOLO.loss`), summed over the grid and averaged over the images:

    λ_coord Σ 1obj [(x - x̂)² + (y - ŷ)² + (√w - √ŵ)² + (√h - √ĥ)²]
    + Σ 1obj (C - IoU)² + λ_noobj Σ 1noobj C² + Σ_cells 1obj Σ_c (p(c) - p̂(c))²

An object belongs to the cell holding its centre, and there to the one of the B predictors
whose box overlaps it most ("responsible"); its confidence target is that IoU. A cell holds
one class: when several objects share a cell, the last one's class is its target (as v1).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from ..ops import efficient_nms
from .classify import conv_bn_relu
from .detection.backbone import Backbone
from .detection.boxes import clip, iou
from .detection.roi_heads import NmsSettings


@dataclasses.dataclass
class YOLOConfig:
    """widths, blocks: the backbone (stride ``2 ** len(widths)``: 8, so S = 12 on 96×96 images; a
    coarser 6×6 grid trained markedly slower here); boxes: B per cell; head: the
    3×3 conv's width before the 1×1 output conv; nms_in_graph: end in NMS (see the module doc);
    lambda_coord, lambda_noobj: YOLOv1's loss weights."""

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 1
    boxes: int = 2
    head: int = 128
    nms_in_graph: bool = True
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5


class YOLO(nn.Module):
    def __init__(self, num_classes: int, config: YOLOConfig = YOLOConfig(), nms: NmsSettings = NmsSettings()):
        super().__init__()
        self.config, self.nms, self.num_classes = config, nms, num_classes
        self.backbone = Backbone(config.widths, config.blocks)
        self.head = nn.Sequential(conv_bn_relu(self.backbone.out_channels, config.head, 3),
                                  nn.Conv2d(config.head, 5 * config.boxes + num_classes, 1))
        # most predictors see no object: start their confidence near 0 (sigmoid(-4) = 0.02), not 0.5,
        # so the no-object term does not swamp the first steps
        nn.init.constant_(self.head[-1].bias[4:5 * config.boxes:5], -4.0)

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W] -> [N, S, S, 5B + C]`` logits."""
        return self.head(self.backbone(images)).permute(0, 2, 3, 1)

    def decode(self, grid: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
        """Logits -> per predictor ``boxes [N, S, S, B, 4]`` (corners in input pixels, clipped to the
        image) and ``predictors [N, S, S, B, 5]`` (x, y in the cell, √w, √h of the image, confidence:
        all in [0, 1]), per cell ``class_probs [N, S, S, C]``."""
        n, rows, cols, _ = grid.shape
        b = self.config.boxes
        predictors = torch.sigmoid(grid[..., :5 * b].reshape(n, rows, cols, b, 5))
        i = torch.arange(rows, device=grid.device, dtype=grid.dtype).reshape(1, rows, 1, 1)
        j = torch.arange(cols, device=grid.device, dtype=grid.dtype).reshape(1, 1, cols, 1)
        cx = (j + predictors[..., 0]) * (width / cols)
        cy = (i + predictors[..., 1]) * (height / rows)
        half_w, half_h = 0.5 * predictors[..., 2] ** 2 * width, 0.5 * predictors[..., 3] ** 2 * height
        boxes = clip(torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1), height, width)
        return boxes, predictors, F.softmax(grid[..., 5 * b:], dim=-1)

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None,
                generator: torch.Generator | None = None):
        """Detections (or candidates) as the module doc says; with ``targets``, the losses of
        :meth:`loss` (``generator`` is unused: the signature is the two-stage detectors')."""
        if targets is not None:
            return self.loss(images, targets)
        n, _, height, width = images.shape
        boxes, predictors, class_probs = self.decode(self.grid(images), height, width)
        scores = predictors[..., 4:] * class_probs[:, :, :, None, :]          # [N, S, S, B, C]
        boxes, scores = boxes.reshape(n, -1, 4), scores.reshape(n, -1, self.num_classes)
        if not self.config.nms_in_graph:
            return boxes, scores
        s = self.nms
        return efficient_nms(boxes, scores, s.score_threshold, s.iou_threshold, s.max_detections, s.pre_nms_top_k)

    def loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """YOLOv1's four terms (``coord``, ``obj``, ``noobj``, ``class``) for ``targets`` (per image:
        ``boxes [G, 4]`` in input pixels, ``labels [G]``), each summed over the grid, per image."""
        c = self.config
        n, _, height, width = images.shape
        grid = self.grid(images)
        rows, cols = grid.shape[1:3]
        boxes, predictors, class_probs = self.decode(grid, height, width)
        confidence = predictors[..., 4]
        image = torch.cat([torch.full((len(t["boxes"]),), k, dtype=torch.int64) for k, t in enumerate(targets)])
        gt = torch.cat([t["boxes"] for t in targets])
        labels = torch.cat([t["labels"] for t in targets])
        centre = 0.5 * (gt[:, :2] + gt[:, 2:]) * torch.tensor([cols / width, rows / height])   # in cells
        col, row = centre[:, 0].long().clamp(0, cols - 1), centre[:, 1].long().clamp(0, rows - 1)
        cell = (image, row, col)
        overlap = iou(boxes[cell].detach(), gt[:, None])                                      # [G, B]
        best = overlap.argmax(dim=1)
        responsible = torch.zeros_like(confidence, dtype=torch.bool)
        responsible[(*cell, best)] = True
        target = torch.cat([centre - torch.stack([col, row], dim=1),
                            ((gt[:, 2:] - gt[:, :2]) / torch.tensor([width, height])).sqrt()], dim=1)
        coord = F.mse_loss(predictors[(*cell, best)][:, :4], target, reduction="sum")
        obj = F.mse_loss(confidence[(*cell, best)], overlap.gather(1, best[:, None])[:, 0], reduction="sum")
        noobj = confidence[~responsible].square().sum()
        has_object = torch.zeros(class_probs.shape[:3], dtype=torch.bool, device=grid.device)
        has_object[cell] = True
        class_target = torch.zeros_like(class_probs)
        class_target[cell] = F.one_hot(labels, self.num_classes).to(class_probs)
        classes = (class_probs[has_object] - class_target[has_object]).square().sum()
        return {"coord": c.lambda_coord * coord / n, "obj": obj / n, "noobj": c.lambda_noobj * noobj / n,
                "class": classes / n}
