"""Preprocessing driven by the manifest's input spec: the same arithmetic as training."""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from .errors import InputError
from .manifest import InputSpec, Manifest

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
#: ``InputSpec.resize``: stretch to the input with one of these interpolations; letterbox (keep
#: the aspect ratio, resize bilinearly so the whole image fits, centre on ``InputSpec.pad_value``
#: padding); or center-crop (keep the aspect ratio, resize bilinearly so the image covers the
#: input, keep its centre: classification's usual evaluation transform).
RESIZE_POLICIES = (*_RESAMPLE, "letterbox", "center-crop")
#: The policies that keep the aspect ratio (resized bilinearly, placed by ``Fit.pad``).
ASPECT_POLICIES = ("letterbox", "center-crop")


def resize(image: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """RGB uint8 ``[h, w, 3]`` (or a map ``[h, w]``) -> ``[height, width, ...]`` (no-op when already that size)."""
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), _RESAMPLE[method]))


def generated_images(spec: InputSpec, count: int, side: int = 224) -> list[np.ndarray]:
    """``count`` RGB uint8 images of ``spec``'s input size (``side`` square where it takes any size):
    smooth random colour fields, for benchmarks and checks of a model given no images."""
    coarse = np.random.default_rng(0).integers(0, 256, (count, 8, 8, 3), np.uint8)
    return [resize(image, spec.height or side, spec.width or side, "bilinear") for image in coarse]


def centre_square(image: np.ndarray, side: int) -> np.ndarray:
    """The largest centred square of an RGB uint8 image ``[H, W, 3]``, resized (bicubic) to ``[side, side, 3]``:
    a benchmark input of one size for models of any input size."""
    h, w = image.shape[:2]
    s = min(h, w)
    square = np.ascontiguousarray(image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s])
    return resize(square, side, side, "bicubic")


@dataclasses.dataclass(frozen=True)
class Fit:
    """Where an original image lands in the model input: input pixel = original pixel × ``scale`` +
    ``pad`` (per axis, x then y; negative where a centre crop cuts the image); the resized image is
    ``size`` = (height, width) input pixels."""

    scale: tuple[float, float]
    pad: tuple[int, int]
    size: tuple[int, int]

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """Points ``[..., 2]`` (or boxes ``[..., 4]``, x1 y1 x2 y2) in original pixels -> input pixels."""
        xy = np.asarray(xy, np.float64)
        reps = xy.shape[-1] // 2
        return xy * np.tile(self.scale, reps) + np.tile(self.pad, reps)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_input`."""
        xy = np.asarray(xy, np.float64)
        reps = xy.shape[-1] // 2
        return (xy - np.tile(self.pad, reps)) / np.tile(self.scale, reps)


def range_size(height: int, width: int, spec: InputSpec) -> tuple[int, int]:
    """The ``(height, width)`` an image of ``height × width`` px is fed at to a model whose sides span
    ``spec.size_range``: its own size where both sides are inside the range, else scaled (keeping
    its aspect where the range allows) into it; each side then the nearest multiple of ``spec.stride``
    inside the range."""
    low, high = spec.size_range
    stride = spec.stride
    scale = min(1.0, high / max(height, width))
    scale = max(scale, low / min(height, width))
    first, last = -(-low // stride) * stride, high // stride * stride

    def side(value: int) -> int:
        fed = min(max(round(value * scale), low), high)
        return min(max(round(fed / stride) * stride, first), last)

    return side(height), side(width)


def fit(height: int, width: int, spec: InputSpec) -> Fit:
    """How an image of ``height × width`` px fits ``spec``'s input (see :data:`RESIZE_POLICIES`; a model
    taking a range of sizes: :func:`range_size`, stretched)."""
    if spec.height is None:  # a model for any size: the image as it is, or fitted into its range
        size = (height, width) if spec.size_range is None else range_size(height, width, spec)
        return Fit((size[1] / width, size[0] / height), (0, 0), size)
    if spec.resize not in RESIZE_POLICIES:
        raise InputError(f"unknown resize policy {spec.resize!r} in the manifest",
                         fix=f"use one of {', '.join(RESIZE_POLICIES)}")
    if spec.resize not in ASPECT_POLICIES:
        return Fit((spec.width / width, spec.height / height), (0, 0), (spec.height, spec.width))
    if spec.resize == "letterbox":
        s = min(spec.height / height, spec.width / width)
        h, w = max(1, min(spec.height, round(height * s))), max(1, min(spec.width, round(width * s)))
    else:
        s = max(spec.height / height, spec.width / width)
        h, w = max(spec.height, round(height * s)), max(spec.width, round(width * s))
    return Fit((w / width, h / height), ((spec.width - w) // 2, (spec.height - h) // 2), (h, w))


def decode_size(height: int, width: int, spec: InputSpec) -> tuple[int, int] | None:
    """The smallest ``(height, width)`` an image of ``height × width`` px may be decoded at for
    ``spec``'s fixed input (``None``: full size, for models of any size): what its resize policy
    makes of it, and the shorter side never under half the input's shorter side (nor the
    image's), so :func:`require_detail` judges it as it would the full image."""
    if spec.height is None:
        return None
    h, w = fit(height, width, spec).size
    short = min(-(-min(spec.height, spec.width) // 2), height, width)
    return max(h, short), max(w, short)


def fit_image(image: np.ndarray, spec: InputSpec, pad_value: int | None = None, method: str | None = None) -> np.ndarray:
    """An RGB uint8 ``[h, w, 3]`` image (or a class map ``[h, w]``, with ``method="nearest"``) fitted to
    ``spec``'s input by its resize policy: the one resize of training, runtime and server alike.
    ``pad_value`` (default ``spec.pad_value``) fills a letterbox's border."""
    geometry = fit(*image.shape[:2], spec)
    method = method or ("bilinear" if spec.resize in ASPECT_POLICIES else spec.resize)
    resized = resize(image, *geometry.size, method)
    if spec.height is None or geometry.size == (spec.height, spec.width):
        return resized
    (x, y), (h, w) = geometry.pad, geometry.size
    if spec.resize == "center-crop":
        return np.ascontiguousarray(resized[-y:-y + spec.height, -x:-x + spec.width])
    out = np.full((spec.height, spec.width, *image.shape[2:]), spec.pad_value if pad_value is None else pad_value,
                  image.dtype)
    out[y:y + h, x:x + w] = resized
    return out


def to_original_normalised(xy: np.ndarray, spec: InputSpec, height: int, width: int) -> np.ndarray:
    """Points ``[..., 2]`` or boxes ``[..., 4]`` normalised by the model input's width and height ->
    normalised by the original ``height × width`` image's (undoing the resize policy; for a
    stretch, the same numbers)."""
    xy = np.asarray(xy, np.float64)
    reps = xy.shape[-1] // 2
    geometry = fit(height, width, spec)
    size_in = np.tile((spec.width, spec.height) if spec.height else geometry.size[::-1], reps)
    return geometry.to_original(xy * size_in) / np.tile((width, height), reps)


def map_to_original(class_map: np.ndarray, spec: InputSpec, height: int, width: int) -> np.ndarray:
    """A map at the input size ``[H, W]`` (e.g. classes) -> ``[height, width]`` of the original image:
    the letterbox border cropped (or what a centre crop cut off filled from the nearest edge),
    then scaled back (nearest)."""
    geometry = fit(height, width, spec)
    (x, y), (h, w) = geometry.pad, geometry.size
    if x < 0 or y < 0:
        class_map = np.pad(class_map, ((-min(y, 0), h + min(y, 0) - class_map.shape[0]),
                                       (-min(x, 0), w + min(x, 0) - class_map.shape[1])), mode="edge")
        x, y = max(x, 0), max(y, 0)
    return resize(np.ascontiguousarray(class_map[y:y + h, x:x + w]), height, width, "nearest")


def normalise(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """RGB uint8 ``[N, H, W, 3]`` -> the model's input tensor as ``spec`` says (the one place this
    is done): channels reversed for ``color`` BGR; for ``dtype`` float32, values ``x / 255`` (``scale``
    ``"0-1"``) or ``x`` (``"0-255"``), then ``(x - mean) / std`` per channel; for ``dtype`` uint8 the
    pixels as they are; ``[N, C, H, W]`` (``layout`` NCHW) or ``[N, H, W, C]`` (NHWC)."""
    x = images[..., ::-1] if spec.color == "BGR" else images
    if spec.dtype == "uint8":
        x = x.astype(np.uint8)
    else:
        x = x.astype(np.float32)
        if spec.scale != "0-255":
            x /= np.float32(255.0)
        x -= np.asarray(spec.mean, np.float32)
        x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x if spec.layout == "NHWC" else x.transpose(0, 3, 1, 2))


def preprocess(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Decoded RGB images (any sizes) -> the model's input batch (``[N, 3, H, W]`` float32 unless
    the spec says otherwise: :func:`normalise`)."""
    fitted = [fit_image(im, spec) for im in images]
    if spec.height is None and len({im.shape[:2] for im in fitted}) > 1:
        raise ValueError("images of different sizes cannot share a batch for a model without a fixed size")
    return normalise(np.stack(fitted), spec)


def model_input(images: list[np.ndarray], manifest: Manifest) -> np.ndarray:
    """Decoded RGB images -> the model's input batch: the task's own ``prepare(image, manifest)``
    first (e.g. super-resolution's bicubic upscale), then :func:`preprocess`."""
    from .tasks import runtime_task

    task = runtime_task(manifest.task)
    return preprocess([task.prepare(image, manifest) for image in images], manifest.input)


def require_detail(image: np.ndarray, spec: InputSpec, fraction: float = 0.5) -> np.ndarray:
    """``image`` unchanged if its shorter side is at least ``fraction`` of the model's fixed input
    side (of a range of sizes: its smallest), else an :class:`InputError`: enlarged more than that,
    the image is a blur."""
    if spec.height:
        side, size = min(spec.height, spec.width), f"{spec.width}×{spec.height}"
    elif spec.size_range:
        side, size = spec.size_range[0], "{}-{} px per side".format(*spec.size_range)
    else:
        return image
    need = int(np.ceil(fraction * side))
    h, w = image.shape[:2]
    if min(h, w) < need:
        raise InputError(f"image is {w}×{h} px; this model needs at least {need} px on the shorter side "
                         f"(its input is {size})", fix="pass a larger image")
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
