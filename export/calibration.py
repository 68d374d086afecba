"""int8 calibration: a fixed-seed sample of the task's training images, run through exactly the
runtime's decoding and preprocessing, and the activation ranges it gives, cached as JSON.

The cache (``calibration.json``, onnxruntime's tensor-range format: per tensor ``[min, max]``
seen over the sample) is calibrated once and shared by every int8 file (onnxruntime's u8/s8
layout and TensorRT's symmetric s8 layout derive their scales from the same ranges). Its record
in the manifest (count, seed, sha256 of the sorted image list, method, the fp32 ONNX's sha256)
lets a re-export reuse it, and reproduces the same scales.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
from onnxruntime.quantization.calibrate import save_tensors_data

from ..runtime.errors import InputError
from ..runtime.images import load_image
from ..runtime.manifest import Manifest, ModelDir
from ..runtime.preprocess import model_input
from ..runtime.tasks import runtime_task

log = logging.getLogger(__name__)

CACHE_FILE = "calibration.json"
CACHE_KEY = "calibration"
#: Images sampled from the training split by default, and the fewest a calibration accepts.
DEFAULT_COUNT = 256
MIN_IMAGES = 8
METHOD = CalibrationMethod.MinMax
#: Op types whose inputs and outputs are calibrated (and quantised).
OP_TYPES = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def sample_images(data_dir: str | Path, manifest: Manifest, count: int = DEFAULT_COUNT, seed: int = 0,
                  minimum: int = MIN_IMAGES) -> list[Path]:
    """``count`` training images (all if fewer) of the dataset in ``data_dir`` (any layout, see
    ``RuntimeTask.training_images``), drawn with ``seed``, sorted by path; :class:`InputError`
    when fewer than ``minimum`` exist."""
    available = sorted(runtime_task(manifest.task).training_images(data_dir, manifest))
    if len(available) < minimum:
        raise InputError(f"int8 calibration needs at least {minimum} training images, {data_dir} has "
                         f"{len(available)}", fix="pass --data DIR of the dataset the model was trained on")
    chosen = np.random.default_rng(seed).choice(len(available), size=min(count, len(available)), replace=False)
    return sorted(available[i] for i in chosen)


def image_list_sha256(images: list[Path]) -> str:
    """sha256 of the sorted file names, one a line: identifies the sample, not its pixels."""
    return hashlib.sha256("\n".join(sorted(p.name for p in images)).encode()).hexdigest()


class ImageReader(CalibrationDataReader):
    """Feeds onnxruntime's calibrator one preprocessed image at a time (``[1, C, H, W]`` float32,
    so images of any size calibrate models for any size)."""

    def __init__(self, model_dir: ModelDir, images: list[Path]):
        self.manifest, self.images, self.position = model_dir.manifest, images, 0
        self.task = runtime_task(self.manifest.task)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.images):
            return None
        image = self.task.model_image(load_image(self.images[self.position]), self.manifest)
        self.position += 1
        return {self.manifest.input.name: model_input([image], self.manifest)}

    def __len__(self) -> int:
        return len(self.images)


def calibrate(model_dir: ModelDir, data_dir: str | Path, count: int = DEFAULT_COUNT, seed: int = 0,
              minimum: int = MIN_IMAGES) -> tuple[Path, dict[str, Any]]:
    """The calibration cache of ``model_dir``'s fp32 ONNX and its record; reused when the manifest
    records one made from the same ONNX, images and method (and the file is intact), else computed
    and registered under key ``calibration``."""
    images = sample_images(data_dir, model_dir.manifest, count, seed, minimum)
    record = {"count": len(images), "seed": seed, "images_sha256": image_list_sha256(images),
              "method": METHOD.name, "op_types": list(OP_TYPES), "onnx_sha256": model_dir.manifest.files["onnx"].sha256,
              "split": "train", "preprocessing": "runtime (images.load_image + preprocess.model_input)"}
    cache = model_dir.root / CACHE_FILE
    previous = model_dir.manifest.precisions.get("calibration", {})
    if model_dir.has(CACHE_KEY) and previous == record:
        model_dir.path(CACHE_KEY)  # checks its sha256
        log.info("calibration: reusing %s (%d images, seed %d)", cache.name, len(images), seed)
        return cache, record
    log.info("calibration: %d training images (seed %d), %s ranges", len(images), seed, METHOD.name)
    with tempfile.TemporaryDirectory() as scratch:
        calibrator = create_calibrator(model_dir.path("onnx"), list(OP_TYPES),
                                       augmented_model_path=str(Path(scratch) / "augmented.onnx"),
                                       calibrate_method=METHOD)
        calibrator.collect_data(ImageReader(model_dir, images))
        save_tensors_data(calibrator.compute_data(), cache)
    model_dir.add_file(CACHE_KEY, cache, role=f"int8 calibration cache: {METHOD.name} tensor ranges")
    model_dir.manifest.precisions["calibration"] = record
    return cache, record
