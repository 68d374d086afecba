"""Image decoding and validation: a path, encoded bytes or an array in; RGB uint8 ``[H, W, 3]`` out.

This is the one decoder of the project: training, the runtime and the server all read
images through :func:`load_image`, so they agree on every rule below.

* **Limits, checked before the work they bound.** A file's size is read with ``stat``
  before its bytes are (``MAX_FILE_BYTES``, also applied to encoded bytes), and the
  pixel count from the header before any pixel is decoded (``MAX_PIXELS``, also applied
  to arrays). Raise them per call (``max_bytes=``, ``max_pixels=``) or for the process
  (assign the module attributes). Pillow's own bomb ceiling
  (``PIL.Image.MAX_IMAGE_PIXELS``) still applies above about 89 MP.
* **Orientation.** The EXIF orientation is applied (as a photo viewer shows it).
* **Modes.** 16-bit and 32-bit integer grayscale (``I;16``, ``I;16B``, ``I``) are scaled
  from 0..65535 to 0..255 (rounded, values outside clipped); 1-bit, ``L`` and CMYK
  become RGB as Pillow converts them; anything with transparency (``RGBA``, ``LA``,
  ``PA``, palette or gray images with a transparent colour) is composited **on white**,
  as a browser shows it, because the colour of fully transparent pixels is arbitrary.
  Floating-point images are refused (their range is unknown).
* **Failures** are :class:`InputError`: missing, not a file, too large, not an image,
  truncated (truncated files are never padded: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is not
  used) or corrupt. Pillow's ``DecompressionBombWarning`` is an error in this process (as
  Pillow's documentation recommends) and its other decoder warnings (e.g. corrupt EXIF)
  are silenced: a decode prints nothing.
* **Reduced decoding.** :func:`load_image_reduced` decodes a JPEG at 1/2, 1/4 or 1/8 of its
  size (libjpeg's DCT scaling, Pillow's ``Image.draft``) when the result still covers the size
  the caller needs: a model whose input is much smaller than the photo. Other formats and
  arrays come at full size.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from .errors import InputError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray]

MIN_SIDE = 8                     # px; smaller images carry too little to classify
MAX_PIXELS = 64_000_000          # default pixel limit (width × height): 64 MP
MAX_FILE_BYTES = 64 * 1024 ** 2  # default limit on a file's (or encoded bytes') size: 64 MiB

_GRAY_16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRANSPARENT = ("RGBA", "RGBa", "LA", "La", "PA")
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_LIMIT_FIX = "pass {arg}= to load_image or set visionrt.runtime.images.{name}"

warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def load_image(source: ImageSource, *, max_bytes: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Decode ``source`` to a contiguous RGB uint8 array ``[H, W, 3]``.

    ``max_bytes`` / ``max_pixels`` default to ``MAX_FILE_BYTES`` / ``MAX_PIXELS``.
    """
    return load_image_reduced(source, None, max_bytes=max_bytes, max_pixels=max_pixels)[0]


def load_image_reduced(source: ImageSource, needs: Callable[[int, int], tuple[int, int] | None] | None, *,
                       max_bytes: int | None = None, max_pixels: int | None = None
                       ) -> tuple[np.ndarray, tuple[int, int]]:
    """``source`` decoded as :func:`load_image` does, but a JPEG at the smallest DCT reduction
    (1/2, 1/4, 1/8) that keeps it at least ``needs(height, width)`` px (``(height, width)`` of the
    full image as shown, EXIF orientation applied; ``needs`` or its answer ``None``: full size):
    ``(RGB uint8 [h, w, 3], the full image's (height, width))``."""
    max_bytes = MAX_FILE_BYTES if max_bytes is None else max_bytes
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, np.ndarray):
        image = _from_array(source, max_pixels)
        return image, image.shape[:2]
    if isinstance(source, (bytes, bytearray, memoryview)):
        _check_bytes(memoryview(source).nbytes, max_bytes, "image bytes")
        return _decode(bytes(source), "image bytes", max_pixels, needs)
    if isinstance(source, (str, os.PathLike)):
        return _decode(_read_file(Path(source), max_bytes), str(source), max_pixels, needs)
    raise InputError(f"cannot read an image from {type(source).__name__}",
                     fix="pass a path, bytes or a uint8 numpy array")


def _read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, its size checked before they are read."""
    try:
        if not path.exists():
            raise InputError(f"image file {path} does not exist")
        if not path.is_file():
            raise InputError(f"{path} is not a file")
        with open(path, "rb") as f:
            _check_bytes(os.fstat(f.fileno()).st_size, max_bytes, str(path))
            data = f.read(max_bytes + 1)  # the file may grow between stat and read
    except (OSError, ValueError) as err:  # name too long, permission denied, NUL in the name, ...
        raise InputError(f"cannot read image file {str(path)[:200]!r}: {err}") from err
    _check_bytes(len(data), max_bytes, str(path))
    return data


def _check_bytes(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise InputError(f"{what} is {size / 1024 ** 2:.1f} MiB: larger than the {max_bytes / 1024 ** 2:.1f} MiB limit",
                         fix=_LIMIT_FIX.format(arg="max_bytes", name="MAX_FILE_BYTES"))


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise InputError(f"{what} is {width}×{height} = {width * height / 1e6:.1f} MP: larger than the "
                         f"{max_pixels / 1e6:.1f} MP limit", fix=_LIMIT_FIX.format(arg="max_pixels", name="MAX_PIXELS"))


def _decode(data: bytes, what: str, max_pixels: int, needs: Callable[[int, int], tuple[int, int] | None] | None
            ) -> tuple[np.ndarray, tuple[int, int]]:
    """Encoded ``data`` -> ``(RGB array, the full image's (height, width))``; a JPEG reduced as
    ``needs`` allows (:func:`load_image_reduced`)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.width, image.height, max_pixels, what)  # header only: nothing decoded yet
            size = (image.height, image.width)
            if needs is not None and image.format == "JPEG":
                turned = image.getexif().get(ExifTags.Base.Orientation) in _TURNED
                size = size[::-1] if turned else size
                at_least = needs(*size)
                if at_least is not None:  # Pillow's sizes are (width, height) as stored
                    image.draft(None, tuple(at_least if turned else at_least[::-1]))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no copy of the pixels
            array = _to_rgb(image, what)
    except InputError:
        raise
    except Image.UnidentifiedImageError as err:
        raise InputError(f"{what} is not an image (or a format Pillow cannot read)") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"{what}: {err}", fix="raise PIL.Image.MAX_IMAGE_PIXELS as well as MAX_PIXELS") from err
    except Exception as err:  # a parser of untrusted bytes: any failure means the bytes are bad
        raise InputError(f"{what} is corrupt or truncated: {type(err).__name__}: {err}") from err
    array = _check_size(array, what, max_pixels)
    return array, size


def _to_rgb(image: Image.Image, what: str) -> np.ndarray:
    """A decoded Pillow image of any mode -> RGB uint8 ``[H, W, 3]`` (rules in the module docstring)."""
    if image.mode in _GRAY_16:
        gray = np.asarray(image).astype(np.float32)
        gray = np.rint(np.clip(gray, 0, 65535) * (255 / 65535)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise InputError(f"{what} is a floating-point image: its value range is unknown",
                         fix="save it as an 8- or 16-bit image")
    if "transparency" in image.info and image.mode in ("1", "L", "P", "RGB"):  # a transparent colour
        image = image.convert("RGBA")
    if image.mode in _TRANSPARENT:
        image = _on_white(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _on_white(rgba: Image.Image) -> Image.Image:
    """An RGBA image composited on an opaque white background."""
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def _from_array(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InputError(f"image arrays must be uint8 (0..255), got {array.dtype}",
                         fix="convert with (x * 255).clip(0, 255).astype(np.uint8) if x is in [0, 1]")
    if not (array.ndim == 2 or array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        raise InputError(f"image array has shape {array.shape}; expected [H, W, 3] RGB "
                         "(or [H, W] / [H, W, 1] gray, [H, W, 4] RGBA)")
    _check_pixels(array.shape[1], array.shape[0], max_pixels, "image array")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:  # the same rule as a decoded RGBA file
        array = np.asarray(_on_white(Image.fromarray(np.ascontiguousarray(array), "RGBA")).convert("RGB"))
    return _check_size(np.ascontiguousarray(array), "image array", max_pixels)


def _check_size(array: np.ndarray, what: str, max_pixels: int) -> np.ndarray:
    """``array`` [H, W, 3] after checking both sides are at least ``MIN_SIDE`` and the pixel limit
    (which EXIF rotation does not change)."""
    h, w = array.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{what} is {w}×{h} px; at least {MIN_SIDE}×{MIN_SIDE} is needed")
    _check_pixels(w, h, max_pixels, what)
    return array


def to_float(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [0, 1]."""
    return image.transpose(2, 0, 1).astype(np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A model's image output ``[3, H, W]`` float in [0, 1] -> RGB uint8 ``[H, W, 3]`` (clipped, rounded)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
