"""Human pose by direct regression of joint coordinates (DeepPose, Toshev & Szegedy 2014).

``PoseRegressor`` takes ``[N, 3, H, W]`` float32 (normalised) and returns ``keypoints
[N, J, 2]``: each joint's ``(x, y)`` divided by the input width and height (0 = left/top
edge, 1 = right/bottom edge), so the same numbers hold for the image at any size.

Two heads on the ResNet backbone of :mod:`~visionrt.train.models.classify`, both trained
with an L2 loss on the normalised coordinates:

* ``deeppose`` (default): as DeepPose, fully connected layers regress all coordinates from
  the feature map (the layout-keeping
  :class:`~visionrt.train.models.localize.RegressionHead`);
* ``integral``: a soft-argmax over one heatmap per joint (integral regression, Sun et al.
  2018): the coordinates are expectations, so sub-cell positions come easily.

DeepPose's cascade of refinement stages on crops around each joint is left out: one stage
reaches the quick target.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn import functional as F

from .classify import ResNet
from .localize import RegressionHead


class SoftArgmaxHead(nn.Module):
    """``[N, C, h, w] -> [N, J, 2]`` by integral regression (Sun et al. 2018): a transposed conv
    doubles the resolution, a 1×1 conv gives one heatmap per joint, a softmax over its positions
    makes it a distribution, and the joint is its expected position, normalised to [0, 1]
    (cell centres at ``(i + 0.5) / size``). Still a coordinate regression, trained on the same
    loss; the heatmaps only make sub-pixel positions easy to express."""

    def __init__(self, channels: int, joints: int, hidden: int = 64):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(channels, hidden, 4, 2, 1, bias=False),
                                nn.BatchNorm2d(hidden), nn.ReLU(inplace=True))
        self.heatmaps = nn.Conv2d(hidden, joints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.heatmaps(self.up(x))
        n, j, h, w = logits.shape
        p = logits.flatten(2).softmax(-1).view(n, j, h, w)
        xs = (torch.arange(w, dtype=p.dtype, device=p.device) + 0.5) / w
        ys = (torch.arange(h, dtype=p.dtype, device=p.device) + 0.5) / h
        return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


#: The heads, by architecture name: DeepPose's fully connected regression, or integral regression.
HEADS = ("deeppose", "integral")


@dataclasses.dataclass
class PoseConfig:
    """Architecture and loss of :class:`PoseRegressor` (settable through ``TrainConfig.model_kwargs``).

    head: ``"deeppose"`` (:class:`~visionrt.train.models.localize.RegressionHead`: pooled
        ``grid × grid`` layout of ``reduce`` channels, fully connected layers of ``hidden``
        units) or ``"integral"`` (:class:`SoftArgmaxHead` with ``heatmap_channels`` channels).
    widths, blocks: the ResNet backbone (channels per stage, basic blocks per stage).
    loss: ``"l2"`` (DeepPose) or ``"smooth_l1"`` (Huber with ``beta``, in normalised units).
    """

    head: str = "deeppose"
    widths: tuple[int, ...] = (16, 32, 64)
    blocks: int = 2
    grid: int = 8
    reduce: int = 32
    hidden: int = 256
    heatmap_channels: int = 32
    loss: str = "l2"
    beta: float = 0.02

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.loss not in ("l2", "smooth_l1"):
            raise ValueError(f"loss must be 'l2' or 'smooth_l1', got {self.loss!r}")


class PoseRegressor(nn.Module):
    """ResNet backbone + coordinate head; ``forward`` returns normalised ``[N, J, 2]``."""

    def __init__(self, num_joints: int, config: PoseConfig = PoseConfig()):
        super().__init__()
        self.config = config
        self.num_joints = num_joints
        resnet = ResNet(1, tuple(config.widths), config.blocks)
        self.backbone = nn.Sequential(resnet.stem, resnet.features)
        channels = config.widths[-1]
        if config.head == "deeppose":
            self.head = RegressionHead(channels, 2 * num_joints, config.reduce, config.grid, config.hidden)
            nn.init.constant_(self.head[-1].bias, 0.5)   # start every joint at the image centre
        else:
            self.head = SoftArgmaxHead(channels, num_joints, config.heatmap_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).view(-1, self.num_joints, 2)

    def loss(self, predicted: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        """Squared (or Huber) distance per labelled joint (``labelled`` bool ``[N, J]``), summed over
        joints and averaged over the batch; ``predicted``/``target`` normalised ``[N, J, 2]``."""
        if self.config.loss == "l2":
            per_joint = F.mse_loss(predicted, target, reduction="none").sum(-1)
        else:
            per_joint = F.smooth_l1_loss(predicted, target, beta=self.config.beta, reduction="none").sum(-1)
        return (per_joint * labelled).sum(1).mean()


def build_pose_regressor(kwargs: dict, num_joints: int) -> PoseRegressor:
    """The regressor a manifest's ``model.kwargs`` describe (unknown keys are an error)."""
    return PoseRegressor(num_joints, PoseConfig(**kwargs))
