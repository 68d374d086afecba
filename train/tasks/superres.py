"""Super-resolution: real photos, random patches, SRCNN / FSRCNN / VDSR, PSNR and SSIM vs bicubic.

Colour: the networks work on **RGB** (3 channels in, 3 out) rather than on the luma (Y) channel
the papers train on. The deployed graph then maps an RGB image to an RGB image with nothing
around it (no colour conversion, no separate bicubic chroma path, which FSRCNN's low-resolution
input would otherwise need inside the graph), and the metrics are those of the image a user
sees. Dong et al. (SRCNN, TPAMI 2016, Sec. 4.4) report RGB training on a par with Y-only.

Data (:func:`build_data`): one dataset per scale, ``<out>/x2`` and ``<out>/x3``: the photos of
``visionrt.train.data.photos`` cropped to a multiple of the scale (``hr/``) and their antialiased
bicubic downscales (``images/``, what the model is given). Test photos are whole held-out
images. The scale is a property of the dataset: a model trained on ``x3`` is a ×3 model.

Or a folder of one's own high-resolution photos (``DIR/<split>/*.jpg`` or ``DIR/*.jpg``, see
:func:`visionrt.runtime.folders.read_photo_folder`), degraded the same way: each photo cropped
(bottom/right) to a multiple of the scale, then Pillow's antialiased bicubic downscale
(:func:`~visionrt.runtime.tasks.superres.downscale_bicubic`). Its scale is ``model_kwargs["scale"]``
(default 2). The photos are held in memory.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ...runtime.folders import SPLITS, read_photo_folder
from ...runtime.manifest import InputSpec, OutputSpec
from ...runtime.images import load_image, to_uint8
from ...runtime.tasks.superres import (BENCH_SIDES, OUTPUT, degrade, downscale_bicubic, quality, shave,
                                       upscale_bicubic)
from ..config import TrainConfig
from ..data.check import Report, check_photo_folder
from ..data.errors import DatasetError
from ..data.photos import (dataset_info, load_photo, photo_splits, read_split, save_png, write_bench_inputs,
                           write_photo_dataset)
from ..models.superres import FSRCNN, SRCNN, SUPPORTED_SCALES, VDSR, supported_scale
from .architectures import Builder, register_model
from .base import TrainTask

#: Datasets written by :func:`build_data`, one per scale.
SCALES = (2, 3)
#: Photos are shrunk so that their longer side is at most this (pixels, high resolution).
PHOTO_SIDE = 512
#: Training patches per epoch (random photo crops; an epoch is this many samples).
PATCHES_PER_EPOCH = 2048
#: High-resolution side of a training patch, about (rounded down to a multiple of the scale).
PATCH = 48
#: Sides (low-resolution pixels) the runtime accepts; the engine's profile spans them.
MIN_SIDE, MAX_OUTPUT_SIDE, OPT_SIDE = 8, 2048, 256
#: The scale of a model trained on a folder of photos when ``model_kwargs`` names none.
DEFAULT_SCALE = 2


def build_data(out_dir: str | Path, quick: bool = True, seed: int = 0, progress=None) -> Path:
    """Write ``out_dir/x<s>`` for every ``s`` in :data:`SCALES`; return the ×2 dataset.

    Deterministic (``seed`` is unused: nothing is random); ``quick`` and full share the data.
    """
    out_dir = Path(out_dir)
    splits = photo_splits()
    for scale in SCALES:
        config = {"name": "superres", "scale": scale, "max_side": PHOTO_SIDE, "splits": splits,
                  "bench_sides": list(BENCH_SIDES)}
        write = functools.partial(_write_scale, scale=scale, splits=splits, progress=progress)
        write_photo_dataset(out_dir / f"x{scale}", config, write)
    return out_dir / "x2"


def _write_scale(root: Path, scale: int, splits: dict[str, list[str]], progress) -> dict:
    """Originals (``hr/``), their ×``scale`` bicubic downscales (``images/``) and benchmark inputs."""
    photos = [(split, name) for split, names in splits.items() for name in names]
    for done, (split, name) in enumerate(photos, start=1):
        hr = load_photo(name, PHOTO_SIDE, multiple=scale)
        save_png(root / "hr" / split / f"{name}.png", hr)
        save_png(root / "images" / split / f"{name}.png", downscale_bicubic(hr, scale))
        if progress is not None:
            progress(done, len(photos))
    write_bench_inputs(root, load_photo(splits["test"][0], PHOTO_SIDE), BENCH_SIDES)
    return {"scale": scale}


def read_photos(data_dir: str | Path, scale: int) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """A folder of high-resolution photos, per split: the photos cropped to a multiple of ``scale``
    and their bicubic downscales (:func:`~visionrt.runtime.tasks.superres.degrade`);
    :class:`DatasetError` for a scale the networks lack or a photo smaller than a training patch."""
    if not (isinstance(scale, int) and not isinstance(scale, bool) and scale in SUPPORTED_SCALES):
        raise DatasetError(f"super-resolution scale must be 2, 3 or 4, got {scale!r}",
                           fix="set model_kwargs: {scale: 2} (or 3, 4) in the --config file")
    hr, lr = {}, {}
    for split in SPLITS:
        hr[split], lr[split] = [], []
        for path in read_photo_folder(data_dir, split):
            photo = load_image(path)
            if min(photo.shape[:2]) < PATCH:
                raise DatasetError(f"{path} is {photo.shape[1]}×{photo.shape[0]} px, smaller than a training "
                                   f"patch ({PATCH} px)", fix=f"remove it or use photos of at least {PATCH} px a side")
            low, high = degrade(photo, scale)
            lr[split].append(low)
            hr[split].append(high)
    return hr, lr


def default_config(quick: bool = True) -> TrainConfig:
    """VDSR with Adam (the scale comes from the dataset); the quick run with 16 channels instead of
    the paper's 64."""
    return TrainConfig(task="superres", model="vdsr", model_kwargs={"width": 16 if quick else 64},
                       epochs=4 if quick else 40, batch_size=16, lr=1e-3, optimizer="adam", weight_decay=0.0,
                       patience=3 if quick else 8)


def at_scale(network: Callable[..., nn.Module]) -> Builder:
    """The builder of ``network(scale, **kwargs)``: the upscaling factor is ``model.kwargs["scale"]``."""
    return lambda kwargs, classes, postprocess: network(supported_scale(kwargs.pop("scale")), **kwargs)


register_model("superres", "srcnn")(at_scale(SRCNN))
# FSRCNN's quick run: 4 epochs end at ×2 +0.70 dB (val still rising); 20 reach ×2 +1.16, ×3 +0.86 (45 s)
register_model("superres", "fsrcnn", quick={"epochs": 20})(at_scale(FSRCNN))
register_model("superres", "vdsr")(at_scale(VDSR))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` (or one ``[H, W, 3]``) -> float32 ``[N, 3, H, W]`` in [0, 1]."""
    x = torch.from_numpy(np.array(images))  # a writable copy
    x = x[None] if x.ndim == 3 else x
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class Task(TrainTask):
    """Random patches of the training photos; metric: PSNR gain over bicubic (dB) on whole photos."""

    name = "superres"
    metric = "psnr_gain"

    def __init__(self, data_dir: str | Path, config: TrainConfig | None = None):
        if (Path(data_dir) / "dataset.json").is_file():
            info = dataset_info(data_dir, "superres", fix="build one with `visionrt data --task superres --out DIR` "
                                                          "and pass DIR/x2 or DIR/x3, or pass a folder of photos")
            self.scale = int(info["scale"])
            self.hr = {split: list(read_split(data_dir, "hr", split).values()) for split in info["splits"]}
            self.lr = {split: list(read_split(data_dir, "images", split).values()) for split in info["splits"]}
        else:
            self.scale = (config.model_kwargs if config else {}).get("scale", DEFAULT_SCALE)
            self.hr, self.lr = read_photos(data_dir, self.scale)
        self.classes: list[str] = []
        self.bicubic = [upscale_bicubic(lr, self.scale) for lr in self.lr["train"]]
        self.lr_patch = PATCH // self.scale
        self.model_input = "lr"  # or "bicubic": what the network takes, set by build_model

    def __len__(self) -> int:
        return PATCHES_PER_EPOCH

    def build_model(self, config: TrainConfig) -> nn.Module:
        # The dataset decides the scale; it goes into model_kwargs, which the manifest records.
        scale = config.model_kwargs.setdefault("scale", self.scale)
        if scale != self.scale:
            raise DatasetError(f"the model is configured for ×{scale} but the dataset is ×{self.scale}",
                               fix=f"train on the x{scale} dataset, or drop 'scale' from model_kwargs")
        model = super().build_model(config)
        self.model_input = model.input_kind
        return model

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """A folder of photos (``DIR/`` or the built-in ``DIR/hr/``), each at least a training patch a side."""
        check_photo_folder(data_dir / "hr" if (data_dir / "dataset.json").is_file() else data_dir, split, report,
                           min_side=PATCH)

    def _inputs(self, split: str) -> list[np.ndarray]:
        lr = self.lr[split]
        if self.model_input == "lr":
            return lr
        return self.bicubic if split == "train" else [upscale_bicubic(x, self.scale) for x in lr]

    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MSE on random aligned patches (sample ``i`` comes from photo ``i mod photos``),
        each flipped and transposed at random (the 8 symmetries of the square)."""
        s, p = self.scale, self.lr_patch
        inputs, targets = [], []
        source = self._inputs("train")
        for index in indices.tolist():
            k = index % len(self.hr["train"])
            hr, x = self.hr["train"][k], source[k]
            y0 = int(torch.randint(0, hr.shape[0] // s - p + 1, (1,), generator=generator))
            x0 = int(torch.randint(0, hr.shape[1] // s - p + 1, (1,), generator=generator))
            target = hr[y0 * s:(y0 + p) * s, x0 * s:(x0 + p) * s]
            f = 1 if self.model_input == "lr" else s
            patch = x[y0 * f:(y0 + p) * f, x0 * f:(x0 + p) * f]
            flip, mirror, transpose = torch.randint(0, 2, (3,), generator=generator).tolist()
            for op, on in ((lambda a: a[::-1], flip), (lambda a: a[:, ::-1], mirror),
                           (lambda a: a.transpose(1, 0, 2), transpose)):
                if on:
                    target, patch = op(target), op(patch)
            inputs.append(patch)
            targets.append(target)
        return F.mse_loss(model(to_tensor(np.stack(inputs))), to_tensor(np.stack(targets)))

    @torch.no_grad()
    def upscale(self, model: nn.Module, split: str) -> list[np.ndarray]:
        """The model's uint8 output for every photo of ``split``, one at a time (sizes differ)."""
        model.eval()
        return [to_uint8(model(to_tensor(x))[0].numpy()) for x in self._inputs(split)]

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """PSNR/SSIM of the model and of bicubic with scikit-image's metrics (the runtime's numpy
        ones agree; tests check it)."""
        from skimage.metrics import peak_signal_noise_ratio, structural_similarity

        def psnr(a, b, border):
            return peak_signal_noise_ratio(shave(b, border), shave(a, border), data_range=255)

        def ssim(a, b, border):
            return structural_similarity(shave(a, border), shave(b, border), data_range=255, channel_axis=-1,
                                         gaussian_weights=True, sigma=1.5, use_sample_covariance=False)

        return quality(self.upscale(model, split), self.lr[split], self.hr[split], self.scale, psnr=psnr, ssim=ssim)

    def input_spec(self) -> InputSpec:
        return InputSpec(channels=3, height=None, width=None, resize="bicubic")

    def outputs(self) -> list[OutputSpec]:
        return [OutputSpec(OUTPUT, ["batch", 3, "out_height", "out_width"],
                           f"super-resolved RGB image in [0, 1] (clip, x255 for uint8), {self.scale}x the "
                           "low-resolution input's height and width")]

    def postprocess_defaults(self) -> dict:
        """Scale, what the network takes and the accepted low-resolution sides."""
        return {"scale": self.scale, "model_input": self.model_input, "min_side": MIN_SIDE,
                "max_side": MAX_OUTPUT_SIDE // self.scale}

    def build_profile(self) -> dict:
        """Batch and H/W of the network's input that span the accepted sides."""
        f = 1 if self.model_input == "lr" else self.scale
        sides = [MIN_SIDE * f, OPT_SIDE * f, MAX_OUTPUT_SIDE // self.scale * f]
        return {"min_batch": 1, "opt_batch": 1, "max_batch": 8, "height": sides, "width": sides}

    def train_sources(self) -> list:
        return []  # photos held in memory
