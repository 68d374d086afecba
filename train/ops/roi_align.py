"""``visionrt::roi_align``: RoIAlign (ONNX RoiAlign-16) with backward; exports to RoiAlign.

The samples, weights and order of arithmetic are onnxruntime's (see the NumPy reference),
so the forward agrees with it to the last bit in float32 and float64; ``max`` is
onnxruntime's weighted max. The gradient of ``avg`` spreads each bin over its samples'
neighbours by their bilinear weights / count; of ``max`` it goes to the first weighted
neighbour that attains the maximum.
"""
from __future__ import annotations

import torch
from onnxscript import opset18 as op

from ...runtime.errors import InputError

MODES = ("avg", "max")
COORDINATE_MODES = ("half_pixel", "output_half_pixel")
#: Elements of the dense bin-to-cell weights built at once in the backward of ``avg`` (bounds memory).
_CHUNK_ELEMENTS = 1 << 24


@torch.library.custom_op("visionrt::roi_align", mutates_args=())
def roi_align(x: torch.Tensor, rois: torch.Tensor, batch_indices: torch.Tensor, output_height: int = 1,
              output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0, mode: str = "avg",
              coordinate_transformation_mode: str = "half_pixel") -> torch.Tensor:
    """``x [N, C, H, W]``, ``rois [R, 4]`` (x1, y1, x2, y2), ``batch_indices [R]`` -> ``[R, C, oh, ow]``."""
    planes, batch = _planes(x, rois, batch_indices, mode, coordinate_transformation_mode)
    maximum = mode == "max"
    out = planes.new_zeros(len(rois), output_height, output_width, x.shape[1])
    seen = torch.zeros(out.shape[:3] + (1,), dtype=torch.bool, device=x.device)
    count = None
    for positions, weights, active, count in _samples(rois.to(planes.dtype), output_height, output_width,
                                                      sampling_ratio, spatial_scale, coordinate_transformation_mode,
                                                      *x.shape[2:]):
        weighted = [w[..., None] * planes[batch[:, None, None], :, p] for w, p in zip(weights, positions)]
        active = active[..., None]
        if maximum:
            value = torch.maximum(torch.maximum(torch.maximum(weighted[0], weighted[1]), weighted[2]), weighted[3])
            out = torch.where(active, torch.where(seen, torch.maximum(out, value), value), out)
            seen = seen | active
        else:
            out = torch.where(active, out + (weighted[0] + weighted[1] + weighted[2] + weighted[3]), out)
    if not maximum and count is not None:
        out = out / count[:, None, None, None]
    return out.permute(0, 3, 1, 2).to(x.dtype).contiguous()


@roi_align.register_fake
def _(x, rois, batch_indices, output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0, mode="avg",
      coordinate_transformation_mode="half_pixel"):
    return x.new_empty(rois.shape[0], x.shape[1], output_height, output_width)


def _backward(ctx, grad):
    x, rois, batch_indices = ctx.saved_tensors
    output_height, output_width, sampling_ratio, spatial_scale, mode, coordinates = ctx.pooling
    planes, batch = _planes(x, rois, batch_indices, mode, coordinates)
    n, c, height, width = x.shape
    grad = grad.permute(0, 2, 3, 1).to(planes.dtype)  # [R, oh, ow, C]
    if mode == "avg":
        grad_x = _avg_backward(grad, planes, rois, batch, ctx.pooling, x.shape)
        return grad_x.to(x.dtype), None, None, None, None, None, None, None, None
    plane_start = ((batch * c)[:, None] + torch.arange(c, device=x.device)) * (height * width)  # [R, C]
    grad_x = planes.new_zeros(n * c * height * width)
    # max: the first weighted neighbour (sample by sample, in onnxruntime's order) that attains the maximum
    best, best_weight = torch.full_like(grad, float("-inf")), torch.zeros_like(grad)
    best_index = torch.zeros(grad.shape, dtype=torch.int64, device=x.device)
    seen = torch.zeros(grad.shape[:3] + (1,), dtype=torch.bool, device=x.device)
    for positions, weights, active, count in _samples(rois.to(planes.dtype), output_height, output_width,
                                                      sampling_ratio, spatial_scale, coordinates, height, width):
        active = active[..., None]
        for w, p in zip(weights, positions):
            index = p[..., None] + plane_start[:, None, None, :]  # [R, oh, ow, C]
            value = w[..., None] * planes[batch[:, None, None], :, p]
            better = active & (~seen | (value > best))
            best = torch.where(better, value, best)
            best_index = torch.where(better, index, best_index)
            best_weight = torch.where(better, w[..., None], best_weight)
            seen = seen | active
    grad_x.index_add_(0, best_index.reshape(-1), (grad * best_weight * seen).reshape(-1))
    return grad_x.reshape(x.shape).to(x.dtype), None, None, None, None, None, None, None, None


def _avg_backward(grad, planes, rois, batch, pooling, shape) -> torch.Tensor:
    """``avg``: each bin's gradient ``grad [R, oh, ow, C]`` spread over its samples' neighbours by their
    bilinear weights / count. Per chunk of RoIs the weights form a dense ``[r, oh*ow, H*W]`` matrix,
    so the spreading is one batched matrix product (instead of a scatter of every element)."""
    output_height, output_width, sampling_ratio, spatial_scale, _, coordinates = pooling
    n, c, height, width = shape
    bins = output_height * output_width
    grad_x = planes.new_zeros(n, c * height * width)
    step = max(1, _CHUNK_ELEMENTS // (bins * height * width))
    for first in range(0, len(rois), step):
        part = slice(first, first + step)
        r = len(rois[part])
        dense = planes.new_zeros(r, bins, height * width)
        for positions, weights, active, count in _samples(rois[part].to(planes.dtype), output_height, output_width,
                                                          sampling_ratio, spatial_scale, coordinates, height, width):
            share = active.to(planes.dtype) / count[:, None, None]
            for w, p in zip(weights, positions):
                dense.scatter_add_(2, p.reshape(r, bins, 1), (w * share).reshape(r, bins, 1))
        spread = torch.bmm(grad[part].reshape(r, bins, c).transpose(1, 2), dense)  # [r, C, H*W]
        grad_x.index_add_(0, batch[part], spread.reshape(r, -1))
    return grad_x.reshape(shape)


def _setup_context(ctx, inputs, output):
    x, rois, batch_indices, *pooling = inputs
    ctx.save_for_backward(x, rois, batch_indices)
    ctx.pooling = tuple(pooling)


roi_align.register_autograd(_backward, setup_context=_setup_context)


def roi_align_onnx(x, rois, batch_indices, output_height: int = 1, output_width: int = 1, sampling_ratio: int = 0,
                   spatial_scale: float = 1.0, mode: str = "avg", coordinate_transformation_mode: str = "half_pixel"):
    """Portable ONNX: the standard RoiAlign (opset 16 attributes)."""
    return op.RoiAlign(x, rois, batch_indices, output_height=output_height, output_width=output_width,
                       sampling_ratio=sampling_ratio, spatial_scale=spatial_scale, mode=mode,
                       coordinate_transformation_mode=coordinate_transformation_mode)


def _planes(x, rois, batch_indices, mode, coordinates):
    """``x`` as ``[N, C, H*W]`` in the compute type (float16 -> float32) and the batch indices, checked."""
    if mode not in MODES or coordinates not in COORDINATE_MODES:
        raise InputError(f"roi_align: mode '{mode}' / coordinate_transformation_mode '{coordinates}' unknown",
                         fix=f"use mode in {MODES} and coordinate_transformation_mode in {COORDINATE_MODES}")
    batch = batch_indices.to(torch.int64).reshape(-1)
    if rois.ndim != 2 or rois.shape[1] != 4 or len(batch) != len(rois):
        raise InputError(f"roi_align: rois {tuple(rois.shape)} and batch_indices {tuple(batch.shape)} "
                         "must have shapes [R, 4] and [R]")
    if len(batch) and bool(((batch < 0) | (batch >= x.shape[0])).any()):
        raise InputError(f"roi_align: batch_indices must lie in [0, {x.shape[0]})")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.to(dtype).reshape(x.shape[0], x.shape[1], -1), batch


def _samples(rois, output_height, output_width, sampling_ratio, spatial_scale, coordinates, height, width):
    """Per grid point (y, then x): four neighbour cells ``[R, oh, ow]``, their weights, whether the
    point exists for each RoI ``[R, oh, ow]``, and the samples per bin ``[R]`` — as the reference."""
    t, device = rois.dtype, rois.device
    half_pixel = coordinates == "half_pixel"
    scale = torch.tensor(spatial_scale, dtype=torch.float32).to(t)
    start_w, start_h, end_w, end_h = (rois[:, i] * scale - (0.5 if half_pixel else 0.0) for i in range(4))
    size_w, size_h = end_w - start_w, end_h - start_h
    if not half_pixel:  # malformed RoIs become 1x1
        size_w, size_h = size_w.clamp(min=1), size_h.clamp(min=1)
    bin_h, bin_w = size_h / output_height, size_w / output_width
    grid_h, grid_w = (torch.full_like(b, sampling_ratio, dtype=torch.int64) if sampling_ratio > 0
                      else torch.ceil(b).to(torch.int64) for b in (bin_h, bin_w))
    count = (grid_h * grid_w).clamp(min=1).to(t)
    divisor_h, divisor_w = grid_h.clamp(min=1).to(t), grid_w.clamp(min=1).to(t)
    ph = torch.arange(output_height, dtype=t, device=device)[None, :]
    pw = torch.arange(output_width, dtype=t, device=device)[None, :]
    for iy in range(int(grid_h.max()) if len(rois) else 0):
        y = (start_h[:, None] + ph * bin_h[:, None]) + (iy + 0.5) * bin_h[:, None] / divisor_h[:, None]
        for ix in range(int(grid_w.max())):
            x = (start_w[:, None] + pw * bin_w[:, None]) + (ix + 0.5) * bin_w[:, None] / divisor_w[:, None]
            active = ((iy < grid_h) & (ix < grid_w))[:, None, None].expand(len(rois), output_height, output_width)
            positions, weights = _bilinear(y[:, :, None], x[:, None, :], height, width)
            yield positions, weights, active, count


def _bilinear(y, x, height, width):
    """Four neighbour cells and weights of points ``(y, x)``; zero weights more than a cell outside."""
    y, x = torch.broadcast_tensors(y, x)
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.to(torch.int64), x.to(torch.int64)
    y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
    y_low, x_low = torch.where(y_edge, height - 1, y_low), torch.where(x_edge, width - 1, x_low)
    y_high, x_high = torch.where(y_edge, y_low, y_low + 1), torch.where(x_edge, x_low, x_low + 1)
    y, x = torch.where(y_edge, y_low.to(y.dtype), y), torch.where(x_edge, x_low.to(x.dtype), x)
    ly, lx = y - y_low.to(y.dtype), x - x_low.to(x.dtype)
    hy, hx = 1 - ly, 1 - lx
    weights = [w.masked_fill(outside, 0) for w in (hy * hx, hy * lx, ly * hx, ly * lx)]
    positions = [p.masked_fill(outside, 0) for p in (y_low * width + x_low, y_low * width + x_high,
                                                     y_high * width + x_low, y_high * width + x_high)]
    return positions, weights
