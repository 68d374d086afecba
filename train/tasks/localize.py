"""Classification + localisation of one digit: data, model, loss, metrics and manifest entries.

The primary metric is **mean IoU** of the predicted and true boxes on the held-out split:
top-1 saturates within a few epochs on these digits while the boxes keep improving, so
mean IoU is what tells the epochs apart (and the harder of the two targets). Top-1 and the
share of boxes with IoU >= 0.5 are reported beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.manifest import InputSpec, OutputSpec
from ...runtime.preprocess import fit
from ...runtime.tasks.localize import TARGET, metrics
from ..checkpoint import unwrap
from ..config import TrainConfig
from ..data import build_dataset, load_coco
from ..data.check import Report, check_coco
from ..data.lazy import LazyImages
from ..models.localize import build_localizer
from .architectures import register_model
from .base import Baseline, TrainTask
from .inputs import channel_stats, flip_choice, mirror, mirror_boxes, random_resample, to_input

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 8000, "val": 1000, "test": 1000},
              False: {"train": 30000, "val": 2000, "test": 2000}}
IMAGE_SIZE = 64
#: Digit height as a fraction of the image side: from a fifth of it to most of it.
DIGIT_SCALE = (0.3, 0.8)


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """64×64 scenes with one digit each, of widely varying size and position."""
    return build_dataset(out_dir, name="localize", splits=DATA_SIZES[quick], image_size=IMAGE_SIZE,
                         digit_scale=DIGIT_SCALE, seed=seed, progress=progress)


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="localize", model="resnet", epochs=8 if quick else 30, lr=0.05)


@register_model("localize", "resnet")
def resnet(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    return build_localizer(kwargs, len(classes))


def load_split(data_dir: str | Path, split: str, spec: InputSpec) -> tuple[LazyImages, torch.Tensor, torch.Tensor, list[str]]:
    """Images fitted to ``spec`` (uint8 ``[N, H, W, 3]``), labels int64 ``[N]``, boxes float32 ``[N, 4]``
    (x1, y1, x2, y2 of the COCO bbox in the input, normalised by its size) and the class names."""
    data = load_coco(data_dir, split)
    categories = data.categories
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    labels, boxes = [], []
    for image, annotation in zip(data.images, data.single_annotations()):
        x, y, w, h = annotation["bbox"]
        labels.append(index_of[annotation["category_id"]])
        boxes.append(fit(image["height"], image["width"], spec).to_input([x, y, x + w, y + h])
                     / np.array([spec.width, spec.height] * 2))
    return (LazyImages(data.image_paths, spec), torch.tensor(labels, dtype=torch.int64),
            torch.from_numpy(np.array(boxes, np.float32).reshape(-1, 4)), [c["name"] for c in categories])


class Task(TrainTask):
    """One object per image (the built-in digits on real backgrounds, or a COCO dataset); metric
    mean IoU (top-1 beside it)."""

    name = "localize"
    metric = "mean_iou"
    resize = "letterbox"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        self.spec = self.fitted_input(config)
        self.splits = {}
        for split in ("train", "val", "test"):
            images, labels, boxes, classes = load_split(data_dir, split, self.spec)
            self.splits[split] = (images, labels, boxes)
        self.classes = classes
        self.mean, self.std = channel_stats(self.splits["train"][0].sample())
        self.flip = self.mirrors(data_dir, config)

    def __len__(self) -> int:
        return len(self.splits["train"][1])

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """COCO json with exactly one boxed object per image."""
        check_coco(data_dir, split, report, one_object=True)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, labels, boxes = (t[indices] for t in self.splits["train"])
        flipped = flip_choice(len(indices), generator, self.flip)
        images, boxes = mirror(images, flipped), torch.where(flipped[:, None], mirror_boxes(boxes, 1.0), boxes)
        logits, predicted = model(to_input(random_resample(images, generator), self.mean, self.std))
        return unwrap(model).loss(logits, predicted, labels, boxes)

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[N, K]`` and normalised boxes ``[N, 4]`` for a whole split."""
        images = self.splits[split][0]
        model.eval()
        outputs = [model(to_input(images[i:i + batch_size], self.mean, self.std))
                   for i in range(0, len(images), batch_size)]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        logits, boxes = self.predict(model, split)
        _, labels, true_boxes = self.splits[split]
        targets = np.zeros(len(labels), TARGET)
        targets["label"], targets["box"] = labels.numpy(), true_boxes.numpy()
        return {**metrics(logits.numpy(), boxes.numpy(), targets), "images": len(labels)}

    def baseline(self, split: str) -> Baseline:
        _, train_labels, train_boxes = self.splits["train"]
        _, labels, boxes = self.splits[split]
        targets = np.zeros(len(labels), TARGET)
        targets["label"], targets["box"] = labels.numpy(), boxes.numpy()
        logits = np.zeros((len(labels), len(self.classes)), np.float32)
        logits[:, int(torch.bincount(train_labels, minlength=len(self.classes)).argmax())] = 1
        mean_box = np.broadcast_to(train_boxes.mean(0).numpy(), boxes.shape)
        return Baseline("mean_iou", metrics(logits, mean_box, targets)["mean_iou"], "the mean training box")

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ["batch", len(self.classes)],
                           "unnormalised class scores; softmax gives probabilities over `classes`"),
                OutputSpec("boxes", ["batch", 4],
                           "the object's box (x1, y1, x2, y2) normalised by the input width and height, "
                           "in [0, 1]; multiply by the original image's width and height for pixels")]

    def postprocess_defaults(self) -> dict:
        return {}
