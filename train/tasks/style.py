"""Style transfer: a feed-forward transform network trained with Gatys' losses for one style.

Data (:func:`build_data`): the photos of ``visionrt.train.data.photos`` as content images
(``images/<split>/``, longer side at most :data:`PHOTO_SIDE` px) and one style image
(``style.png``: the immunohistochemistry slide, brown and blue brush-like strokes), which is
left out of the content photos. Training sees random crops of the training photos; val and
test photos are whole held-out images.

Loss: ``STYLE_WEIGHT · style + CONTENT_WEIGHT · content`` (relative Gram and feature
distances over a fixed random VGG-like network, see ``visionrt.runtime.tasks.style``). Metric:
``style_reduction``, the style loss of the content photo itself over that of the network's
output (higher is better); the content loss says how much of the photo is kept.

Or one's own: ``DIR/style.jpg`` (any image extension; the longer side shrunk to
:data:`STYLE_SIDE`) and content photos in ``DIR/images/<split>/`` or ``DIR/images/`` (split by
ratio, see :func:`visionrt.runtime.folders.read_photo_folder`), their longer side shrunk to at most
:data:`USER_PHOTO_SIDE`. The photos are held in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ...runtime.errors import VisionRTError
from ...runtime.folders import SPLITS, read_photo_folder
from ...runtime.manifest import InputSpec, OutputSpec
from ...runtime.images import load_image, to_float, to_uint8
from ...runtime.tasks.style import BENCH_SIDES, OUTPUT, LossNetwork, style_image, summarise
from ..config import TrainConfig
from ..data.check import Report, check_photo_folder
from ..data.photos import (dataset_info, load_photo, photo_splits, read_png, read_split, save_png, shrink,
                           write_bench_inputs, write_photo_dataset)
from ..models.style import CONTENT_WEIGHT, STYLE_WEIGHT, GatysLoss, TransformNet
from .architectures import register_model
from .base import TrainTask

#: The style image (a photo name of ``visionrt.train.data.photos``) and its longer side (px).
STYLE_PHOTO, STYLE_SIDE = "ihc", 256
#: Content photos: longer side at most this many pixels (quick, full).
PHOTO_SIDE = {True: 256, False: 384}
#: Content photos of one's own: longer side at most this many pixels.
USER_PHOTO_SIDE = 512
#: Training crops per epoch, and their side (px).
CROPS_PER_EPOCH, CROP = 256, 128
#: Sides the runtime accepts (px); the engine's profile spans them.
MIN_SIDE, OPT_SIDE, MAX_SIDE = 16, 256, 1024


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """Write the content photos and the style image (deterministic: ``seed`` is unused)."""
    splits = photo_splits(exclude=(STYLE_PHOTO,))
    total = sum(map(len, splits.values()))

    def write(root: Path) -> dict:
        save_png(root / "style.png", load_photo(STYLE_PHOTO, STYLE_SIDE))
        done = 0
        for split, names in splits.items():
            for name in names:
                save_png(root / "images" / split / f"{name}.png", load_photo(name, PHOTO_SIDE[quick]))
                done += 1
                if progress is not None:
                    progress(done, total)
        write_bench_inputs(root, load_photo(splits["test"][0], max(BENCH_SIDES)), BENCH_SIDES)
        return {"style": STYLE_PHOTO}

    config = {"name": "style", "style": STYLE_PHOTO, "style_side": STYLE_SIDE, "max_side": PHOTO_SIDE[quick],
              "splits": splits, "bench_sides": list(BENCH_SIDES)}
    return write_photo_dataset(out_dir, config, write)


def default_config(quick: bool = True) -> TrainConfig:
    return TrainConfig(task="style", model="transform",
                       model_kwargs={"width": 16, "blocks": 3} if quick else {"width": 32, "blocks": 5},
                       epochs=3 if quick else 30, batch_size=4, lr=2e-3, optimizer="adam", weight_decay=0.0,
                       patience=3 if quick else 6)


@register_model("style", "transform")
def transform(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
    return TransformNet(**kwargs)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[1, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(to_float(image))[None]


class Task(TrainTask):
    """Random crops of the content photos, one fixed style; metric: style loss reduction."""

    name = "style"
    metric = "style_reduction"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        if (Path(data_dir) / "dataset.json").is_file():
            info = dataset_info(data_dir, "style", fix="build one with `visionrt data --task style --out DIR`, or "
                                                       "pass a folder with style.jpg and images/")
            self.style_name = info["style"]
            self.photos = {split: list(read_split(data_dir, "images", split).values()) for split in info["splits"]}
            style = read_png(Path(data_dir) / "style.png")
        else:
            path = style_image(data_dir)
            self.style_name, style = path.stem, shrink(load_image(path), STYLE_SIDE)
            self.photos = {split: [shrink(load_image(p), USER_PHOTO_SIDE)
                                   for p in read_photo_folder(Path(data_dir) / "images", split)] for split in SPLITS}
        self.classes: list[str] = []
        self.crops = [_at_least(photo, CROP) for photo in self.photos["train"]]
        self.network = LossNetwork()
        self.objective = GatysLoss(self.network, to_tensor(style)[0])

    def __len__(self) -> int:
        return CROPS_PER_EPOCH

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """A style image beside content photos in ``DIR/images/``, each at least :data:`MIN_SIDE` px a side."""
        if split == SPLITS[0]:
            try:
                style_image(data_dir)
            except VisionRTError as err:
                report.problem(data_dir, "has no style image", err.fix)
        check_photo_folder(data_dir / "images", split, report, min_side=MIN_SIDE)

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gatys' objective on a ``CROP``² crop (mirrored at random) of photo ``i mod photos`` per sample."""
        crops = []
        for index in indices.tolist():
            photo = self.crops[index % len(self.crops)]
            y = int(torch.randint(0, photo.shape[0] - CROP + 1, (1,), generator=generator))
            x = int(torch.randint(0, photo.shape[1] - CROP + 1, (1,), generator=generator))
            crop = photo[y:y + CROP, x:x + CROP]
            crops.append(crop[:, ::-1] if torch.randint(0, 2, (1,), generator=generator) else crop)
        batch = torch.from_numpy(np.stack([to_float(c) for c in crops]))
        total, _, _ = self.objective(model(batch), batch)
        return total.mean()

    @torch.no_grad()
    def stylise(self, model: nn.Module, split: str) -> list[np.ndarray]:
        """The model's uint8 output for every photo of ``split``, one at a time (sizes differ)."""
        model.eval()
        return [to_uint8(model(to_tensor(photo))[0].numpy()) for photo in self.photos[split]]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Style and content losses of the (uint8) outputs on whole photos, as the runtime computes
        them in numpy (see ``visionrt.runtime.tasks.style.evaluate``)."""
        rows = []
        for output, photo in zip(self.stylise(model, split), self.photos[split]):
            x, content = to_tensor(output), to_tensor(photo)
            _, style, kept = self.objective(x, content)
            _, content_style, _ = self.objective(content, content)
            rows.append({"style_loss": style.item(), "content_style_loss": content_style.item(),
                         "content_loss": kept.item()})
        return summarise(rows)

    def input_spec(self) -> InputSpec:
        return InputSpec(channels=3, height=None, width=None)

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec(OUTPUT, ["batch", 3, "height", "width"],
                           f"the input photo in the style of '{self.style_name}', RGB in [0, 1] (x255 for uint8)")]

    def postprocess_defaults(self) -> dict:
        """Style name, loss network and weights (for evaluation), accepted sides."""
        return {"style": self.style_name, "loss_network": self.network.to_dict(),
                "loss_weights": {"style": STYLE_WEIGHT, "content": CONTENT_WEIGHT},
                "min_side": MIN_SIDE, "max_side": MAX_SIDE}

    def build_profile(self) -> dict:
        """Batch and H/W of the input that span the accepted sides."""
        sides = [MIN_SIDE, OPT_SIDE, MAX_SIDE]
        return {"min_batch": 1, "opt_batch": 1, "max_batch": 8, "height": sides, "width": sides}

    def train_sources(self) -> list:
        return []  # photos held in memory


def _at_least(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` enlarged (bicubic) if needed so that both sides are at least ``side``."""
    h, w = image.shape[:2]
    factor = side / min(h, w)
    if factor <= 1:
        return image
    size = (max(side, round(w * factor)), max(side, round(h * factor)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
