"""The ``visionrt::RoiPool2d`` node: ONNX MaxRoiPool as a TensorRT plugin (see README.md)."""
from __future__ import annotations

from ..op import Attribute, PluginOp, Port
from .reference import max_roi_pool


def _evaluate(x, rois, *, pooled_height: int, pooled_width: int, spatial_scale: float):
    return (max_roi_pool(x, rois, (pooled_height, pooled_width), spatial_scale),)


ROI_POOL = PluginOp(
    name="RoiPool2d",
    folder="roi_pool",
    replaces="MaxRoiPool",
    inputs=(Port("x", "T", "[N, C, H, W]", "feature map"),
            Port("rois", "T", "[R, 5]", "(batch_index, x1, y1, x2, y2) in input-image coordinates")),
    outputs=(Port("y", "T", "[R, C, pooled_height, pooled_width]", "maximum of each bin, 0 for an empty bin"),),
    attributes=(
        Attribute("pooled_height", int, None, "bins along y (MaxRoiPool pooled_shape[0])", low=1),
        Attribute("pooled_width", int, None, "bins along x (MaxRoiPool pooled_shape[1])", low=1),
        Attribute("spatial_scale", float, 1.0, "input-image coordinates -> feature-map cells"),
    ),
    evaluate=_evaluate,
)
