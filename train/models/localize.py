"""Classification + localisation of one object: a shared ResNet backbone and two heads.

``Localizer`` takes ``[N, 3, H, W]`` float32 (normalised; H and W multiples of 32, e.g.
64×64) and returns

* ``logits [N, num_classes]``: class scores (softmax cross-entropy);
* ``boxes [N, 4]``: the object's box as ``(x1, y1, x2, y2)`` normalised by the image width
  and height, each in [0, 1] (a sigmoid), so the same numbers hold for the image at any size.

The backbone is the stem and residual stages of :class:`~visionrt.train.models.classify.ResNet`;
the class head is its global-average-pool + linear head. Global pooling forgets *where*
things are, so the box head (:class:`RegressionHead`) keeps the layout: a 1×1 conv narrows
the channels, an average pool brings the map to a ``grid × grid`` layout, and two linear
layers regress the box from the flattened grid (the "regression head" of the course notes,
as in OverFeat).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from .classify import ResNet, conv_bn_relu


class RegressionHead(nn.Sequential):
    """``[N, C, h, w] -> [N, outputs]``: 1×1 conv to ``reduce`` channels, ``grid × grid`` average
    pool (keeps the layout that global pooling would lose), flatten, linear-ReLU-linear."""

    def __init__(self, channels: int, outputs: int, reduce: int = 32, grid: int = 4, hidden: int = 256):
        super().__init__(
            conv_bn_relu(channels, reduce, 1),
            nn.AdaptiveAvgPool2d(grid),
            nn.Flatten(),
            nn.Linear(reduce * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, outputs),
        )


@dataclasses.dataclass
class LocalizerConfig:
    """Architecture and loss of :class:`Localizer` (all can be set through ``TrainConfig.model_kwargs``).

    widths, blocks: the ResNet backbone (channels per stage, basic blocks per stage).
    box_grid, box_hidden: the box head's pooled layout (``grid × grid``) and hidden width.
    box_loss: ``"smooth_l1"`` (Huber with ``box_beta``, in normalised units) or ``"l2"``.
    class_weight, box_weight: the total loss is ``class_weight * CE + box_weight * box loss``.
    """

    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 2
    box_grid: int = 4
    box_hidden: int = 256
    box_loss: str = "smooth_l1"
    box_beta: float = 0.02
    class_weight: float = 1.0
    box_weight: float = 5.0

    def __post_init__(self):
        if self.box_loss not in ("smooth_l1", "l2"):
            raise ValueError(f"box_loss must be 'smooth_l1' or 'l2', got {self.box_loss!r}")


class Localizer(nn.Module):
    """Shared backbone, class head and box head; ``forward`` returns ``(logits, boxes)``."""

    def __init__(self, num_classes: int, config: LocalizerConfig = LocalizerConfig()):
        super().__init__()
        self.config = config
        resnet = ResNet(num_classes, tuple(config.widths), config.blocks)
        self.backbone = nn.Sequential(resnet.stem, resnet.features)
        self.class_head = resnet.head
        self.box_head = RegressionHead(config.widths[-1], 4, grid=config.box_grid, hidden=config.box_hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.class_head(features), torch.sigmoid(self.box_head(features))

    def loss(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
             target_boxes: torch.Tensor) -> torch.Tensor:
        """Weighted sum of cross-entropy (``labels [N]``) and the box loss (``target_boxes [N, 4]``,
        normalised x1, y1, x2, y2), each averaged over the batch."""
        c = self.config
        if c.box_loss == "l2":
            box = F.mse_loss(boxes, target_boxes, reduction="none").sum(1).mean()
        else:
            box = F.smooth_l1_loss(boxes, target_boxes, beta=c.box_beta, reduction="none").sum(1).mean()
        return c.class_weight * F.cross_entropy(logits, labels) + c.box_weight * box


def build_localizer(kwargs: dict, num_classes: int) -> Localizer:
    """The localizer a manifest's ``model.kwargs`` describe (unknown keys are an error)."""
    return Localizer(num_classes, LocalizerConfig(**kwargs))
