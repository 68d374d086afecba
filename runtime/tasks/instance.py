"""Instance segmentation in the runtime: detections with masks pasted into the original image.

Everything but the metric is the detection task's (:mod:`.detect`): the model adds ``masks
[N, K, M, M]`` (box-relative probabilities of each detection's class), which
:func:`~.detect.postprocess` pastes into the image and binarises at ``mask_threshold``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..manifest import Manifest
from .base import Architecture, Contract, Imported, Tensor, Variant
from .detect import GRAPH_NMS, TASK as DETECT, coco_metrics, evaluation_results, import_defaults as detect_defaults


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """COCO ``mask_map`` (@[.5:.95]), ``mask_map50``, ``box_map``, ``box_map50`` against the held-out targets."""
    metrics = coco_metrics(evaluation_results(outputs, targets, manifest), targets, manifest.classes,
                           ("segm", "bbox"))
    return {f"{kind}_{name}": metrics[iou_type][name]
            for kind, iou_type in (("mask", "segm"), ("box", "bbox")) for name in ("map", "map50")}


def import_defaults(variant: Variant, classes: list[str], bound: dict[str, int]) -> dict:
    """Detection's, and the mask threshold."""
    return {**detect_defaults(variant, classes, bound), "mask_threshold": 0.5}


TASK = dataclasses.replace(
    DETECT, name="instance",
    architectures=(Architecture("maskrcnn", ("EfficientNms", "RoiAlign2d"), default=True),),
    contract=Contract("fixed", "the class names, in class-index order", (
        Variant("NMS in the graph, with masks", (*GRAPH_NMS.outputs, Tensor(
            "masks", ("N", "K", "M", "M"), "float", "per detection, its class's probability per cell of its box")),
            True, {**GRAPH_NMS.postprocess, "mask_threshold": "mask probability threshold"}),), import_defaults),
    evaluate=evaluate, precision_tolerance={"box_map50": (0.02, 0.0), "mask_map50": (0.02, 0.0)},
    imported=Imported(),
)
