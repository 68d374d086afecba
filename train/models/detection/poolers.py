"""Fixed-size features of boxes on the shared feature map: RoI max pooling or RoIAlign.

Both take ``features [N, C, h, w]`` (stride ``s`` relative to the image), boxes ``[R, 4]``
``(x1, y1, x2, y2)`` in image pixels and ``batch_index [R]`` (int64), and return
``[R, C, size, size]``. They are visionrt's ops, exported as ONNX MaxRoiPool / RoiAlign.
"""
from __future__ import annotations

import torch
from torch import nn

from ...ops import roi_align, roi_pool


class RoIPool(nn.Module):
    """Fast R-CNN's RoI max pooling (corners rounded to feature cells)."""

    def __init__(self, size: int, stride: int):
        super().__init__()
        self.size, self.stride = size, stride

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)
        return roi_pool(features, rois, self.size, self.size, 1.0 / self.stride)


class RoIAlign(nn.Module):
    """Mask R-CNN's RoIAlign: bilinear samples at exact positions (pixel centres at ``i + 0.5``),
    averaged per bin, ``sampling_ratio²`` samples per bin. One sample per bin (the default) suffices
    where bins are at most a feature cell wide, as for these small objects, and costs a quarter of 2×2."""

    def __init__(self, size: int, stride: int, sampling_ratio: int = 1):
        super().__init__()
        self.size, self.stride, self.sampling_ratio = size, stride, sampling_ratio

    def forward(self, features: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        return roi_align(features, boxes, batch_index, self.size, self.size, self.sampling_ratio, 1.0 / self.stride,
                         "avg", "half_pixel")


def make_pooler(kind: str, size: int, stride: int) -> nn.Module:
    """``"max"`` -> :class:`RoIPool`, ``"align"`` -> :class:`RoIAlign`."""
    if kind == "max":
        return RoIPool(size, stride)
    if kind == "align":
        return RoIAlign(size, stride)
    raise ValueError(f"unknown RoI pooler '{kind}' (choose 'max' or 'align')")
