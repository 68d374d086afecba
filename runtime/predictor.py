"""The Predictor: images in (paths, bytes or arrays), task results out, on any backend.

It reads everything it needs from the model directory's manifest: input size and
normalisation (the same as training), output names, classes and post-processing defaults.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import numpy as np

from .backends import Runner, open_runner
from .errors import InputError
from .images import ImageSource, load_image
from .manifest import ModelDir
from .preprocess import model_input
from .tasks import runtime_task


class Predictor:
    """``Predictor("runs/classify").predict("cat.png")`` -> list of per-image results.

    The runner comes from ``backend``/``provider``/``engine_key`` and ``precision`` (``fp32``,
    ``fp16``, ``int8``: which exported file or engine runs; OpenVINO also ``bf16``), or is given
    ready-made (``runner=``, e.g. the PyTorch reference for an end-to-end baseline).
    """

    def __init__(self, model_dir: str | os.PathLike | ModelDir, backend: str = "onnxruntime",
                 provider: str = "cpu", threads: int = 0, engine_key: str | None = None,
                 runner: Runner | None = None, precision: str = "fp32"):
        if not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 0):
            raise InputError(f"threads must be an integer >= 0, got {threads!r}", fix="0 means the backend's default")
        if runner is not None and not isinstance(runner, Runner):
            raise InputError(f"runner must be a visionrt Runner, got {type(runner).__name__}",
                             fix="make one with visionrt.runtime.backends.open_runner")
        if not isinstance(model_dir, (str, os.PathLike, ModelDir)):
            raise InputError(f"model_dir must be a path or a ModelDir, got {type(model_dir).__name__}")
        self.model_dir = model_dir if isinstance(model_dir, ModelDir) else ModelDir.open(model_dir)
        self.manifest = self.model_dir.manifest
        self.task = runtime_task(self.manifest.task)
        #: Post-processing options ``predict`` takes: the task's ``postprocess`` keywords.
        self.options = [name for name in inspect.signature(self.task.postprocess).parameters
                        if name not in ("outputs", "manifest", "image_sizes")]
        self.runner = (runner or open_runner(self.model_dir, backend, provider=provider, threads=threads,
                                             engine_key=engine_key, precision=precision)).activate()

    @property
    def backend(self) -> str:
        return self.runner.name

    def preprocess(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Decode, prepare (the task's own step, if any) and preprocess: ``[N, C, H, W]`` float32."""
        return model_input([load_image(im) for im in images], self.manifest)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner.infer({self.manifest.input.name: batch})

    def predict(self, images: ImageSource | Sequence[ImageSource], **options: Any) -> list:
        """Results for one image or a list of them; ``options`` override post-processing
        parameters from the manifest (e.g. ``top_k=3``)."""
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)):
            images = [images]
        if not isinstance(images, Sequence) or not images:
            raise InputError(f"predict takes an image or a non-empty list of them, got "
                             f"{type(images).__name__ if not isinstance(images, Sequence) else 'an empty list'}",
                             fix="pass a path, bytes, a uint8 array, or a list of these")
        self._check_options(options)
        for name, value in options.items():
            check_option(name, value)
        decoded = [load_image(im) for im in images]
        if self.manifest.input.height is None and len({im.shape for im in decoded}) > 1:
            return [r for im in decoded for r in self.predict(im, **options)]  # sizes differ: one at a time
        outputs = self.infer(model_input(decoded, self.manifest))
        sizes = [im.shape[:2] for im in decoded]
        return self.task.postprocess(outputs, self.manifest, image_sizes=sizes, **options)

    def _check_options(self, options: dict[str, Any]) -> None:
        """Refuse post-processing options the task's ``postprocess`` does not take, naming those it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise InputError(f"{self.manifest.task} predictions take no option {', '.join(unknown)}",
                             fix=f"its options are: {', '.join(self.options) or 'none'}")

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_option(name: str, value: Any) -> None:
    """Refuse a post-processing option out of its range: counts (``top_k``, ``max_detections``) are
    integers >= 1, ``*_threshold`` numbers in [0, 1]; ``None`` means the manifest's default."""
    if value is None:
        return
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if name.endswith("_threshold") and not (number and 0 <= value <= 1):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    if name in ("top_k", "max_detections") and not (isinstance(value, (int, np.integer))
                                                    and not isinstance(value, bool) and value >= 1):
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")

