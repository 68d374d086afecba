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
from ...runtime.tasks.localize import TARGET, metrics
from ..checkpoint import unwrap
from ..config import TrainConfig
from ..data import build_dataset, load_single_objects
from ..models.localize import build_localizer
from .classify import channel_stats, to_input

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 8000, "val": 1000, "test": 1000},
              False: {"train": 30000, "val": 2000, "test": 2000}}
IMAGE_SIZE = 64
#: Digit height as a fraction of the image side: from a fifth of it to most of it.
DIGIT_SCALE = (0.3, 0.8)
ARCHITECTURES = ("resnet",)


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """64×64 scenes with one digit each, of widely varying size and position."""
    return build_dataset(out_dir, name="localize", splits=DATA_SIZES[quick], image_size=IMAGE_SIZE,
                         digit_scale=DIGIT_SCALE, seed=seed, progress=progress)


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="localize", model="resnet", epochs=8 if quick else 30, lr=0.05)


def build_model(model_entry: dict, classes: list[str]) -> nn.Module:
    if model_entry["arch"] not in ARCHITECTURES:
        raise ValueError(f"unknown localize model '{model_entry['arch']}' (choose from {', '.join(ARCHITECTURES)})")
    return build_localizer(model_entry.get("kwargs", {}), len(classes))


def load_split(data_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """Images uint8 ``[N, H, W, 3]``, labels int64 ``[N]``, boxes float32 ``[N, 4]`` (normalised
    x1, y1, x2, y2 of the COCO bbox) and the class names."""
    images, annotations, categories = load_single_objects(data_dir, split)
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    height, width = images.shape[1:3]
    labels = np.array([index_of[a["category_id"]] for a in annotations], np.int64)
    xywh = np.array([a["bbox"] for a in annotations], np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) / np.float32([width, height] * 2)
    return torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(boxes), [c["name"] for c in categories]


def random_resample(images: torch.Tensor, generator: torch.Generator, sizes: tuple[float, ...] = (0.5, 0.625, 0.75),
                    p: float = 0.5) -> torch.Tensor:
    """Blur uint8 ``[N, H, W, C]`` images as a resize to the model's input would: each, with
    probability ``p``, is shrunk to one of ``sizes`` (fractions of its size, antialiased) and
    enlarged back (bilinear). Normalised coordinates stay valid; the model learns to take images
    of other sizes than its input."""
    n, h, w, _ = images.shape
    choice = torch.randint(len(sizes), (n,), generator=generator)
    chosen = torch.rand(n, generator=generator) < p
    out = images.permute(0, 3, 1, 2).float()
    for k, size in enumerate(sizes):
        group = (chosen & (choice == k)).nonzero().flatten()
        if len(group):
            small = F.interpolate(out[group], scale_factor=size, mode="bilinear", antialias=True)
            out[group] = F.interpolate(small, size=(h, w), mode="bilinear")
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


class Task:
    """One digit per image on real backgrounds; metric mean IoU (top-1 beside it)."""

    name = "localize"
    metric = "mean_iou"

    def __init__(self, data_dir: str | Path):
        self.splits = {}
        for split in ("train", "val", "test"):
            images, labels, boxes, classes = load_split(data_dir, split)
            self.splits[split] = (images, labels, boxes)
        self.classes = classes
        self.mean, self.std = channel_stats(self.splits["train"][0])

    def __len__(self) -> int:
        return len(self.splits["train"][1])

    def build_model(self, config: TrainConfig) -> nn.Module:
        return build_model({"arch": config.model, "kwargs": config.model_kwargs}, self.classes)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, labels, boxes = (t[indices] for t in self.splits["train"])
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

    def input_spec(self) -> InputSpec:
        _, h, w, c = self.splits["train"][0].shape
        return InputSpec(channels=c, height=h, width=w, mean=tuple(map(float, self.mean)),
                         std=tuple(map(float, self.std)))

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ["batch", len(self.classes)],
                           "unnormalised class scores; softmax gives probabilities over `classes`"),
                OutputSpec("boxes", ["batch", 4],
                           "the object's box (x1, y1, x2, y2) normalised by the input width and height, "
                           "in [0, 1]; multiply by the original image's width and height for pixels")]

    def postprocess(self) -> dict:
        return {}
