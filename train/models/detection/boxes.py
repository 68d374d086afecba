"""Box arithmetic on ``[..., 4]`` tensors of corners ``(x1, y1, x2, y2)`` in pixels (edges)."""
from __future__ import annotations

import torch


def area(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4] -> [...]``; 0 for empty or reversed boxes."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box of ``a [N, 4]`` with every box of ``b [M, 4]`` -> ``[N, M]`` (0 where the union is empty)."""
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / union.clamp(min=1e-9)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching boxes: ``a [..., 4]``, ``b [..., 4]`` (broadcast) -> ``[...]``."""
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=-1)
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def clip(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes clipped to the image ``[0, width] × [0, height]``."""
    x = boxes[..., 0::2].clamp(0, width)
    y = boxes[..., 1::2].clamp(0, height)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)
