"""NumPy reference of ONNX RoiAlign (opset 16), as onnxruntime computes it (the oracle for the kernel).

Each RoI ``(x1, y1, x2, y2)`` is scaled by ``spatial_scale`` (and shifted by -0.5 under
``half_pixel``); under ``output_half_pixel`` its size is forced to at least 1x1. Each of the
``oh x ow`` bins is sampled on a ``gh x gw`` grid (``sampling_ratio``, or ``ceil(size / bins)``
when it is 0) by bilinear interpolation; a sample more than one cell outside the map counts
as 0. ``avg`` averages the samples. ``max`` is onnxruntime's (and the ONNX reference's)
definition, not a max of interpolated values: the maximum over samples of the largest of the
four *weighted* neighbours ``w_i * v_i``. Arithmetic follows onnxruntime's order in the input's
float type (float16 is computed in float32), so results agree to the last bit or nearly so.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np

from ...errors import InputError

MODES = ("avg", "max")
COORDINATE_MODES = ("half_pixel", "output_half_pixel")


def roi_align(x: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, output_height: int = 1,
              output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0,
              mode: str = "avg", coordinate_transformation_mode: str = "half_pixel") -> np.ndarray:
    """``x [N, C, H, W]``, ``rois [R, 4]`` (x1, y1, x2, y2), ``batch_indices [R]`` -> ``[R, C, oh, ow]``."""
    if mode not in MODES or coordinate_transformation_mode not in COORDINATE_MODES:
        raise InputError(f"RoiAlign: mode '{mode}' / coordinate_transformation_mode "
                         f"'{coordinate_transformation_mode}' unknown",
                         fix=f"use mode in {MODES} and coordinate_transformation_mode in {COORDINATE_MODES}")
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    n, c, height, width = x.shape
    batch = np.asarray(batch_indices).astype(np.int64).reshape(-1)
    rois = np.asarray(rois, dtype=dtype)
    if rois.ndim != 2 or rois.shape[1] != 4 or len(batch) != len(rois):
        raise InputError(f"RoiAlign: rois {rois.shape} and batch_indices {batch.shape} "
                         "must have shapes [R, 4] and [R]")
    if np.any((batch < 0) | (batch >= n)):
        raise InputError(f"RoiAlign: batch_indices must lie in [0, {n}), got {batch.min()}..{batch.max()}")
    maximum = mode == "max"
    planes = x.astype(dtype, copy=False).reshape(n, c, height * width)
    out = np.zeros((len(rois), output_height, output_width, c), dtype=dtype)
    seen = np.zeros((len(rois), output_height, output_width, 1), dtype=bool)
    count = None
    for sample in bilinear_samples(rois, output_height, output_width, sampling_ratio, spatial_scale,
                                   coordinate_transformation_mode == "half_pixel", height, width):
        weighted = [w[..., None] * planes[batch[:, None, None], :, p]
                    for w, p in zip(sample.weights, sample.positions)]
        active = sample.active[..., None]
        if maximum:
            value = np.maximum(np.maximum(np.maximum(weighted[0], weighted[1]), weighted[2]), weighted[3])
            out = np.where(active, np.where(seen, np.maximum(out, value), value), out)
            seen |= active
        else:
            value = weighted[0] + weighted[1] + weighted[2] + weighted[3]
            out = np.where(active, out + value, out)
        count = sample.count
    if not maximum and count is not None:
        out = out / count[:, None, None, None]
    return out.transpose(0, 3, 1, 2).astype(x.dtype, copy=False)


class Sample(NamedTuple):
    """One point of every bin's sampling grid: for each RoI and bin, four neighbours and weights.

    ``positions`` are 4 arrays ``[R, oh, ow]`` of flat ``h * W + w`` cells, ``weights`` the
    matching bilinear weights, ``active [R, oh, ow]`` whether this grid point exists for the RoI
    (grids differ in size between RoIs), ``count [R]`` the samples per bin (at least 1).
    """

    positions: list[np.ndarray]
    weights: list[np.ndarray]
    active: np.ndarray
    count: np.ndarray


def bilinear_samples(rois: np.ndarray, output_height: int, output_width: int, sampling_ratio: int,
                     spatial_scale: float, half_pixel: bool, height: int, width: int) -> Iterator[Sample]:
    """The bilinear samples of every bin, grid point by grid point in onnxruntime's order (y, then x)."""
    t = rois.dtype.type
    offset = t(0.5) if half_pixel else t(0)
    start_w, start_h, end_w, end_h = (rois[:, i] * t(np.float32(spatial_scale)) - offset for i in range(4))
    size_w, size_h = end_w - start_w, end_h - start_h
    if not half_pixel:  # malformed RoIs become 1x1
        size_w, size_h = np.maximum(size_w, t(1)), np.maximum(size_h, t(1))
    bin_h, bin_w = size_h / t(output_height), size_w / t(output_width)
    grid_h, grid_w = _grid(bin_h, sampling_ratio), _grid(bin_w, sampling_ratio)
    count = np.maximum(grid_h * grid_w, 1).astype(rois.dtype)
    ph = np.arange(output_height, dtype=rois.dtype)[None, :]
    pw = np.arange(output_width, dtype=rois.dtype)[None, :]
    divisor_h, divisor_w = (np.maximum(g, 1).astype(t) for g in (grid_h, grid_w))  # RoIs without samples: any
    for iy in range(int(grid_h.max(initial=0))):
        # (start + p * bin) + (i + .5) * bin / grid, as onnxruntime evaluates it
        y = (start_h[:, None] + ph * bin_h[:, None]) + t(iy + 0.5) * bin_h[:, None] / divisor_h[:, None]
        for ix in range(int(grid_w.max(initial=0))):
            xs = (start_w[:, None] + pw * bin_w[:, None]) + t(ix + 0.5) * bin_w[:, None] / divisor_w[:, None]
            active = np.broadcast_to(((iy < grid_h) & (ix < grid_w))[:, None, None],
                                     (len(rois), output_height, output_width))
            positions, weights = _bilinear(y[:, :, None], xs[:, None, :], height, width)
            yield Sample(positions, weights, active, count)


def _grid(bin_size: np.ndarray, sampling_ratio: int) -> np.ndarray:
    """Grid points per bin along one axis, ``[R]`` int64 (0 or less means no samples)."""
    if sampling_ratio > 0:
        return np.full(bin_size.shape, sampling_ratio, dtype=np.int64)
    return np.ceil(bin_size).astype(np.int64)


def _bilinear(y: np.ndarray, x: np.ndarray, height: int, width: int):
    """Four neighbour cells and weights of points ``(y, x)``; all-zero weights more than a cell outside."""
    t = y.dtype.type
    y, x = np.broadcast_arrays(y, x)
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y, x = np.maximum(y, t(0)), np.maximum(x, t(0))
    y_low, x_low = y.astype(np.int64), x.astype(np.int64)
    y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
    y_low, x_low = np.where(y_edge, height - 1, y_low), np.where(x_edge, width - 1, x_low)
    y_high, x_high = np.where(y_edge, y_low, y_low + 1), np.where(x_edge, x_low, x_low + 1)
    y, x = np.where(y_edge, y_low.astype(t), y), np.where(x_edge, x_low.astype(t), x)
    ly, lx = y - y_low.astype(t), x - x_low.astype(t)
    hy, hx = t(1) - ly, t(1) - lx
    weights = [np.where(outside, t(0), w) for w in (hy * hx, hy * lx, ly * hx, ly * lx)]
    positions = [np.where(outside, 0, p) for p in (y_low * width + x_low, y_low * width + x_high,
                                                  y_high * width + x_low, y_high * width + x_high)]
    return positions, weights
