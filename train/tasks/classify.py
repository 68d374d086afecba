"""Image classification: data, model, loss, metric and manifest entries for the ``classify`` task."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.manifest import InputSpec, OutputSpec
from ..config import TrainConfig
from ..data import build_dataset, load_classification
from ..models.classify import ClassifierConfig, build_classifier

#: Images per split: the quick run fits a few CPU minutes; ``full`` trains longer on more data.
DATA_SIZES = {True: {"train": 6000, "val": 1000, "test": 1000},
              False: {"train": 20000, "val": 2000, "test": 2000}}


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """64×64 scenes with one digit each (see ``visionrt.train.data``)."""
    return build_dataset(out_dir, name="classify", splits=DATA_SIZES[quick], seed=seed, progress=progress)


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="classify", model="resnet", epochs=12 if quick else 30)


def build_model(model_entry: dict, classes: list[str]) -> nn.Module:
    return build_classifier(ClassifierConfig(model_entry["arch"], model_entry.get("kwargs", {})), len(classes))


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> normalised float32 ``[N, 3, H, W]``, as the runtime's preprocessing."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``[C]`` of uint8 ``[N, H, W, C]`` images scaled to [0, 1]: the
    normalisation a model is trained with and the manifest records."""
    scaled = images.float().div_(255.0)
    return scaled.mean(dim=(0, 1, 2)), scaled.std(dim=(0, 1, 2))


def random_shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Translate each uint8 ``[N, H, W, C]`` image by up to ``max_shift`` px (edge-replicated)."""
    n, h, w, _ = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), [max_shift] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    return out.permute(0, 2, 3, 1).to(torch.uint8)


class Task:
    """Digits on real backgrounds; metric top-1 accuracy."""

    name = "classify"
    metric = "top1"

    def __init__(self, data_dir: str | Path):
        self.splits = {}
        for split in ("train", "val", "test"):
            images, labels, classes = load_classification(data_dir, split)
            self.splits[split] = (torch.from_numpy(images), torch.from_numpy(labels))
        self.classes = list(classes)
        self.mean, self.std = channel_stats(self.splits["train"][0])

    def __len__(self) -> int:
        return len(self.splits["train"][1])

    def build_model(self, config: TrainConfig) -> nn.Module:
        return build_model({"arch": config.model, "kwargs": config.model_kwargs}, self.classes)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images, labels = self.splits["train"]
        x = to_input(random_shift(images[indices], generator), self.mean, self.std)
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

    def input_spec(self) -> InputSpec:
        _, h, w, c = self.splits["train"][0].shape
        return InputSpec(channels=c, height=h, width=w, mean=tuple(map(float, self.mean)),
                         std=tuple(map(float, self.std)))

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec("logits", ["batch", len(self.classes)],
                           "unnormalised class scores; softmax gives probabilities over `classes`")]

    def postprocess(self) -> dict:
        return {"top_k": min(5, len(self.classes))}
