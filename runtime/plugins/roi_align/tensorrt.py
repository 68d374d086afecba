"""RoiAlign2d as a TensorRT plugin: kernel launch and AOT registration (see README.md).

Plugin ``visionrt::RoiAlign2d``: ``x [N, C, H, W]``, ``rois [R, 4]`` (float32 or float16),
``batch_indices [R]`` int64 -> ``y [R, C, output_height, output_width]``;
``spatial_scale``, ``half_pixel`` and ``mode_max`` are baked into the kernel.
"""
from pathlib import Path
from typing import Any, Sequence

from ..launch import KernelLaunch, elementwise
from ..nvrtc import float_literal

PLUGINS = ("RoiAlign2d",)
KERNEL = Path(__file__).with_name("kernel.cu")


def defines(half_pixel: int, mode_max: int, spatial_scale: float) -> dict[str, str]:
    return {"HALF_PIXEL": str(int(bool(half_pixel))), "MODE_MAX": str(int(bool(mode_max))),
            "SPATIAL_SCALE": float_literal(spatial_scale)}


#: Defines of a typical use (Mask R-CNN on a stride-16 map), compiled by CI and ``visionrt doctor``.
EXAMPLE_DEFINES = defines(half_pixel=1, mode_max=0, spatial_scale=1 / 16)


def launch(dtype: str, x_shape: Sequence[Any], rois_shape: Sequence[Any], output_height: int,
           output_width: int, sampling_ratio: int) -> KernelLaunch:
    """One thread per output element; shapes are ints or TensorRT shape expressions."""
    n, c, h, w = x_shape
    total = rois_shape[0] * c * output_height * output_width
    return elementwise("roi_align", dtype, total,
                       (n, c, h, w, output_height, output_width, sampling_ratio, rois_shape[0]))


def element_type(aot, x, rois, batch_indices) -> str:
    """The kernel's element type (numpy name): ``x`` and ``rois`` must both have it, ``batch_indices`` be int64."""
    return aot.element_type("RoiAlign2d", {"x": x, "rois": rois}, {"batch_indices": batch_indices})


def register(aot) -> None:
    """Register the plugin with ``aot.trtp`` (see ``tensorrt_registration.AotBuilder``)."""
    trtp = aot.trtp

    @trtp.register("visionrt::RoiAlign2d")
    @aot.reported
    def describe(x: trtp.TensorDesc, rois: trtp.TensorDesc, batch_indices: trtp.TensorDesc, half_pixel: int,
                 mode_max: int, output_height: int, output_width: int, sampling_ratio: int,
                 spatial_scale: float) -> trtp.TensorDesc:
        element_type(aot, x, rois, batch_indices)
        return trtp.from_shape_expr((rois.shape_expr[0], x.shape_expr[1], output_height, output_width),
                                    dtype=x.dtype)

    @trtp.aot_impl("visionrt::RoiAlign2d")
    @aot.reported
    def kernel(x, rois, batch_indices, half_pixel, mode_max, output_height, output_width, sampling_ratio,
               spatial_scale, outputs, tactic) -> aot.result_type:
        return aot.kernel(KERNEL, defines(half_pixel, mode_max, spatial_scale),
                          launch(element_type(aot, x, rois, batch_indices), x.shape_expr, rois.shape_expr,
                                 output_height, output_width, sampling_ratio))
