"""The ``visionrt::MaxPool2dWithIndices`` and ``visionrt::MaxUnpool2d`` nodes (see README.md).

ONNX MaxPool with its Indices output and ONNX MaxUnpool, 2-D, as TensorRT plugins. The list
attributes of ONNX become scalars (``kernel_h``, ``kernel_w``, ...); MaxUnpool2d carries its
output size as attributes (``output_height``, ``output_width``), fixed at export.
"""
from __future__ import annotations

from ...errors import PluginError
from ..op import Attribute, PluginOp, Port
from .reference import max_pool_with_indices, max_unpool

_POOLING = (
    Attribute("kernel_h", int, None, "pooling window height", low=1),
    Attribute("kernel_w", int, None, "pooling window width", low=1),
    Attribute("stride_h", int, 1, "window step along y", low=1),
    Attribute("stride_w", int, 1, "window step along x", low=1),
    Attribute("pad_top", int, 0, "padding rows before (never the maximum)", low=0),
    Attribute("pad_left", int, 0, "padding columns before", low=0),
    Attribute("pad_bottom", int, 0, "padding rows after", low=0),
    Attribute("pad_right", int, 0, "padding columns after", low=0),
)


def _pooling(a) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    return ((a["kernel_h"], a["kernel_w"]), (a["stride_h"], a["stride_w"]),
            (a["pad_top"], a["pad_left"], a["pad_bottom"], a["pad_right"]))


def _check(attributes) -> None:
    (kh, kw), _, pads = _pooling(attributes)
    if any(p >= k for p, k in zip(pads, (kh, kw, kh, kw))):
        raise PluginError(f"pooling pads {pads} must each be smaller than the kernel {kh}x{kw}",
                          fix="a window made of padding alone has no maximum; reduce the padding")


def _evaluate_pool(x, **attributes):
    return max_pool_with_indices(x, *_pooling(attributes))


def _evaluate_unpool(y, indices, *, output_height: int, output_width: int, **attributes):
    return (max_unpool(y, indices, *_pooling(attributes), output_shape=(*y.shape[:2], output_height, output_width)),)


MAX_POOL_WITH_INDICES = PluginOp(
    name="MaxPool2dWithIndices",
    folder="max_unpool",
    replaces="MaxPool (with the Indices output)",
    inputs=(Port("x", "T", "[N, C, H, W]", "input"),),
    outputs=(Port("y", "T", "[N, C, out_h, out_w]", "window maxima"),
             Port("indices", "int64", "[N, C, out_h, out_w]", "flat N*C*H*W index of each maximum")),
    attributes=_POOLING,
    evaluate=_evaluate_pool,
    check=_check,
    limits=("2-D only; dilations 1, ceil_mode 0, storage_order 0",),
)

MAX_UNPOOL = PluginOp(
    name="MaxUnpool2d",
    folder="max_unpool",
    replaces="MaxUnpool",
    inputs=(Port("y", "T", "[N, C, h, w]", "values to place"),
            Port("indices", "int64", "[N, C, h, w]", "their flat N*C*H*W positions, as MaxPool gives them")),
    outputs=(Port("x", "T", "[N, C, output_height, output_width]", "zeros except at the indices"),),
    attributes=_POOLING + (
        Attribute("output_height", int, None, "output rows (the pooled input's height)", low=1),
        Attribute("output_width", int, None, "output columns (the pooled input's width)", low=1),
    ),
    evaluate=_evaluate_unpool,
    check=_check,
    limits=("2-D only; each index inside its own pooling window (as MaxPool's indices are)",),
)
