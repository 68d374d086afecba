"""Preprocessing driven by the manifest's input spec: the same arithmetic as training."""
from __future__ import annotations

import numpy as np
from PIL import Image

from .manifest import InputSpec

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
