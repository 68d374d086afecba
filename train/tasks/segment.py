"""Semantic segmentation: data, model, loss, metric and manifest entries for the ``segment`` task.

Scenes of one to three digits on real photos; every pixel is background (class 0) or the
digit ``c`` (class ``c + 1``), as in the dataset's semantic PNGs. Loss: per-pixel
cross-entropy; metric: mIoU over the 11 classes (see ``visionrt.runtime.tasks.segment``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from ...runtime.manifest import InputSpec, OutputSpec
from ...runtime.tasks.segment import CLASSES, confusion_matrix, iou_metrics, read_maps
from ..config import TrainConfig
from ..data import build_dataset, load_coco
from ..data.build import SEMANTIC_PALETTE
from ..models.segment import SegmenterConfig, build_segmenter
from .classify import channel_stats, to_input

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 6000, "val": 300, "test": 500},
              False: {"train": 20000, "val": 1000, "test": 1000}}
IMAGE_SIZE = 64
OBJECTS_PER_IMAGE = (1, 3)
DIGIT_SCALE = (0.3, 0.55)


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """64×64 scenes of 1–3 digits, each 30–55 % of the image side (see ``visionrt.train.data``)."""
    return build_dataset(out_dir, name="segment", splits=DATA_SIZES[quick], image_size=IMAGE_SIZE,
                         objects_per_image=OBJECTS_PER_IMAGE, digit_scale=DIGIT_SCALE, seed=seed, progress=progress)


def default_config(quick: bool = True) -> TrainConfig:
    """FCN: of the four networks the cheapest per step that learns both where the digits are
    and which digit each is within the quick budget (about 750 SGD steps of 32 images)."""
    return TrainConfig(task="segment", model="fcn", epochs=4 if quick else 20, batch_size=32, lr=0.1)


def build_model(model_entry: dict, classes: list[str]) -> nn.Module:
    return build_segmenter(SegmenterConfig(model_entry["arch"], model_entry.get("kwargs", {})), len(classes))


def load_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, H, W, 3]`` and semantic maps uint8 ``[N, H, W]`` of one split."""
    files = load_coco(data_dir, split)
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in files.image_paths])
    return images, read_maps(files.semantic_paths)


class Task:
    """Digits on real backgrounds, labelled per pixel; metric mIoU."""

    name = "segment"
    metric = "miou"

    def __init__(self, data_dir: str | Path):
        self.splits = {split: tuple(map(torch.from_numpy, load_split(data_dir, split)))
                       for split in ("train", "val", "test")}
        self.classes = list(CLASSES)
        self.mean, self.std = channel_stats(self.splits["train"][0])

    def __len__(self) -> int:
        return len(self.splits["train"][0])

    def build_model(self, config: TrainConfig) -> nn.Module:
        """The network in channels-last layout: about 1.5× faster convolutions on CPU."""
        model = build_model({"arch": config.model, "kwargs": config.model_kwargs}, self.classes)
        return model.to(memory_format=torch.channels_last)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, maps = self.splits["train"]
        x = to_input(images[indices], self.mean, self.std).contiguous(memory_format=torch.channels_last)
        return F.cross_entropy(model(x), maps[indices].long())

    @torch.no_grad()
    def predict_maps(self, model: nn.Module, split: str, batch_size: int = 128) -> np.ndarray:
        """Class maps uint8 ``[N, H, W]`` of a split."""
        images = self.splits[split][0]
        model.eval()
        return torch.cat([model(to_input(images[i:i + batch_size], self.mean, self.std)).argmax(1).byte()
                          for i in range(0, len(images), batch_size)]).numpy()

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        confusion = confusion_matrix(self.predict_maps(model, split), self.splits[split][1].numpy(),
                                     len(self.classes))
        return {**iou_metrics(confusion, self.classes), "images": len(self.splits[split][0])}

    def input_spec(self) -> InputSpec:
        _, h, w, c = self.splits["train"][0].shape
        return InputSpec(channels=c, height=h, width=w, mean=tuple(map(float, self.mean)),
                         std=tuple(map(float, self.std)))

    def outputs(self) -> list[OutputSpec]:
        _, h, w = self.splits["train"][1].shape
        return [OutputSpec("logits", ["batch", len(self.classes), h, w],
                           "unnormalised per-pixel class scores; argmax over axis 1 is the class map "
                           "(0 = background, c + 1 = digit c)")]

    def postprocess(self) -> dict:
        return {"palette": SEMANTIC_PALETTE[:len(self.classes)].tolist()}
