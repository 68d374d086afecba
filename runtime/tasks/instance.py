"""Instance segmentation in the runtime: detections with masks pasted into the original image.

Everything but the metric is the detection task's (:mod:`.detect`): the model adds ``masks
[N, K, M, M]`` (box-relative probabilities of each detection's class), which
:func:`~.detect.postprocess` pastes into the image and binarises at ``mask_threshold``.
"""
from __future__ import annotations

import numpy as np

from ..manifest import Manifest
from .base import Architecture
from .detect import DetectTask, coco_metrics, evaluation_results


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """COCO ``mask_map`` (@[.5:.95]), ``mask_map50``, ``box_map``, ``box_map50`` against the held-out targets."""
    metrics = coco_metrics(evaluation_results(outputs, targets, manifest), targets, manifest.classes,
                           ("segm", "bbox"))
    return {f"{kind}_{name}": metrics[iou_type][name]
            for kind, iou_type in (("mask", "segm"), ("box", "bbox")) for name in ("map", "map50")}


class InstanceTask(DetectTask):
    name = "instance"
    architectures = (Architecture("maskrcnn", ("EfficientNms", "RoiAlign2d"), default=True),)
    evaluate = staticmethod(evaluate)


TASK = InstanceTask()
