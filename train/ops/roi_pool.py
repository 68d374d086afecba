"""``visionrt::roi_pool``: RoI max pooling (ONNX MaxRoiPool) with backward; exports to MaxRoiPool.

Exactly the reference's (and onnxruntime's) arithmetic: corners rounded half away from zero,
bin edges in float32, empty bins 0. The gradient of a bin goes to its first maximum (row-major).
"""
from __future__ import annotations

import torch
from onnxscript import opset18 as op

from ...runtime.errors import InputError

#: Window elements gathered at once (bounds memory, not the result).
_CHUNK_ELEMENTS = 1 << 24


@torch.library.custom_op("visionrt::roi_pool", mutates_args=())
def roi_pool(x: torch.Tensor, rois: torch.Tensor, pooled_height: int, pooled_width: int,
             spatial_scale: float = 1.0) -> torch.Tensor:
    """``x [N, C, H, W]``, ``rois [R, 5]`` (batch_index, x1, y1, x2, y2) -> ``[R, C, pooled_height, pooled_width]``."""
    out = x.new_zeros(len(rois), x.shape[1], pooled_height, pooled_width)
    for part, values, _, _, empty in _windows(x, rois, pooled_height, pooled_width, spatial_scale):
        out[part] = values.amax(dim=3).masked_fill(empty, 0).permute(0, 3, 1, 2)
    return out


@roi_pool.register_fake
def _(x, rois, pooled_height, pooled_width, spatial_scale=1.0):
    return x.new_empty(rois.shape[0], x.shape[1], pooled_height, pooled_width)


def _backward(ctx, grad):
    x, rois = ctx.saved_tensors
    grad_x = torch.zeros_like(x).reshape(-1)
    for part, values, cells, plane_start, empty in _windows(x, rois, *ctx.pooling):
        first_max = values.max(dim=3, keepdim=True).indices  # [r, ph, pw, 1, C]; max's indices: the first, fast
        cell = torch.gather(cells[..., None].expand(values.shape), 3, first_max).squeeze(3)  # [r, ph, pw, C]
        index = cell + plane_start[:, None, None, :]
        grad_x.index_add_(0, index.reshape(-1), grad[part].permute(0, 2, 3, 1).masked_fill(empty, 0).reshape(-1))
    return grad_x.reshape(x.shape), None, None, None, None


def _setup_context(ctx, inputs, output):
    x, rois, pooled_height, pooled_width, spatial_scale = inputs
    ctx.save_for_backward(x, rois)
    ctx.pooling = (pooled_height, pooled_width, spatial_scale)


roi_pool.register_autograd(_backward, setup_context=_setup_context)


def roi_pool_onnx(x, rois, pooled_height: int, pooled_width: int, spatial_scale: float = 1.0):
    """Portable ONNX: the standard MaxRoiPool."""
    return op.MaxRoiPool(x, rois, pooled_shape=[pooled_height, pooled_width], spatial_scale=spatial_scale)


def _windows(x, rois, pooled_height, pooled_width, spatial_scale):
    """Per chunk of RoIs: ``(slice, values [r, ph, pw, S, C] (-inf outside the bin), their cells in the
    plane [r, ph, pw, S], the flat x index of each RoI's planes' start [r, C], empty [r, ph, pw, 1])``;
    ``S`` spans the largest bin, row-major."""
    n, c, height, width = x.shape
    if len(rois) == 0 or height == 0 or width == 0:
        return
    batch = rois[:, 0].to(torch.int64)
    if bool(((batch < 0) | (batch >= n)).any()):
        raise InputError(f"roi_pool: RoI batch indices must lie in [0, {n})")
    scale = torch.tensor(spatial_scale, dtype=torch.float32, device=x.device)
    corners = _round_half_away(rois[:, 1:].to(torch.float32) * scale)
    h_lo, h_hi = _bins(corners[:, 1], corners[:, 3], pooled_height, height)
    w_lo, w_hi = _bins(corners[:, 0], corners[:, 2], pooled_width, width)
    span_h, span_w = max(int((h_hi - h_lo).max()), 1), max(int((w_hi - w_lo).max()), 1)
    rows = h_lo[:, :, None] + torch.arange(span_h, device=x.device)  # [R, ph, span_h]
    cols = w_lo[:, :, None] + torch.arange(span_w, device=x.device)  # [R, pw, span_w]
    inside = ((rows < h_hi[:, :, None])[:, :, None, :, None] & (cols < w_hi[:, :, None])[:, None, :, None, :])
    cells = (rows.clamp(max=height - 1)[:, :, None, :, None] * width
             + cols.clamp(max=width - 1)[:, None, :, None, :]).flatten(3)  # [R, ph, pw, S]
    inside = inside.flatten(3)
    planes = x.reshape(n, c, height * width)
    plane_start = ((batch * c)[:, None] + torch.arange(c, device=x.device)) * (height * width)  # [R, C]
    step = max(1, _CHUNK_ELEMENTS // (c * pooled_height * pooled_width * span_h * span_w))
    for first in range(0, len(rois), step):
        part = slice(first, first + step)
        values = planes[batch[part, None, None, None], :, cells[part]]  # [r, ph, pw, S, C]
        values.masked_fill_(~inside[part, ..., None], float("-inf"))  # a fresh gather: in place
        yield part, values, cells[part], plane_start[part], ~inside[part].any(dim=3, keepdim=True)


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``round`` (halves away from zero), exact in float64; int64."""
    v = v.to(torch.float64)
    return (torch.sign(v) * torch.floor(v.abs() + 0.5)).to(torch.int64)


def _bins(start, end, pooled: int, size: int):
    """Cell ranges ``[lo, hi)`` of each bin along one axis, ``[R, pooled]``, float32 edges as onnxruntime."""
    length = (end - start + 1).clamp(min=1).to(torch.float32)
    bin_size = (length / pooled)[:, None]
    index = torch.arange(pooled, dtype=torch.float32, device=start.device)[None, :]
    lo = torch.floor(index * bin_size).to(torch.int64) + start[:, None]
    hi = torch.ceil((index + 1) * bin_size).to(torch.int64) + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)
