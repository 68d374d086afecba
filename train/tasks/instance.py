"""Instance segmentation with Mask R-CNN: the detection task's scenes and machinery plus masks.

Metric: COCO mask mAP@[.5:.95] (``mask_map``), with mask mAP50 and box mAP / mAP50 beside it.
The model's ``masks [N, K, M, M]`` are box-relative; the runtime pastes them into the image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...runtime.manifest import OutputSpec
from ...runtime.preprocess import fit_image
from ...runtime.tasks import detect as runtime_detect
from ...runtime.tasks import instance as runtime_instance
from ..config import TrainConfig
from ..data import load_coco
from ..data.check import Report, check_coco
from ..data.coco import annotation_mask, require_masks
from ..models.detection import MaskRCNN, MaskRCNNConfig
from . import detect
from .architectures import register_model

DATA_SIZES = detect.DATA_SIZES
#: Pasted mask probabilities above this are the object.
MASK_THRESHOLD = 0.5


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """The detection scenes (96×96, 2-4 digits, COCO boxes and RLE masks)."""
    return detect.build_data(out_dir, quick, seed, progress, name="instance")


def default_config(quick: bool = True) -> TrainConfig:
    """Adam: in the quick budget it reaches about twice the mask mAP of SGD (lr 0.02)."""
    return TrainConfig(task="instance", model="maskrcnn", epochs=8 if quick else 30, batch_size=16,
                       optimizer="adam", lr=0.002, weight_decay=1e-4, patience=4)


@register_model("instance", "maskrcnn")
def maskrcnn(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    return MaskRCNN(len(classes), MaskRCNNConfig(**kwargs), detect.nms_settings(postprocess))


def check_masks(a: dict, size: tuple[int, int], path: Path, report: Report) -> None:
    """The dataset check's rule on an annotation: it has a mask (polygons of 3 points or more, or an RLE)."""
    what = f"annotation {a.get('id')}"
    segmentation = a.get("segmentation")
    if not segmentation:
        report.problem(path, f"{what} has no segmentation (boxes only); instance needs masks",
                       "add polygon or RLE masks, or train `detect`")
    elif isinstance(segmentation, list) and any(len(p) < 6 or len(p) % 2 for p in segmentation):
        report.problem(path, f"{what} has a polygon of fewer than 3 points or an odd number of coordinates",
                       "write polygons as [x1, y1, x2, y2, x3, y3, ...]")


class Task(detect.Task):
    """Digits on real backgrounds with their masks; metric COCO mask mAP@[.5:.95]."""

    name = "instance"
    metric = "mask_map"
    runtime = runtime_instance

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        for split in ("train", "val", "test"):
            require_masks(load_coco(data_dir, split))
        super().__init__(data_dir, config)
        self.arch, self.kwargs = "maskrcnn", {}

    def build_model(self, config: TrainConfig) -> nn.Module:
        self.arch, self.kwargs = config.model, config.model_kwargs
        return super().build_model(config)

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """COCO json whose every object has a mask."""
        check_coco(data_dir, split, report, annotation_rule=check_masks)

    def targets(self, split: str, indices: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes``, ``labels`` and ``masks [G, H, W]`` (float32 0/1 at the input size:
        decoded from polygons or RLEs at the image's size, fitted to the input as the image is)."""
        data = self.splits[split]
        targets = super().targets(split, indices)
        for target, i in zip(targets, indices.tolist()):
            image = data.targets[i]["image"]
            masks = [fit_image(annotation_mask(a, image["height"], image["width"]), self.spec, 0, "nearest")
                     for a in data.annotations[i]]
            target["masks"] = (torch.from_numpy(np.stack(masks)).float() if masks
                               else torch.zeros((0, self.spec.height, self.spec.width)))
        return targets

    def outputs(self) -> list[OutputSpec]:
        return runtime_detect.detection_outputs(mask_size=2 * MaskRCNNConfig(**self.kwargs).mask_pool)

    def postprocess_defaults(self) -> dict:
        return {**detect.default_postprocess(self.arch), "mask_threshold": MASK_THRESHOLD}
