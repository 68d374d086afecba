"""Deterministic scenes: handwritten digits pasted onto crops of real photos.

Every scene is drawn from its own RNG seeded by ``(seed, split, index)``, so any scene
can be regenerated alone, in any order, in any process.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import DatasetError
from .sources import SPLITS, backgrounds, check_split, digit_pool

#: Random positions tried per object before it is left out of a crowded scene.
PLACEMENT_TRIES = 20
#: Candidate fill colours drawn per object; the one farthest from the background wins.
COLOUR_CANDIDATES = 6


def check_image_size(size: tuple[int, int], smallest: int, purpose: str = "") -> None:
    """Refuse an ``image_size`` (height, width) whose shorter side is under ``smallest`` pixels."""
    if min(size) < smallest:
        raise DatasetError(f"image_size {size} is too small{purpose}", fix=f"use at least {smallest}x{smallest}")


def check_count_range(name: str, value: tuple[int, int]) -> None:
    """Refuse a count range ``(lo, hi)`` unless ``1 <= lo <= hi``."""
    if not 1 <= value[0] <= value[1]:
        raise DatasetError(f"{name} {value} is not a range 1 <= lo <= hi")


def check_fraction_range(name: str, value: tuple[float, float]) -> None:
    """Refuse a range ``(lo, hi)`` of fractions unless ``0 < lo <= hi <= 1``."""
    if not 0 < value[0] <= value[1] <= 1:
        raise DatasetError(f"{name} {value} is not a range 0 < lo <= hi <= 1")


@dataclass(frozen=True)
class SceneConfig:
    """How scenes look.

    image_size: (height, width) in pixels.
    objects_per_image: inclusive range of digits per scene; fewer are drawn when
        no position satisfies ``max_occlusion`` (never fewer than one).
    digit_scale: inclusive range of a digit's outer size (outline included) as a
        fraction of the image's shorter side.
    max_occlusion: largest fraction of an object that later objects may cover.
    """

    image_size: tuple[int, int] = (64, 64)
    objects_per_image: tuple[int, int] = (1, 1)
    digit_scale: tuple[float, float] = (0.45, 0.8)
    max_occlusion: float = 0.3

    def __post_init__(self):
        check_image_size(self.image_size, 16)
        check_count_range("objects_per_image", self.objects_per_image)
        check_fraction_range("digit_scale", self.digit_scale)
        if not 0 <= self.max_occlusion < 1:
            raise DatasetError(f"max_occlusion {self.max_occlusion} is not in [0, 1)")


@dataclass
class SceneObject:
    """One pasted object.

    category: class index (0..9 for digits).
    bbox: (x, y, w, h) in pixels, the tight box of ``mask`` (pixel edges, COCO convention).
    mask: bool [H, W], the visible part after occlusion by later objects.
    keypoints: float32 [K, 3] of (x, y, visibility) in COCO convention, or None for
        objects without keypoints (digits).
    """

    category: int
    bbox: tuple[float, float, float, float]
    mask: np.ndarray
    keypoints: np.ndarray | None = None


@dataclass
class Scene:
    """image: uint8 [H, W, 3] RGB; semantic: uint8 [H, W], 0 = background and
    c + 1 where category c is visible; objects in paint order (later ones on top)."""

    image: np.ndarray
    semantic: np.ndarray
    objects: list[SceneObject]


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    check_split(split)
    return np.random.default_rng([seed, SPLITS.index(split), index])


def make_scene(config: SceneConfig, seed: int, split: str, index: int) -> Scene:
    """Scene ``index`` of ``split``, drawing digits only from that split's pool."""
    rng = scene_rng(seed, split, index)
    height, width = config.image_size
    image = random_background(rng, height, width)
    pool = digit_pool(split)
    owner = np.full((height, width), -1, dtype=np.int16)  # index of the object seen at each pixel
    categories: list[int] = []
    full_areas: list[int] = []
    for _ in range(rng.integers(config.objects_per_image[0], config.objects_per_image[1] + 1)):
        k = rng.integers(len(pool.labels))
        ink, shape = _glyph(rng, pool.images[k], config.digit_scale, min(height, width))
        position = _place(rng, owner, shape, np.array(full_areas), config.max_occlusion)
        if position is None:
            continue
        y, x = position
        _paint(rng, image[y:y + shape.shape[0], x:x + shape.shape[1]], ink, shape)
        owner[y:y + shape.shape[0], x:x + shape.shape[1]][shape] = len(categories)
        categories.append(int(pool.labels[k]))
        full_areas.append(int(shape.sum()))
    objects = [_scene_object(c, owner == i) for i, c in enumerate(categories)]
    semantic = np.array([0, *(c + 1 for c in categories)], dtype=np.uint8)[owner + 1]
    return Scene(image=image, semantic=semantic, objects=objects)


def random_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random crop of a random photo resized to uint8 [height, width, 3], with a random
    horizontal flip and brightness factor in [0.7, 1.3]."""
    sources = backgrounds()
    photo = sources[rng.integers(len(sources))]
    # Largest crop with the output's aspect ratio, then shrunk to 20%..100% of it.
    fit = min(photo.width / width, photo.height / height) * rng.uniform(0.2, 1.0)
    crop_w, crop_h = width * fit, height * fit
    x0, y0 = rng.uniform(0, photo.width - crop_w), rng.uniform(0, photo.height - crop_h)
    crop = photo.resize((width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h))
    image = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.clip(image * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)


def _glyph(rng: np.random.Generator, digit: np.ndarray, scale: tuple[float, float], side: int):
    """Upsample an 8x8 digit (float in [0, 1]) smoothly.

    Returns ``ink`` float32 [h, w] in [0, 1] (the smooth strokes, zero outside ``shape``)
    and ``shape`` bool [h, w]: the strokes (ink >= 0.5) grown by an outline of
    ``max(1, h // 24)`` pixels; h, w <= ``side``.
    """
    outer_h = round(side * rng.uniform(*scale))
    outline = max(1, outer_h // 24)
    outer_h = max(outer_h, 8 + 2 * outline)  # never shrink the 8x8 digit: thin strokes vanish
    outer_w = max(round(outer_h * rng.uniform(0.8, 1.0)), 8 + 2 * outline)
    inner = Image.fromarray((digit * 255).astype(np.uint8)).resize(
        (outer_w - 2 * outline, outer_h - 2 * outline), Image.Resampling.BICUBIC)
    ink = np.pad(np.asarray(inner, dtype=np.float32) / 255, outline)
    shape = _dilate(ink >= 0.5, outline)
    return np.where(shape, ink, 0), shape


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """Grow a bool mask by ``steps`` pixels (3x3 square neighbourhood per step)."""
    for _ in range(steps):
        grown = mask.copy()
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        mask = grown.copy()
        mask[:, 1:] |= grown[:, :-1]
        mask[:, :-1] |= grown[:, 1:]
    return mask


def _place(rng, owner: np.ndarray, shape: np.ndarray, full_areas: np.ndarray, max_occlusion: float):
    """A top-left (y, x) that keeps ``shape`` inside the image and leaves every earlier
    object at least ``1 - max_occlusion`` of its full area visible; None if none is found."""
    height, width = owner.shape
    visible = np.bincount(owner[owner >= 0], minlength=len(full_areas))
    for _ in range(PLACEMENT_TRIES):
        y = int(rng.integers(height - shape.shape[0] + 1))
        x = int(rng.integers(width - shape.shape[1] + 1))
        below = owner[y:y + shape.shape[0], x:x + shape.shape[1]][shape]
        covered = np.bincount(below[below >= 0], minlength=len(full_areas))
        if np.all(visible - covered >= (1 - max_occlusion) * full_areas):
            return y, x
    return None


def _paint(rng, patch: np.ndarray, ink: np.ndarray, shape: np.ndarray) -> None:
    """Paint a glyph in place onto ``patch`` (uint8 [h, w, 3]): ``shape`` in black or
    white, then the ink blended over it in the candidate colour farthest from the
    background under the glyph; black or white is whichever contrasts with that colour."""
    background = patch[shape].astype(np.float32).mean(axis=0)
    candidates = rng.integers(0, 256, size=(COLOUR_CANDIDATES, 3))
    colour = candidates[np.argmax(np.linalg.norm(candidates - background, axis=1))]
    outline = 0.0 if colour @ np.array([0.299, 0.587, 0.114]) >= 128 else 255.0
    alpha = ink[shape][:, None]
    patch[shape] = np.rint(alpha * colour + (1 - alpha) * outline).astype(np.uint8)


def _scene_object(category: int, mask: np.ndarray) -> SceneObject:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    bbox = (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))
    return SceneObject(category=category, bbox=bbox, mask=mask)
