"""SSD's default boxes: on each of ``m`` feature maps, ``k`` boxes centred on every cell.

Map ``i`` (``f_h × f_w`` cells over an ``H × W`` input) has scale ``s_i`` (a fraction of the
input side). Per cell, centred at ``((j + 0.5) W / f_w, (r + 0.5) H / f_h)``, the boxes are, in order:

* aspect ratio 1 at scale ``s_i``: ``s_i W × s_i H``;
* the extra scale ``s'_i = sqrt(s_i s_{i+1})`` at aspect ratio 1 (``scales`` holds ``m + 1``
  values, so the last map has one too);
* for each ratio ``a`` of ``aspect_ratios`` (width / height), ``a`` and ``1 / a`` at scale
  ``s_i``: ``s_i sqrt(a) W × s_i / sqrt(a) H``.

``k = 2 + 2 * len(aspect_ratios)``; a map's boxes are ordered row, column, then the ``k`` boxes,
as its head's outputs are flattened (channels ``[k, …]`` per cell, :class:`~.ssd.SSD`).
"""
from __future__ import annotations

import math

import torch


def shapes(scales: tuple[float, ...], aspect_ratios: tuple[float, ...], level: int) -> list[tuple[float, float]]:
    """The ``k`` (width, height) of map ``level``'s boxes as fractions of the input's width, height."""
    s = scales[level]
    extra = math.sqrt(s * scales[level + 1])
    out = [(s, s), (extra, extra)]
    for a in aspect_ratios:
        out += [(s * math.sqrt(a), s / math.sqrt(a)), (s / math.sqrt(a), s * math.sqrt(a))]
    return out


def boxes_per_cell(aspect_ratios: tuple[float, ...]) -> int:
    return 2 + 2 * len(aspect_ratios)


def default_boxes(map_sizes: list[tuple[int, int]], height: int, width: int, scales: tuple[float, ...],
                  aspect_ratios: tuple[float, ...]) -> torch.Tensor:
    """``map_sizes`` ``[(f_h, f_w), …]`` of an ``height × width`` input -> ``[Σ f_h f_w k, 4]`` corners
    ``(x1, y1, x2, y2)`` in input pixels (not clipped: boxes of border cells may reach outside)."""
    if len(scales) != len(map_sizes) + 1:
        raise ValueError(f"{len(map_sizes)} feature maps take {len(map_sizes) + 1} scales, got {len(scales)}")
    levels = []
    for level, (rows, cols) in enumerate(map_sizes):
        size = torch.tensor(shapes(scales, aspect_ratios, level)) * torch.tensor([width, height])   # [k, 2]
        cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * (height / rows)
        cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * (width / cols)
        centre = torch.stack(torch.meshgrid(cx, cy, indexing="xy"), dim=-1).reshape(-1, 1, 2)   # [f_h f_w, 1, 2]
        levels.append(torch.cat([centre - size / 2, centre + size / 2], dim=-1).reshape(-1, 4))
    return torch.cat(levels)
