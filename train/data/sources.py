"""Real images shipped inside packages: handwritten digits (objects) and photos (backgrounds).

Nothing is downloaded. Both sources are loaded once per process (``lru_cache``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import DatasetError

DIGIT_CLASSES = tuple(str(c) for c in range(10))

#: Which twentieths of each digit class go to each split's pool (70/15/15).
_SPLIT_TWENTIETHS = {"train": range(0, 14), "val": range(14, 17), "test": range(17, 20)}
SPLITS = tuple(_SPLIT_TWENTIETHS)

#: ``skimage.data`` photos and textures used as backgrounds (name -> loader attribute).
SKIMAGE_BACKGROUNDS = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field",
    "retina", "ihc", "coins", "camera", "horse", "brick", "grass", "gravel",
)
#: Backgrounds are downscaled at load so that their longer side is at most this (pixels).
MAX_BACKGROUND_SIDE = 512


@dataclass(frozen=True)
class DigitPool:
    """The digits of one split: ``images`` float32 [N, 8, 8] in [0, 1] (ink = 1),
    ``labels`` int64 [N] in 0..9, ``indices`` int64 [N] into ``sklearn.datasets.load_digits()``."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}", fix=f"use one of {', '.join(SPLITS)}")


@functools.lru_cache(maxsize=None)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=None)
def digit_pool(split: str) -> DigitPool:
    """The digits reserved for ``split``; the three pools are disjoint and stratified.

    Within each class, the r-th sample in ``load_digits()`` order goes to train if
    ``r % 20 < 14``, to val if ``r % 20 < 17``, else to test (70/15/15).
    """
    check_split(split)
    images, labels = _digits()
    rank = np.zeros(len(labels), dtype=np.int64)  # position of each sample within its class
    for c in range(len(DIGIT_CLASSES)):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    indices = np.flatnonzero(np.isin(rank % 20, _SPLIT_TWENTIETHS[split]))
    return DigitPool(images[indices], labels[indices], indices)


def _load_background(name: str) -> np.ndarray:
    """One background as uint8 [H, W, 3]; gray and binary images become RGB."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    from skimage import data

    if name == "motorcycle_left":
        image = data.stereo_motorcycle()[0]
    elif name == "ihc":
        image = data.immunohistochemistry()
    else:
        image = getattr(data, name)()
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


@functools.lru_cache(maxsize=None)
def backgrounds() -> tuple[Image.Image, ...]:
    """All background photos as RGB PIL images, longer side at most ``MAX_BACKGROUND_SIDE``.

    Order: ``SKIMAGE_BACKGROUNDS`` then sklearn's sample images (china, flower).
    """
    images = []
    for name in (*SKIMAGE_BACKGROUNDS, "china", "flower"):
        image = Image.fromarray(_load_background(name))
        image.thumbnail((MAX_BACKGROUND_SIDE, MAX_BACKGROUND_SIDE), Image.Resampling.LANCZOS)
        images.append(image)
    return tuple(images)
