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
from ...runtime.tasks import detect as runtime_detect
from ...runtime.tasks import instance as runtime_instance
from ..config import TrainConfig
from ..models.detection import MaskRCNN, MaskRCNNConfig, NmsSettings
from . import detect

DATA_SIZES = detect.DATA_SIZES
ARCHITECTURES = ("maskrcnn",)
POSTPROCESS_IN_GRAPH = True
#: Pasted mask probabilities above this are the object.
MASK_THRESHOLD = 0.5


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """The detection scenes (96×96, 2-4 digits, COCO boxes and RLE masks)."""
    return detect.build_data(out_dir, quick, seed, progress, name="instance")


def default_config(quick: bool = True) -> TrainConfig:
    """Adam: in the quick budget it reaches about twice the mask mAP of SGD (lr 0.02)."""
    return TrainConfig(task="instance", model="maskrcnn", epochs=8 if quick else 30, batch_size=16,
                       optimizer="adam", lr=0.002, weight_decay=1e-4, patience=4)


def build_model(model_entry: dict, classes: list[str], postprocess: dict | None = None) -> nn.Module:
    if model_entry["arch"] not in ARCHITECTURES:
        raise ValueError(f"unknown instance model '{model_entry['arch']}' (choose from {', '.join(ARCHITECTURES)})")
    nms = detect.nms_settings(postprocess) if postprocess else NmsSettings()
    return MaskRCNN(len(classes), MaskRCNNConfig(**model_entry.get("kwargs", {})), nms)


class Task(detect.Task):
    """Digits on real backgrounds with their masks; metric COCO mask mAP@[.5:.95]."""

    name = "instance"
    metric = "mask_map"
    runtime = runtime_instance

    def __init__(self, data_dir: str | Path):
        super().__init__(data_dir)
        self.arch, self.kwargs = "maskrcnn", {}

    def build_model(self, config: TrainConfig) -> nn.Module:
        self.arch, self.kwargs = config.model, config.model_kwargs
        return build_model({"arch": config.model, "kwargs": config.model_kwargs}, self.classes, self.postprocess())

    def targets(self, split: str, indices: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes``, ``labels`` and ``masks [G, H, W]`` (float32 0/1, decoded from the RLEs)."""
        from pycocotools import mask as coco_mask

        targets = super().targets(split, indices)
        height, width = self.splits[split].images.shape[1:3]
        for target, i in zip(targets, indices.tolist()):
            rles = [a["segmentation"] for a in self.splits[split].annotations[i]]
            masks = coco_mask.decode(rles) if rles else np.zeros((height, width, 0), np.uint8)
            target["masks"] = torch.from_numpy(masks).permute(2, 0, 1).float()
        return targets

    def outputs(self) -> list[OutputSpec]:
        return runtime_detect.detection_outputs(mask_size=2 * MaskRCNNConfig(**self.kwargs).mask_pool)

    def postprocess(self) -> dict:
        return {**detect.default_postprocess(self.arch), "mask_threshold": MASK_THRESHOLD}
