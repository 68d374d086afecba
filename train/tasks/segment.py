"""Semantic segmentation: data, model, loss, metric and manifest entries for the ``segment`` task.

The built-in data: scenes of one to three digits on real photos; every pixel is background
(class 0) or the digit ``c`` (class ``c + 1``), as in the dataset's semantic PNGs. Or a mask
folder (VOC style, classes from ``classes.txt``). Loss: per-pixel cross-entropy without the
unlabelled pixels (value 255); metric: mIoU over the classes present (see
``visionrt.runtime.tasks.segment``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.folders import is_mask_folder
from ...runtime.manifest import OutputSpec
from ...runtime.render import PALETTE
from ...runtime.tasks.segment import confusion_matrix, iou_metrics
from ..config import TrainConfig
from ..data import build_dataset
from ..data.build import SEMANTIC_PALETTE
from ..data.check import Report, check_mask_folder
from ..data.masks import IGNORE, segmentation_classes, segmentation_split
from ..models.segment import FCN, DeconvNet, DeepLab, UNet
from .architectures import per_class, register_model
from .base import Baseline, TrainTask
from .inputs import channel_stats, flip_choice, mirror, to_input

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


register_model("segment", "fcn")(per_class(FCN))
#: U-Net at FCN's SGD lr 0.1 predicts background everywhere (zoo: mIoU 0.10 after the 748 steps);
#: with Adam at 1e-3 it learns (val mIoU 0.10, 0.19, 0.30, 0.33 over 4 epochs), and needs 12 epochs.
register_model("segment", "unet", quick={"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "epochs": 12})(
    per_class(UNet))
register_model("segment", "deeplab")(per_class(DeepLab))
#: DeconvNet: SGD (lr 0.1 or 0.01) or 4 epochs of Adam learn foreground but not which digit (val mIoU
#: 0.08-0.10); Adam at 1e-3 for 12 epochs climbs after the 4th (0.10, 0.15, ... 0.43), so 30.
register_model("segment", "deconvnet",
               quick={"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "epochs": 30})(per_class(DeconvNet))


class Task(TrainTask):
    """Images labelled per pixel (the built-in digits on real backgrounds, or a mask folder); metric mIoU."""

    name = "segment"
    metric = "miou"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        self.spec = self.fitted_input(config)
        self.splits = {split: segmentation_split(data_dir, split, self.spec)
                       for split in ("train", "val", "test")}
        self.classes = segmentation_classes(data_dir)
        self.mean, self.std = channel_stats(self.splits["train"][0].sample())
        self.flip = self.mirrors(data_dir, config)

    def __len__(self) -> int:
        return len(self.splits["train"][0])

    def build_model(self, config: TrainConfig) -> nn.Module:
        """The network in channels-last layout: about 1.5× faster convolutions on CPU."""
        return super().build_model(config).to(memory_format=torch.channels_last)

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """A mask folder (index-mask PNGs), else COCO json with masks."""
        if is_mask_folder(data_dir):
            check_mask_folder(data_dir, split, report)
        else:
            super().check_split(data_dir, split, report)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, maps = self.splits["train"]
        flipped = flip_choice(len(indices), generator, self.flip)
        x = to_input(mirror(images[indices], flipped), self.mean, self.std).contiguous(memory_format=torch.channels_last)
        return F.cross_entropy(model(x), mirror(maps[indices], flipped).long(), ignore_index=IGNORE)

    @torch.no_grad()
    def predict_maps(self, model: nn.Module, split: str, batch_size: int = 128) -> np.ndarray:
        """Class maps uint8 ``[N, H, W]`` of a split."""
        images = self.splits[split][0]
        model.eval()
        return torch.cat([model(to_input(images[i:i + batch_size], self.mean, self.std)).argmax(1).byte()
                          for i in range(0, len(images), batch_size)]).numpy()

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        confusion = confusion_matrix(self.predict_maps(model, split), self.splits[split][1][:].numpy(),
                                     len(self.classes))
        return {**iou_metrics(confusion, self.classes), "images": len(self.splits[split][0])}

    def baseline(self, split: str) -> Baseline:
        truth = self.splits[split][1][:].numpy()
        confusion = confusion_matrix(np.zeros_like(truth), truth, len(self.classes))
        return Baseline("miou", iou_metrics(confusion, self.classes)["miou"], f"{self.classes[0]} everywhere")

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ["batch", len(self.classes), self.spec.height, self.spec.width],
                           "unnormalised per-pixel class scores; argmax over axis 1 is the class map "
                           "(values index `classes`)")]

    def postprocess_defaults(self) -> dict:
        palette = [SEMANTIC_PALETTE[i] if i < len(SEMANTIC_PALETTE) else PALETTE[i % len(PALETTE)]
                   for i in range(len(self.classes))]
        return {"palette": np.array(palette, np.uint8).tolist()}
