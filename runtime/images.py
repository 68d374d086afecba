"""Image decoding and validation: a path, encoded bytes or an array in; RGB uint8 ``[H, W, 3]`` out.

Grayscale inputs are converted to RGB by repeating the channel, RGBA/LA drop alpha,
palette and CMYK images are converted by Pillow; anything else is an :class:`InputError`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

ImageSource = Union[str, os.PathLike, bytes, np.ndarray]

MIN_SIDE = 8          # px; smaller images carry too little to classify
MAX_PIXELS = 64_000_000  # refuse decompression bombs and absurd arrays


def load_image(source: ImageSource) -> np.ndarray:
    """Decode ``source`` to a contiguous RGB uint8 array ``[H, W, 3]``."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), "image bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"image file {path} does not exist")
        if not path.is_file():
            raise InputError(f"{path} is not a file")
        with open(path, "rb") as f:
            return _decode(io.BytesIO(f.read()), str(path))
    raise InputError(f"cannot read an image from {type(source).__name__}: pass a path, bytes or a numpy array")


def _decode(stream: io.BytesIO, what: str) -> np.ndarray:
    try:
        with Image.open(stream) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"{what} is {image.width}×{image.height}: larger than {MAX_PIXELS} pixels")
            image.load()
            rgb = image.convert("RGB")
    except UnidentifiedImageError as err:
        raise InputError(f"{what} is not an image (or a format Pillow cannot read)") from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"{what} is corrupt or truncated: {err}") from err
    return _check_size(np.asarray(rgb), what)


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8 (0..255), got {array.dtype}",
                         fix="convert with (x * 255).clip(0, 255).astype(np.uint8) if x is in [0, 1]")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif not (array.ndim == 3 and array.shape[2] == 3):
        raise InputError(f"image array has shape {array.shape}; expected [H, W, 3] RGB "
                         "(or [H, W] / [H, W, 1] gray, [H, W, 4] RGBA)")
    return _check_size(np.ascontiguousarray(array), "image array")


def _check_size(array: np.ndarray, what: str) -> np.ndarray:
    h, w = array.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{what} is {w}×{h} px; at least {MIN_SIDE}×{MIN_SIDE} is needed")
    if h * w > MAX_PIXELS:
        raise InputError(f"{what} is {w}×{h}: larger than {MAX_PIXELS} pixels")
    return array


def to_float(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [0, 1]."""
    return image.transpose(2, 0, 1).astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A model's image output ``[3, H, W]`` float in [0, 1] -> RGB uint8 ``[H, W, 3]`` (clipped, rounded)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
