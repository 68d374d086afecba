"""RoiPool2d as a TensorRT plugin: kernel launch and AOT registration (see README.md).

Plugin ``visionrt::RoiPool2d``: ``x [N, C, H, W]``, ``rois [R, 5]`` (float32 or float16)
-> ``y [R, C, pooled_height, pooled_width]``; ``spatial_scale`` is baked into the kernel.
"""
from pathlib import Path
from typing import Any, Sequence

from ..launch import KernelLaunch, elementwise
from ..nvrtc import float_literal

PLUGINS = ("RoiPool2d",)
KERNEL = Path(__file__).with_name("kernel.cu")


def defines(spatial_scale: float) -> dict[str, str]:
    return {"SPATIAL_SCALE": float_literal(spatial_scale)}


#: Defines of a typical use (a stride-16 feature map), compiled by CI and ``visionrt doctor``.
EXAMPLE_DEFINES = defines(spatial_scale=1 / 16)


def launch(dtype: str, x_shape: Sequence[Any], rois_shape: Sequence[Any], pooled_height: int,
           pooled_width: int) -> KernelLaunch:
    """One thread per output element; shapes are ints or TensorRT shape expressions."""
    n, c, h, w = x_shape
    total = rois_shape[0] * c * pooled_height * pooled_width
    return elementwise("roi_pool", dtype, total, (n, c, h, w, pooled_height, pooled_width, rois_shape[0]))


def element_type(aot, x, rois) -> str:
    """The kernel's element type (numpy name): ``x`` and ``rois`` must both have it."""
    return aot.element_type("RoiPool2d", {"x": x, "rois": rois})


def register(aot) -> None:
    """Register the plugin with ``aot.trtp`` (see ``tensorrt_registration.AotBuilder``)."""
    trtp = aot.trtp

    @trtp.register("visionrt::RoiPool2d")
    @aot.reported
    def describe(x: trtp.TensorDesc, rois: trtp.TensorDesc, pooled_height: int, pooled_width: int,
                 spatial_scale: float) -> trtp.TensorDesc:
        element_type(aot, x, rois)
        return trtp.from_shape_expr((rois.shape_expr[0], x.shape_expr[1], pooled_height, pooled_width),
                                    dtype=x.dtype)

    @trtp.aot_impl("visionrt::RoiPool2d")
    @aot.reported
    def kernel(x, rois, pooled_height, pooled_width, spatial_scale, outputs, tactic) -> aot.result_type:
        return aot.kernel(KERNEL, defines(spatial_scale),
                          launch(element_type(aot, x, rois), x.shape_expr, rois.shape_expr, pooled_height,
                                 pooled_width))
