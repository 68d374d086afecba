"""``visionrt::max_pool2d_with_indices`` and ``visionrt::max_unpool2d``, with ONNX's flat indices.

PyTorch's own pooling indices count within each ``H*W`` plane; ONNX's (MaxPool's ``Indices``
output, MaxUnpool's input) count over the whole ``N*C*H*W`` tensor. These ops use ONNX's, so
the indices a model computes are the ones its ONNX carries, and export to ``MaxPool`` with two
outputs and ``MaxUnpool``. ``padding`` is ONNX's ``(top, left, bottom, right)``; pads never win.
Both have backward (scatter / gather of the gradient through the indices).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from onnxscript import opset18 as op

from ...runtime.plugins.max_unpool.reference import unpooled_size


@torch.library.custom_op("visionrt::max_pool2d_with_indices", mutates_args=())
def max_pool2d_with_indices(x: torch.Tensor, kernel_size: list[int], stride: list[int],
                            padding: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [N, C, H, W]`` -> ``(y, indices)`` ``[N, C, oh, ow]``; indices flat over ``N*C*H*W``, int64."""
    top, left, bottom, right = padding
    n, c, height, width = x.shape
    padded = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    y, within = F.max_pool2d(padded, kernel_size, stride, return_indices=True)  # first maximum wins
    row, col = within // padded.shape[3] - top, within % padded.shape[3] - left
    plane = torch.arange(n * c, device=x.device).reshape(n, c, 1, 1)
    return y, (plane * height + row) * width + col


@max_pool2d_with_indices.register_fake
def _(x, kernel_size, stride, padding):
    n, c, height, width = x.shape
    shape = (n, c, (height + padding[0] + padding[2] - kernel_size[0]) // stride[0] + 1,
             (width + padding[1] + padding[3] - kernel_size[1]) // stride[1] + 1)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


def _pool_backward(ctx, grad_y, grad_indices):
    (indices,) = ctx.saved_tensors
    grad_x = grad_y.new_zeros(ctx.x_shape).reshape(-1).index_add_(0, indices.reshape(-1), grad_y.reshape(-1))
    return grad_x.reshape(ctx.x_shape), None, None, None


def _pool_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.x_shape = inputs[0].shape
    ctx.mark_non_differentiable(output[1])


max_pool2d_with_indices.register_autograd(_pool_backward, setup_context=_pool_setup_context)


@torch.library.custom_op("visionrt::max_unpool2d", mutates_args=())
def max_unpool2d(y: torch.Tensor, indices: torch.Tensor, kernel_size: list[int], stride: list[int],
                 padding: list[int], output_size: list[int]) -> torch.Tensor:
    """``y, indices [N, C, h, w]`` -> ``[N, C, *output_size]``: zeros with ``y`` at its flat indices
    (flat over the output, as onnxruntime reads MaxUnpool's; see the max_unpool plugin README)."""
    n, c = y.shape[:2]
    out = y.new_zeros(n * c * output_size[0] * output_size[1])
    return out.scatter_(0, indices.reshape(-1), y.reshape(-1)).reshape(n, c, *output_size)


@max_unpool2d.register_fake
def _(y, indices, kernel_size, stride, padding, output_size):
    return y.new_empty(*y.shape[:2], *output_size)


def _unpool_backward(ctx, grad):
    """Each output element's gradient goes to the value written there last (a repeated index,
    from overlapping windows, writes once per window)."""
    (indices,) = ctx.saved_tensors
    flat = indices.reshape(-1)
    order = torch.arange(len(flat), device=flat.device)
    last = torch.full((grad.numel(),), -1, dtype=order.dtype, device=flat.device).scatter_reduce_(0, flat, order, "amax")
    grad_y = torch.where(last[flat] == order, grad.reshape(-1)[flat], 0)
    return grad_y.reshape(indices.shape), None, None, None, None, None


def _unpool_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


max_unpool2d.register_autograd(_unpool_backward, setup_context=_unpool_setup_context)


def max_unpool2d_size(y_size: tuple[int, int], kernel_size, stride, padding) -> list[int]:
    """MaxUnpool's default output ``[H, W]`` (pass the pooled input's size instead when it is odd)."""
    return [unpooled_size(y_size[i], kernel_size[i], stride[i], padding[i], padding[i + 2]) for i in (0, 1)]


def max_pool2d_with_indices_onnx(x, kernel_size: list[int], stride: list[int], padding: list[int]):
    """Portable ONNX: MaxPool with its Indices output (storage_order 0)."""
    y, indices = op.MaxPool(x, kernel_shape=kernel_size, strides=stride, pads=padding, storage_order=0)
    return y, indices


def max_unpool2d_onnx(y, indices, kernel_size: list[int], stride: list[int], padding: list[int],
                      output_size: list[int]):
    """Portable ONNX: MaxUnpool with ``output_shape`` = (N, C of ``y``, ``output_size``)."""
    shape = op.Concat(op.Shape(y, start=0, end=2), op.Constant(value_ints=output_size), axis=0)
    return op.MaxUnpool(y, indices, shape, kernel_shape=kernel_size, strides=stride, pads=padding)
