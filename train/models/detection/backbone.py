"""The shared feature extractor: a small ResNet (classification's basic blocks) without a head,
optionally with a top-down pathway that gives a finer map (a one-level feature pyramid)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..classify import BasicBlock, conv_bn_relu


class Backbone(nn.Module):
    """``[N, 3, H, W] -> [N, out_channels, H / stride, W / stride]``.

    A 3×3 stride-2 stem of ``widths[0]`` channels, then per further width a stage of ``blocks``
    basic blocks, the first halving the size: ``stride = 2 ** len(widths)``. Unlike the
    classifier's ResNet, no stage runs at the stem's full resolution: on a CPU, convolutions and
    batch norm there cost most.

    With ``top_down`` channels, FPN's top-down pathway for one level: the last stage (1×1 conv,
    upsampled ×2, nearest) plus the stage before it (1×1 conv), then a 3×3 conv; the map has half
    the stride and sees both the deep stage's context and the finer stage's positions.
    """

    def __init__(self, widths: tuple[int, ...], blocks: int, top_down: int = 0):
        super().__init__()
        self.stem = conv_bn_relu(3, widths[0], 3, stride=2)
        stages, cin = [], widths[0]
        for width in widths[1:]:
            stages.append(nn.Sequential(*(BasicBlock(cin if j == 0 else width, width, stride=2 if j == 0 else 1)
                                          for j in range(blocks))))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.top_down = top_down
        if top_down:
            self.lateral = nn.Conv2d(widths[-2], top_down, 1)
            self.reduce = nn.Conv2d(widths[-1], top_down, 1)
            self.smooth = conv_bn_relu(top_down, top_down, 3)
        self.out_channels = top_down or cin
        self.stride = 2 ** (len(widths) - (1 if top_down else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        finer = x
        for stage in self.stages:
            finer, x = x, stage(x)
        if not self.top_down:
            return x
        return self.smooth(self.lateral(finer) + F.interpolate(self.reduce(x), scale_factor=2.0, mode="nearest"))
