"""Box coding: boxes as offsets ``(dx, dy, dw, dh)`` from reference boxes (anchors, proposals).

``dx = wx * (x - xa) / wa``, ``dy = wy * (y - ya) / ha``, ``dw = ww * log(w / wa)``,
``dh = wh * log(h / ha)`` for centres ``x, y`` and sizes ``w, h`` (R-CNN's parametrisation);
``weights = (wx, wy, ww, wh)`` scale the targets to similar magnitudes.
"""
from __future__ import annotations

import math

import torch

#: Largest ``dw``/``dh`` decoded (a box at most 1000/16 times its reference), as torchvision.
MAX_LOG_SCALE = math.log(1000.0 / 16)


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


class BoxCoder:
    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)):
        self.weights = weights

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``boxes [..., 4]`` relative to ``reference [..., 4]`` -> deltas ``[..., 4]``."""
        wx, wy, ww, wh = self.weights
        x, y, w, h = _centre_size(boxes)
        xa, ya, wa, ha = _centre_size(reference)
        wa, ha = wa.clamp(min=1e-3), ha.clamp(min=1e-3)
        return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha,
                            ww * torch.log(w.clamp(min=1e-3) / wa), wh * torch.log(h.clamp(min=1e-3) / ha)], dim=-1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """``deltas [..., 4]`` applied to ``reference [..., 4]`` (broadcast) -> boxes ``[..., 4]``."""
        wx, wy, ww, wh = self.weights
        xa, ya, wa, ha = _centre_size(reference)
        x = deltas[..., 0] / wx * wa + xa
        y = deltas[..., 1] / wy * ha + ya
        w = torch.exp((deltas[..., 2] / ww).clamp(max=MAX_LOG_SCALE)) * wa
        h = torch.exp((deltas[..., 3] / wh).clamp(max=MAX_LOG_SCALE)) * ha
        return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)
