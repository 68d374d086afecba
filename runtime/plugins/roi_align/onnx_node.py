"""The ``visionrt::RoiAlign2d`` node: ONNX RoiAlign (opset 16) as a TensorRT plugin (see README.md).

String attributes become 0/1 ints (TensorRT plugin fields and kernel switches are ints):
``mode_max`` is 1 for mode "max", ``half_pixel`` is 1 for coordinate_transformation_mode
"half_pixel" and 0 for "output_half_pixel".
"""
from __future__ import annotations

from ..op import Attribute, PluginOp, Port
from .reference import roi_align


def _evaluate(x, rois, batch_indices, *, output_height: int, output_width: int, sampling_ratio: int,
              spatial_scale: float, mode_max: int, half_pixel: int):
    return (roi_align(x, rois, batch_indices, output_height, output_width, sampling_ratio, spatial_scale,
                      "max" if mode_max else "avg", "half_pixel" if half_pixel else "output_half_pixel"),)


ROI_ALIGN = PluginOp(
    name="RoiAlign2d",
    folder="roi_align",
    replaces="RoiAlign",
    inputs=(Port("x", "T", "[N, C, H, W]", "feature map"),
            Port("rois", "T", "[R, 4]", "(x1, y1, x2, y2) in input-image coordinates"),
            Port("batch_indices", "int64", "[R]", "image of each RoI")),
    outputs=(Port("y", "T", "[R, C, output_height, output_width]", "pooled bins"),),
    attributes=(
        Attribute("output_height", int, 1, "bins along y", low=1),
        Attribute("output_width", int, 1, "bins along x", low=1),
        Attribute("sampling_ratio", int, 0, "grid points per bin and axis; 0: ceil(bin size)", low=0),
        Attribute("spatial_scale", float, 1.0, "input-image coordinates -> feature-map cells"),
        Attribute("mode_max", bool, 0, "1: mode 'max' (onnxruntime's weighted max), 0: 'avg'"),
        Attribute("half_pixel", bool, 1, "1: 'half_pixel', 0: 'output_half_pixel'"),
    ),
    evaluate=_evaluate,
)
