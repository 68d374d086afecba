"""Image classification: data, model, loss, metric and manifest entries for the ``classify`` task."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.folders import is_image_folder
from ...runtime.manifest import OutputSpec
from ..config import TrainConfig
from ..data import build_dataset
from ..data.check import Report, check_image_folder
from ..data.imagefolder import classification_split
from ..models.classify import DenseNet, InceptionNet, ResNet
from .architectures import per_class, register_model
from .base import Baseline, TrainTask
from .inputs import channel_stats, flip_choice, mirror, random_shift, to_input

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 6000, "val": 1000, "test": 1000},
              False: {"train": 20000, "val": 2000, "test": 2000}}


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """64×64 scenes with one digit each (see ``visionrt.train.data``)."""
    return build_dataset(out_dir, name="classify", splits=DATA_SIZES[quick], seed=seed, progress=progress)


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="classify", model="resnet", epochs=12 if quick else 30)


register_model("classify", "resnet")(per_class(ResNet))
register_model("classify", "inception")(per_class(InceptionNet))
register_model("classify", "densenet")(per_class(DenseNet))


class Task(TrainTask):
    """An ImageFolder or the built-in digits on real backgrounds; metric top-1 accuracy."""

    name = "classify"
    metric = "top1"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        self.spec = self.fitted_input(config)
        self.splits = {}
        for split in ("train", "val", "test"):
            images, labels, classes = classification_split(data_dir, split, self.spec)
            self.splits[split] = (images, labels)
        self.classes = list(classes)
        self.mean, self.std = channel_stats(self.splits["train"][0].sample())
        self.flip = self.mirrors(data_dir, config)

    def __len__(self) -> int:
        return len(self.splits["train"][1])

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """An ImageFolder, else COCO json."""
        if is_image_folder(data_dir):
            check_image_folder(data_dir, split, report)
        else:
            super().check_split(data_dir, split, report)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, labels = self.splits["train"]
        batch = mirror(images[indices], flip_choice(len(indices), generator, self.flip))
        x = to_input(random_shift(batch, generator), self.mean, self.std)
        return F.cross_entropy(model(x), labels[indices])

    @torch.no_grad()
    def predict_logits(self, model: nn.Module, split: str, batch_size: int = 256) -> torch.Tensor:
        images = self.splits[split][0]
        model.eval()
        return torch.cat([model(to_input(images[i:i + batch_size], self.mean, self.std))
                          for i in range(0, len(images), batch_size)])

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        logits = self.predict_logits(model, split)
        labels = self.splits[split][1]
        return {"top1": float((logits.argmax(1) == labels).float().mean()), "images": len(labels)}

    def baseline(self, split: str) -> Baseline:
        majority = int(torch.bincount(self.splits["train"][1], minlength=len(self.classes)).argmax())
        return Baseline("top1", float((self.splits[split][1] == majority).float().mean()),
                        f"the most frequent training class ({self.classes[majority]})")

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ["batch", len(self.classes)],
                           "unnormalised class scores; softmax gives probabilities over `classes`")]

    def postprocess_defaults(self) -> dict:
        return {"top_k": min(5, len(self.classes))}
