"""NumPy reference of ONNX MaxRoiPool, as onnxruntime computes it (the oracle for the kernel).

A RoI ``(batch, x1, y1, x2, y2)`` is scaled by ``spatial_scale`` and rounded (half away from
zero) to whole feature-map cells; its size is forced to at least 1x1; bin ``i`` of ``P`` along
an axis covers cells ``[floor(i * s), ceil((i + 1) * s))`` from the RoI start, ``s = size / P``
computed in float32, clipped to the map. The output is the maximum over the bin, 0 for an
empty bin.
"""
from __future__ import annotations

import numpy as np

from ...errors import InputError

#: Output elements gathered at once (bounds the reference's memory, not its result).
_CHUNK_ELEMENTS = 1 << 24


def max_roi_pool(x: np.ndarray, rois: np.ndarray, pooled_shape: tuple[int, int],
                 spatial_scale: float = 1.0) -> np.ndarray:
    """``x [N, C, H, W]``, ``rois [R, 5]`` as (batch_index, x1, y1, x2, y2) -> ``[R, C, ph, pw]``."""
    x = np.asarray(x)
    rois = np.asarray(rois, dtype=x.dtype)
    n, c, height, width = x.shape
    pooled_h, pooled_w = (int(p) for p in pooled_shape)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise InputError(f"MaxRoiPool: rois must have shape [R, 5], got {rois.shape}")
    batch = rois[:, 0].astype(np.int64)  # C++ float -> int truncates toward zero
    if np.any((batch < 0) | (batch >= n)):
        raise InputError(f"MaxRoiPool: a RoI names batch entry {batch[(batch < 0) | (batch >= n)][0]}, "
                         f"but the input has {n}", fix="RoI batch indices must lie in [0, N)")
    corners = _round_half_away(rois[:, 1:].astype(np.float32) * np.float32(spatial_scale))
    h_lo, h_hi = _bins(corners[:, 1], corners[:, 3], pooled_h, height)
    w_lo, w_hi = _bins(corners[:, 0], corners[:, 2], pooled_w, width)

    out = np.zeros((len(rois), c, pooled_h, pooled_w), dtype=x.dtype)
    if len(rois) == 0 or height == 0 or width == 0:
        return out
    span_h = max(int((h_hi - h_lo).max()), 1)
    span_w = max(int((w_hi - w_lo).max()), 1)
    step = max(1, _CHUNK_ELEMENTS // (c * pooled_h * pooled_w * span_h * span_w))
    for first in range(0, len(rois), step):
        part = slice(first, first + step)
        out[part] = _window_max(x, batch[part], h_lo[part], h_hi[part], w_lo[part], w_hi[part], span_h, span_w)
    return out


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """C's ``round``: halves away from zero (NumPy's ``round`` goes to even); exact in float64."""
    v = v.astype(np.float64)
    return (np.sign(v) * np.floor(np.abs(v) + 0.5)).astype(np.int64)


def _bins(start: np.ndarray, end: np.ndarray, pooled: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell ranges ``[lo, hi)`` of each bin along one axis, ``[R, pooled]`` each, clipped to ``[0, size]``."""
    length = np.maximum(end - start + 1, 1).astype(np.float32)
    bin_size = (length / np.float32(pooled))[:, None]
    index = np.arange(pooled, dtype=np.float32)[None, :]
    lo = np.floor(index * bin_size).astype(np.int64) + start[:, None]
    hi = np.ceil((index + np.float32(1)) * bin_size).astype(np.int64) + start[:, None]
    return np.clip(lo, 0, size), np.clip(hi, 0, size)


def _window_max(x, batch, h_lo, h_hi, w_lo, w_hi, span_h, span_w) -> np.ndarray:
    """Maximum of every bin window (0 where empty) for a chunk of RoIs: ``[R, C, ph, pw]``."""
    height, width = x.shape[2:]
    rows = h_lo[:, :, None] + np.arange(span_h)  # [R, ph, span_h]
    cols = w_lo[:, :, None] + np.arange(span_w)  # [R, pw, span_w]
    row_ok, col_ok = rows < h_hi[:, :, None], cols < w_hi[:, :, None]
    # advanced indices around a slice: result is [R, ph, pw, span_h, span_w, C]
    values = x[batch[:, None, None, None, None], :,
               np.minimum(rows, height - 1)[:, :, None, :, None],
               np.minimum(cols, width - 1)[:, None, :, None, :]]
    inside = (row_ok[:, :, None, :, None] & col_ok[:, None, :, None, :])[..., None]
    best = np.where(inside, values, np.finfo(x.dtype).min).max(axis=(3, 4))
    empty = ~inside.any(axis=(3, 4))
    return np.where(empty, 0, best).transpose(0, 3, 1, 2)
