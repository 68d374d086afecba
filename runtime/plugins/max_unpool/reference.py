"""NumPy references of ONNX MaxPool with its Indices output, and MaxUnpool (2-D), as onnxruntime.

Indices are flat over the whole ``N*C*H*W`` input (``storage_order`` 0): the index of
``x[n, c, h, w]`` is ``((n * C + c) * H + h) * W + w``. A window's first maximum in row-major
order wins; padding never does. Windows with NaN or only -inf follow PyTorch's ``max_pool2d``
(and torchvision's users): NaN wins (the last NaN in row-major order), and a window of -inf
gives -inf at its first element inside the input. (onnxruntime skips NaN and leaves such
windows at the lowest float with no valid index: the kernels follow PyTorch.) MaxUnpool writes each value at its index in a zero tensor of
the output shape (a repeated index keeps the last value written). With an explicit
``output_shape`` the indices are flat over it, as onnxruntime reads them (ONNX's
``onnx.reference`` reads them over the default shape instead: see the README).
"""
from __future__ import annotations

import numpy as np

from ...errors import InputError


def pooled_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int) -> int:
    """Output length of a pooling axis (``ceil_mode`` 0)."""
    return (size + pad_begin + pad_end - kernel) // stride + 1


def unpooled_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int) -> int:
    """Default output length of a MaxUnpool axis: the input length of the pooling it inverts."""
    return (size - 1) * stride + kernel - pad_begin - pad_end


def max_pool_with_indices(x: np.ndarray, kernel_shape, strides, pads=(0, 0, 0, 0)):
    """``x [N, C, H, W]`` -> ``(y [N, C, oh, ow], indices [N, C, oh, ow] int64)``.

    ``pads`` are ONNX's ``(top, left, bottom, right)``; each must be smaller than the kernel.
    """
    x = np.asarray(x)
    (kh, kw), (sh, sw), (top, left, bottom, right) = _pooling(kernel_shape, strides, pads)
    n, c, height, width = x.shape
    out_h, out_w = pooled_size(height, kh, sh, top, bottom), pooled_size(width, kw, sw, left, right)
    if out_h < 1 or out_w < 1:
        raise InputError(f"MaxPool: a {kh}x{kw} kernel does not fit the padded {height}x{width} input")
    windows, inside = (_windows(np.pad(a, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=pad),
                                (kh, kw), (sh, sw), (out_h, out_w))
                       for a, pad in ((x, -np.inf), (np.ones((1, 1, height, width), bool), False)))
    nan = np.isnan(windows)
    best = np.where(nan, -np.inf, windows).argmax(axis=-1)  # first maximum in row-major order
    best = np.where(np.take_along_axis(windows, best[..., None], axis=-1)[..., 0] == -np.inf,
                    inside.argmax(axis=-1), best)  # only -inf: the window's first element inside the input
    best = np.where(nan.any(axis=-1), kh * kw - 1 - nan[..., ::-1].argmax(axis=-1), best)  # the last NaN
    y = np.take_along_axis(windows, best[..., None], axis=-1)[..., 0]
    row = np.arange(out_h)[:, None] * sh - top + best // kw
    col = np.arange(out_w)[None, :] * sw - left + best % kw
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1)
    return y.astype(x.dtype, copy=False), (plane * height + row) * width + col


def _windows(padded: np.ndarray, kernel, strides, out) -> np.ndarray:
    """``[N, C, out_h, out_w, kh * kw]``: each pooling window of ``padded``, row-major."""
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=(2, 3))
    windows = windows[:, :, ::strides[0], ::strides[1]][:, :, :out[0], :out[1]]
    return windows.reshape(*windows.shape[:4], kernel[0] * kernel[1])


def max_unpool(y: np.ndarray, indices: np.ndarray, kernel_shape, strides, pads=(0, 0, 0, 0),
               output_shape=None) -> np.ndarray:
    """``y, indices [N, C, h, w]`` -> ``[N, C, H, W]``: ``output_shape`` (4 numbers) or the default size."""
    y, indices = np.asarray(y), np.asarray(indices, dtype=np.int64)
    (kh, kw), (sh, sw), (top, left, bottom, right) = _pooling(kernel_shape, strides, pads)
    if y.shape != indices.shape:
        raise InputError(f"MaxUnpool: values {y.shape} and indices {indices.shape} differ in shape")
    n, c, height, width = y.shape
    if output_shape is None:
        output_shape = (n, c, unpooled_size(height, kh, sh, top, bottom), unpooled_size(width, kw, sw, left, right))
    output_shape = tuple(int(d) for d in output_shape)
    out = np.zeros(int(np.prod(output_shape)), dtype=y.dtype)
    if indices.size and (indices.min() < 0 or indices.max() >= out.size):
        raise InputError(f"MaxUnpool: indices range {indices.min()}..{indices.max()} "
                         f"outside the output of {out.size} elements {list(output_shape)}")
    out[indices.reshape(-1)] = y.reshape(-1)
    return out.reshape(output_shape)


def _pooling(kernel_shape, strides, pads):
    kernel, stride, pad = tuple(map(int, kernel_shape)), tuple(map(int, strides)), tuple(map(int, pads))
    if len(kernel) != 2 or len(stride) != 2 or len(pad) != 4:
        raise InputError(f"2-D pooling takes 2 kernel sizes, 2 strides and 4 pads; "
                         f"got {kernel}, {stride}, {pad}")
    if min(kernel + stride) < 1 or min(pad) < 0 or any(p >= k for p, k in zip(pad, kernel + kernel)):
        raise InputError(f"pooling kernel {kernel}, strides {stride}, pads {pad}: sizes and strides "
                         "must be positive and every pad smaller than the kernel")
    return kernel, stride, pad
