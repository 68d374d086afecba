"""Anchor boxes: ``k = len(sizes) * len(aspect_ratios)`` per feature-map position.

An anchor of size ``s`` and aspect ratio ``r`` (height / width) has area ``s²``: width
``s / sqrt(r)``, height ``s * sqrt(r)``, centred on its feature cell's centre
``((j + 0.5) * stride, (i + 0.5) * stride)``. Order: row ``i``, column ``j``, then the ``k``
anchors (sizes outer, ratios inner), as the RPN head's outputs are flattened.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class AnchorGenerator(nn.Module):
    """``anchors(height, width) -> [height * width * k, 4]`` for a feature map of that size."""

    def __init__(self, sizes: tuple[float, ...], aspect_ratios: tuple[float, ...], stride: int):
        super().__init__()
        self.stride = stride
        shapes = [(s / math.sqrt(r), s * math.sqrt(r)) for s in sizes for r in aspect_ratios]
        half = torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for w, h in shapes])
        self.register_buffer("cell_anchors", half, persistent=False)   # [k, 4], centred on 0

    @property
    def num_anchors(self) -> int:
        return len(self.cell_anchors)

    def forward(self, height: int, width: int) -> torch.Tensor:
        device = self.cell_anchors.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * self.stride
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * self.stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)        # [h*w, 1, 4]
        return (centres + self.cell_anchors).reshape(-1, 4)
