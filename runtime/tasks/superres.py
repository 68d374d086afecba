"""Super-resolution in the runtime: a low-resolution RGB image in, the image ×``scale`` out.

The manifest's ``postprocess`` holds ``scale``, ``model_input`` (``"lr"``: the network takes the
low-resolution image; ``"bicubic"``: it takes that image upscaled with Pillow's bicubic, done
here by :func:`prepare`, exactly as in training) and the accepted input sides. Any size between
``min_side`` and ``max_side`` (low-resolution pixels) goes through the same ONNX file and engine:
their H/W axes are dynamic and the engine's optimisation profile spans that range. Larger
images are refused rather than tiled: the profile bounds the activation memory on the GPU.
Gray (and RGBA, palette) images are converted to RGB by the image loader; the output is RGB.

Quality is PSNR and SSIM (Wang et al. 2004: Gaussian window σ = 1.5, population covariance;
per channel, averaged) on RGB uint8, a border of ``scale`` pixels shaved, against the original
photo, and the same for Pillow's bicubic upscaling of the same low-resolution input. Both are
plain numpy here and agree with scikit-image's ``peak_signal_noise_ratio`` and
``structural_similarity`` (the training side's metrics) to within float rounding.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
from PIL import Image

from ..datasets import photo_split_names
from ..errors import InputError
from ..folders import image_files, read_photo_folder
from ..images import load_image, to_uint8
from ..manifest import Manifest
from ..preprocess import require_sides
from ..render import side_by_side
from .base import IMAGE_SIDES, Architecture, Contract, ImageResult, RuntimeTask, Tensor, Variant

#: Model output: the super-resolved image, RGB in [0, 1].
OUTPUT = "image"
#: Parity with PyTorch: |difference| allowed per metric (absolute, relative).
PARITY_TOLERANCE = {"psnr": (0.05, 0.0), "psnr_gain": (0.05, 0.0), "ssim": (5e-4, 0.0), "ssim_gain": (5e-4, 0.0),
                    "bicubic_psnr": (0.0, 0.0), "bicubic_ssim": (0.0, 0.0)}
#: Benchmarks: one case per input side (low-resolution pixels; the dataset's ``bench/`` images),
#: with the requested batch sizes that keep a batch within ``BENCH_PIXELS`` input pixels.
BENCH_SIDES = (64, 128, 256)
BENCH_PIXELS = 8 * 64 * 64


# images ------------------------------------------------------------------------------------
def upscale_bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """RGB uint8 ``[h, w, 3]`` -> ``[scale·h, scale·w, 3]`` with Pillow's bicubic filter (the
    baseline, and the input of the networks that take a bicubic image: training does the same)."""
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.BICUBIC))


def downscale_bicubic(image: np.ndarray, scale: int) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` (H, W multiples of ``scale``) -> ``[H/scale, W/scale, 3]``,
    Pillow's antialiased bicubic: how the built-in dataset makes its low-resolution inputs."""
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w // scale, h // scale), Image.BICUBIC))



def degrade(photo: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A high-resolution RGB uint8 photo -> (low-resolution input, target): the photo cropped
    (bottom/right) to a multiple of ``scale``, and its :func:`downscale_bicubic`. The task's
    documented degradation for a folder of photos."""
    hr = np.ascontiguousarray(photo[:photo.shape[0] // scale * scale, :photo.shape[1] // scale * scale])
    return downscale_bicubic(hr, scale), hr


def prepare(image: np.ndarray, manifest: Manifest) -> np.ndarray:
    """The network's input for one low-resolution RGB uint8 image: itself, or its bicubic
    upscale; :class:`~visionrt.runtime.errors.InputError` outside the sizes the model and its engine take."""
    post = manifest.postprocess
    require_sides(image, post["min_side"], post["max_side"], fix="crop it into pieces, or shrink it first",
                  limit=f"output {post['max_side'] * post['scale']} px, the engine's optimisation profile")
    return upscale_bicubic(image, post["scale"]) if post["model_input"] == "bicubic" else image


# results -----------------------------------------------------------------------------------
def postprocess(outputs: dict[str, np.ndarray], manifest: Manifest, image_sizes=None) -> list[ImageResult]:
    """One :class:`~.base.ImageResult` per output image, RGB uint8 ``[scale·h, scale·w, 3]``, drawn
    beside the bicubic upscale of its input (``image_sizes`` is not needed: the output is the
    input's size × ``scale``)."""
    scale, arch = manifest.postprocess["scale"], manifest.model["arch"]
    results = []
    for out in outputs[OUTPUT]:
        image = to_uint8(out)
        h, w = image.shape[:2]
        results.append(ImageResult(image, f"{arch} x{scale}", {"scale": scale},
                                   f"{w // scale}×{h // scale} -> {w}×{h} (×{scale}, {arch})",
                                   f"bicubic x{scale}", functools.partial(upscale_bicubic, scale=scale)))
    return results


# held-out data and metrics -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class HeldOut:
    """A held-out photo: its low-resolution input and the original it came from (files, or arrays
    made from a folder of photos)."""

    lr: Path | np.ndarray
    hr: Path | np.ndarray


def heldout(data_dir: str | Path, count: int | None = None,
            manifest: Manifest | None = None) -> tuple[list[Path | np.ndarray], np.ndarray]:
    """Low-resolution test inputs and, per input, a :class:`HeldOut` (object array): the built-in
    dataset's files, or a folder of photos degraded at the ``manifest``'s scale as in training
    (:func:`degrade`)."""
    root = Path(data_dir)
    if (root / "dataset.json").is_file():
        names = photo_split_names(root, "test", count)
        pairs = [(root / "images" / "test" / f"{n}.png", root / "hr" / "test" / f"{n}.png") for n in names]
    else:
        if manifest is None:
            raise InputError(f"{root} is a folder of photos: its low-resolution inputs depend on the model's scale",
                             fix="pass the model's manifest")
        scale = manifest.postprocess["scale"]
        pairs = [degrade(load_image(path), scale) for path in read_photo_folder(root, "test")[:count]]
    targets = np.empty(len(pairs), dtype=object)
    targets[:] = [HeldOut(lr, hr) for lr, hr in pairs]
    return [t.lr for t in targets], targets


def training_images(data_dir: str | Path, manifest: Manifest) -> list[Path]:
    """The high-resolution training photos: the built-in dataset's ``hr/train/``, or a folder's."""
    root = Path(data_dir)
    if (root / "dataset.json").is_file():
        return image_files(root / "hr" / "train")
    return read_photo_folder(root, "train")


def model_image(image: np.ndarray, manifest: Manifest) -> np.ndarray:
    """A high-resolution photo -> the low-resolution input the model is given (:func:`degrade`)."""
    return degrade(image, manifest.postprocess["scale"])[0]


def psnr(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """Peak signal-to-noise ratio of two uint8 images in dB (peak 255), ``border`` px shaved."""
    a, b = shave(a, border).astype(np.float64), shave(b, border).astype(np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, border: int = 0) -> float:
    """Mean structural similarity of two uint8 RGB images, channels averaged, ``border`` px shaved.

    As scikit-image's ``structural_similarity(data_range=255, channel_axis=-1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``: Gaussian statistics
    (11 taps, symmetric padding), the 5-pixel margin of the filter left out of the mean.
    """
    a, b = shave(a, border).astype(np.float64), shave(b, border).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for x, y in zip(a.transpose(2, 0, 1), b.transpose(2, 0, 1)):
        mx, my = _gaussian(x), _gaussian(y)
        vx, vy, vxy = _gaussian(x * x) - mx * mx, _gaussian(y * y) - my * my, _gaussian(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        values.append(shave(s, _RADIUS).mean())
    return float(np.mean(values))


_RADIUS = 5  # int(3.5 * 1.5 + 0.5): scipy's truncation of a σ = 1.5 Gaussian
_KERNEL = np.exp(-0.5 * (np.arange(-_RADIUS, _RADIUS + 1) / 1.5) ** 2)
_KERNEL /= _KERNEL.sum()


def _gaussian(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of a 2-D float64 array, symmetric (half-sample) padding."""
    h, w = x.shape
    padded = np.pad(x, _RADIUS, mode="symmetric")
    rows = sum(k * padded[i:i + h, :] for i, k in enumerate(_KERNEL))
    return sum(k * rows[:, i:i + w] for i, k in enumerate(_KERNEL))


def shave(x: np.ndarray, border: int) -> np.ndarray:
    """``x`` without ``border`` pixels on each side (all of it for ``border`` 0)."""
    return x[border:x.shape[0] - border, border:x.shape[1] - border] if border else x


def quality(outputs: list[np.ndarray], lr_images: list[np.ndarray], hr_images: list[np.ndarray], scale: int,
            psnr=psnr, ssim=ssim) -> dict[str, float]:
    """Mean PSNR/SSIM over images of the outputs (uint8) and of bicubic, against the originals,
    ``scale`` px shaved; ``psnr(a, b, border)``/``ssim(a, b, border)`` default to this module's."""
    rows = []
    for out, lr, hr in zip(outputs, lr_images, hr_images):
        bicubic = upscale_bicubic(lr, scale)
        rows.append((psnr(out, hr, scale), ssim(out, hr, scale), psnr(bicubic, hr, scale), ssim(bicubic, hr, scale)))
    p, s, bp, bs = np.mean(rows, axis=0)
    return {"psnr": float(p), "ssim": float(s), "bicubic_psnr": float(bp), "bicubic_ssim": float(bs),
            "psnr_gain": float(p - bp), "ssim_gain": float(s - bs), "images": len(rows)}


def evaluate(outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
    """PSNR/SSIM of the model and of bicubic on the held-out photos (see :func:`quality`)."""
    return quality([to_uint8(o) for o in outputs[OUTPUT]], [load_image(t.lr) for t in targets],
                   [load_image(t.hr) for t in targets], manifest.postprocess["scale"])


def report_picture(result: ImageResult, image: np.ndarray, target: HeldOut) -> np.ndarray:
    """Bicubic | model | original for a held-out photo, each upscale captioned with its PSNR;
    beneath, the same three enlarged (nearest) on the detail where bicubic errs most."""
    from ..images import load_image

    hr, s = load_image(target.hr), result.facts["scale"]
    bicubic = upscale_bicubic(image, s)
    y, x, side = _worst_window(bicubic, hr)
    k = max(2, hr.shape[1] // side)

    def zoom(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a[y:y + side, x:x + side]).resize((k * side, k * side), Image.NEAREST))

    whole = side_by_side([(f"bicubic {psnr(bicubic, hr, s):.2f} dB", bicubic),
                          (f"{result.title} {psnr(result.image, hr, s):.2f} dB", result.image), ("original", hr)])
    detail = side_by_side([(f"bicubic, detail x{k}", zoom(bicubic)),
                           (f"{result.title}, detail x{k}", zoom(result.image)), (f"original, detail x{k}", zoom(hr))])
    out = np.zeros((whole.shape[0] + 8 + detail.shape[0], max(whole.shape[1], detail.shape[1]), 3), np.uint8)
    out[:whole.shape[0], :whole.shape[1]] = whole
    out[whole.shape[0] + 8:, :detail.shape[1]] = detail
    return out


def _worst_window(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int]:
    """``(y, x, side)`` of the square window (a third of the shorter side, at most 96 px) where
    ``a`` and ``b`` differ most (mean squared error), on a half-window grid."""
    side = min(96, min(a.shape[:2]) // 3)
    error = ((a.astype(np.float64) - b) ** 2).mean(axis=2)
    step = max(1, side // 2)
    windows = [(error[y:y + side, x:x + side].mean(), y, x) for y in range(0, a.shape[0] - side + 1, step)
               for x in range(0, a.shape[1] - side + 1, step)]
    _, y, x = max(windows)
    return y, x, side


TASK = RuntimeTask(
    name="superres",
    architectures=(Architecture("vdsr", default=True), Architecture("srcnn"), Architecture("fsrcnn")),
    contract=Contract("any", "", (Variant("image", (Tensor(
        OUTPUT, ("N", 3, "sH", "sW"), "float", "the upscaled image, RGB in [0, 1]"),), True, {
        "scale": "output side / input side",
        "model_input": "\"lr\" (or \"bicubic\": the input upscaled first)", **IMAGE_SIDES}),),
        lambda variant, classes, bound: {"scale": bound.get("s"), "model_input": "lr", "min_side": 8,
                                         "max_side": 1024}),
    postprocess=postprocess, heldout=heldout, evaluate=evaluate, prepare=prepare, report_picture=report_picture,
    training_images=training_images, model_image=model_image, image_result=True,
    parity_tolerance=PARITY_TOLERANCE, precision_tolerance={"psnr": (0.1, 0.0)},
    bench_sides=BENCH_SIDES, bench_pixels=BENCH_PIXELS,
)
