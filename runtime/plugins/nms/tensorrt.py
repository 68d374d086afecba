"""EfficientNms as a TensorRT plugin: kernel launch and AOT registration (see README.md).

Plugin ``visionrt::EfficientNms``: ``boxes [B, N, 4]``, ``scores [B, N, C]`` (both float32 or
both float16: the kernel has one element type) -> ``num_detections [B, 1]`` int32, ``detection_boxes [B, K, 4]``,
``detection_scores [B, K]``, ``detection_classes [B, K]`` int32 with ``K = max_output_boxes``.
The thresholds and the block geometry are baked into the kernel; one block per image.
"""
from pathlib import Path
from typing import Any, Sequence, Tuple

from ..launch import KernelLaunch, kernel_name
from ..nvrtc import float_literal
from .onnx_node import MAX_NMS_CANDIDATES

PLUGINS = ("EfficientNms",)
KERNEL = Path(__file__).with_name("kernel.cu")
#: Threads per image: each owns MAX_NMS_CANDIDATES / BLOCK sorted candidates in registers.
BLOCK = 1024


def defines(iou_threshold: float, score_threshold: float) -> dict[str, str]:
    return {"IOU_THRESHOLD": float_literal(iou_threshold), "SCORE_THRESHOLD": float_literal(score_threshold),
            "NMS_BLOCK": str(BLOCK), "NMS_MAX_CANDIDATES": str(MAX_NMS_CANDIDATES)}


#: Defines of a typical use (a detector's post-processing), compiled by CI and ``visionrt doctor``.
EXAMPLE_DEFINES = defines(iou_threshold=0.5, score_threshold=0.05)


def launch(dtype: str, scores_shape: Sequence[Any], class_agnostic: int, max_output_boxes: int,
           pre_nms_top_k: int) -> KernelLaunch:
    """One block per image; ``scores_shape [B, N, C]`` holds ints or TensorRT shape expressions."""
    batch, num_boxes, num_classes = scores_shape
    return KernelLaunch(kernel_name("efficient_nms", dtype), grid=(batch, 1, 1), block=(BLOCK, 1, 1),
                        args=(num_boxes, num_classes, max_output_boxes, pre_nms_top_k, int(bool(class_agnostic))))


def element_type(aot, boxes, scores) -> str:
    """The kernel's element type (numpy name): ``boxes`` and ``scores`` must both have it."""
    return aot.element_type("EfficientNms", {"boxes": boxes, "scores": scores})


def register(aot) -> None:
    """Register the plugin with ``aot.trtp`` (see ``tensorrt_registration.AotBuilder``)."""
    trtp, trt = aot.trtp, aot.trt

    @trtp.register("visionrt::EfficientNms")
    @aot.reported
    def describe(boxes: trtp.TensorDesc, scores: trtp.TensorDesc, class_agnostic: int, iou_threshold: float,
                 max_output_boxes: int, pre_nms_top_k: int, score_threshold: float
                 ) -> Tuple[trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc]:
        element_type(aot, boxes, scores)
        batch = scores.shape_expr[0]
        return (trtp.from_shape_expr((batch, 1), dtype=trt.int32),
                trtp.from_shape_expr((batch, max_output_boxes, 4), dtype=boxes.dtype),
                trtp.from_shape_expr((batch, max_output_boxes), dtype=scores.dtype),
                trtp.from_shape_expr((batch, max_output_boxes), dtype=trt.int32))

    @trtp.aot_impl("visionrt::EfficientNms")
    @aot.reported
    def kernel(boxes, scores, class_agnostic, iou_threshold, max_output_boxes, pre_nms_top_k, score_threshold,
               outputs, tactic) -> aot.result_type:
        return aot.kernel(KERNEL, defines(iou_threshold, score_threshold),
                          launch(element_type(aot, boxes, scores), scores.shape_expr, class_agnostic, max_output_boxes,
                                 pre_nms_top_k))
