"""MaxPool2dWithIndices and MaxUnpool2d as TensorRT plugins: kernel launches and AOT registration.

Plugin ``visionrt::MaxPool2dWithIndices``: ``x [N, C, H, W]`` (float32 or float16) ->
``y``, ``indices`` int64, both ``[N, C, out_h, out_w]``. Plugin ``visionrt::MaxUnpool2d``:
``y``, ``indices [N, C, h, w]`` -> ``[N, C, output_height, output_width]``. One kernel
launch each (see kernel.cu for how MaxUnpool zeroes and places in one launch); README.md.
"""
from pathlib import Path
from typing import Any, Sequence, Tuple

from ..launch import KernelLaunch, elementwise
from .reference import pooled_size

PLUGINS = ("MaxPool2dWithIndices", "MaxUnpool2d")
KERNEL = Path(__file__).with_name("kernel.cu")


def defines() -> dict[str, str]:
    """No compile-time constants: every attribute is an int kernel argument."""
    return {}


#: Compiled by CI and ``visionrt doctor``.
EXAMPLE_DEFINES = defines()


def launch_pool(dtype: str, x_shape: Sequence[Any], kernel_h: int, kernel_w: int, pad_bottom: int, pad_left: int,
                pad_right: int, pad_top: int, stride_h: int, stride_w: int) -> KernelLaunch:
    """One thread per output element; ``x_shape`` holds ints or TensorRT shape expressions."""
    n, c, h, w = x_shape
    out_h = pooled_size(h, kernel_h, stride_h, pad_top, pad_bottom)
    out_w = pooled_size(w, kernel_w, stride_w, pad_left, pad_right)
    return elementwise("max_pool_with_indices", dtype, n * c * out_h * out_w,
                       (h, w, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, n * c))


def launch_unpool(dtype: str, y_shape: Sequence[Any], kernel_h: int, kernel_w: int, output_height: int,
                  output_width: int, pad_left: int, pad_top: int, stride_h: int, stride_w: int) -> KernelLaunch:
    """One thread per output element; ``y_shape`` holds ints or TensorRT shape expressions."""
    n, c, h, w = y_shape
    return elementwise("max_unpool", dtype, n * c * output_height * output_width,
                       (h, w, output_height, output_width, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                        pad_left, n * c))


def unpool_element_type(aot, y, indices) -> str:
    """MaxUnpool2d's element type (numpy name), that of ``y``; ``indices`` must be int64."""
    return aot.element_type("MaxUnpool2d", {"y": y}, {"indices": indices})


def register(aot) -> None:
    """Register both plugins with ``aot.trtp`` (see ``tensorrt_registration.AotBuilder``)."""
    trtp, trt = aot.trtp, aot.trt

    @trtp.register("visionrt::MaxPool2dWithIndices")
    @aot.reported
    def describe_pool(x: trtp.TensorDesc, kernel_h: int, kernel_w: int, pad_bottom: int, pad_left: int,
                      pad_right: int, pad_top: int, stride_h: int, stride_w: int
                      ) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:
        aot.dtype(x.dtype)
        n, c, h, w = x.shape_expr
        shape = (n, c, pooled_size(h, kernel_h, stride_h, pad_top, pad_bottom),
                 pooled_size(w, kernel_w, stride_w, pad_left, pad_right))
        return trtp.from_shape_expr(shape, dtype=x.dtype), trtp.from_shape_expr(shape, dtype=trt.int64)

    @trtp.aot_impl("visionrt::MaxPool2dWithIndices")
    @aot.reported
    def kernel_pool(x, kernel_h, kernel_w, pad_bottom, pad_left, pad_right, pad_top, stride_h, stride_w,
                    outputs, tactic) -> aot.result_type:
        return aot.kernel(KERNEL, defines(),
                          launch_pool(aot.dtype(x.dtype), x.shape_expr, kernel_h, kernel_w, pad_bottom, pad_left,
                                      pad_right, pad_top, stride_h, stride_w))

    @trtp.register("visionrt::MaxUnpool2d")
    @aot.reported
    def describe_unpool(y: trtp.TensorDesc, indices: trtp.TensorDesc, kernel_h: int, kernel_w: int,
                        output_height: int, output_width: int, pad_bottom: int, pad_left: int, pad_right: int,
                        pad_top: int, stride_h: int, stride_w: int) -> trtp.TensorDesc:
        unpool_element_type(aot, y, indices)
        return trtp.from_shape_expr((y.shape_expr[0], y.shape_expr[1], output_height, output_width), dtype=y.dtype)

    @trtp.aot_impl("visionrt::MaxUnpool2d")
    @aot.reported
    def kernel_unpool(y, indices, kernel_h, kernel_w, output_height, output_width, pad_bottom, pad_left, pad_right,
                      pad_top, stride_h, stride_w, outputs, tactic) -> aot.result_type:
        return aot.kernel(KERNEL, defines(),
                          launch_unpool(unpool_element_type(aot, y, indices), y.shape_expr, kernel_h, kernel_w,
                                        output_height, output_width, pad_left, pad_top, stride_h, stride_w))
