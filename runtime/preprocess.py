"""Preprocessing driven by the manifest's input spec: the same arithmetic as training."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import InputError
from .manifest import InputSpec, Manifest

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def resize(image: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """RGB uint8 ``[h, w, 3]`` -> ``[height, width, 3]`` (no-op when already that size)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), _RESAMPLE[method]))


def normalise(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, H, W]``: ``(x / 255 - mean) / std`` per channel."""
    x = images.astype(np.float32) / np.float32(255.0)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Decoded RGB images (any sizes) -> the model's input batch ``[N, 3, H, W]`` float32."""
    if spec.height is None:
        sizes = {im.shape[:2] for im in images}
        if len(sizes) > 1:
            raise ValueError("images of different sizes cannot share a batch for a model without a fixed size")
        return normalise(np.stack(images), spec)
    return normalise(np.stack([resize(im, spec.height, spec.width, spec.resize) for im in images]), spec)


def model_input(images: list[np.ndarray], manifest: Manifest) -> np.ndarray:
    """Decoded RGB images -> the model's input batch: the task's own ``prepare(image, manifest)``
    first where its runtime module has one (e.g. super-resolution's bicubic upscale), then
    :func:`preprocess`."""
    from .tasks import task_module

    prepare = getattr(task_module(manifest.task), "prepare", None)
    if prepare is not None:
        images = [prepare(image, manifest) for image in images]
    return preprocess(images, manifest.input)


def require_detail(image: np.ndarray, spec: InputSpec, fraction: float = 0.5) -> np.ndarray:
    """``image`` unchanged if its shorter side is at least ``fraction`` of the model's fixed input
    side, else an :class:`InputError`: enlarged more than that, the image is a blur."""
    need = int(np.ceil(fraction * min(spec.height, spec.width)))
    h, w = image.shape[:2]
    if min(h, w) < need:
        raise InputError(f"image is {w}×{h} px; this model needs at least {need} px on the shorter side "
                         f"(its input is {spec.width}×{spec.height})", fix="pass a larger image")
    return image


def require_sides(image: np.ndarray, min_side: int, max_side: int,
                  limit: str = "the engine's optimisation profile", fix: str = "shrink it first") -> np.ndarray:
    """``image`` unchanged if both sides are within ``[min_side, max_side]`` px (a model for
    images of any size, bounded by its engine's optimisation profile), else an
    :class:`InputError`; ``limit`` says what the maximum stands for."""
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise InputError(f"image is {w}×{h} px; this model needs at least {min_side} px per side",
                         fix="pass a larger image")
    if max(h, w) > max_side:
        raise InputError(f"image is {w}×{h} px; this model takes at most {max_side} px per side "
                         f"({limit})", fix=fix)
    return image
