"""The Predictor: images in (paths, bytes or arrays), task results out, on any backend.

It reads everything it needs from the model directory's manifest: input size and
normalisation (the same as training), output names, classes and post-processing defaults.
One pipeline, three public steps that every entry point composes (the CLI, the server, Triton's
python model, the export check): :meth:`Pipeline.preprocess` -> :meth:`Predictor.infer` ->
:meth:`Pipeline.postprocess`; post-processing options are checked by the task's spec
(:class:`~visionrt.runtime.tasks.base.Options`), with one wording wherever they come from.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from .backends import Runner, open_runner
from .errors import InputError
from .images import ImageSource, load_image_reduced
from .manifest import ModelDir
from .model_check import check_model_dir, check_runner
from .preprocess import decode_size, model_input
from .tasks import runtime_task


class Pipeline:
    """A model's pre- and post-processing without a runner (Triton's pre/post models, the export
    check): what the manifest and the task's spec (:attr:`task`) make of images and outputs."""

    def __init__(self, model_dir: str | os.PathLike | ModelDir):
        if not isinstance(model_dir, (str, os.PathLike, ModelDir)):
            raise InputError(f"model_dir must be a path or a ModelDir, got {type(model_dir).__name__}")
        self.model_dir = model_dir if isinstance(model_dir, ModelDir) else ModelDir.open(model_dir)
        self.manifest = self.model_dir.manifest
        self.task = runtime_task(self.manifest.task)

    @property
    def options(self) -> list[str]:
        """Post-processing options ``predict`` takes (the task spec's)."""
        return self.task.options.names

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` checked and typed (``None`` values dropped); :class:`InputError` naming an
        unknown option or a bad value."""
        return self.task.options.check(self.manifest.task, options)

    def parse_options(self, texts: Mapping[str, str]) -> dict[str, Any]:
        """Options given as text (query parameters, flags), checked as :meth:`check_options` does."""
        return self.task.options.parse(self.manifest.task, texts)

    def decode(self, image: ImageSource) -> tuple[np.ndarray, tuple[int, int]]:
        """``(RGB uint8 [h, w, 3], the original (height, width))``: a JPEG decoded reduced where the
        model's input is much smaller (:func:`~visionrt.runtime.images.load_image_reduced`)."""
        return load_image_reduced(image, lambda h, w: decode_size(h, w, self.manifest.input))

    def preprocess(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Decode, prepare (the task's own step, if any) and preprocess: the model input batch
        (``[N, C, H, W]`` float32 unless the manifest's input says otherwise)."""
        return model_input([self.decode(im)[0] for im in images], self.manifest)

    def postprocess(self, outputs: dict[str, np.ndarray], image_sizes: Sequence[tuple[int, int]],
                    **options: Any) -> list:
        """Model outputs of a batch -> one result per image; ``image_sizes`` the original images'
        ``(height, width)``; ``options`` override the manifest's post-processing parameters."""
        return self.task.postprocess(outputs, self.manifest, list(image_sizes), **options)


class Predictor(Pipeline):
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
        super().__init__(model_dir)
        check_model_dir(self.model_dir)
        self.runner = (runner or open_runner(self.model_dir, backend, provider=provider, threads=threads,
                                             engine_key=engine_key, precision=precision)).activate()
        if runner is None:  # a runner given ready-made is the caller's to match
            try:
                check_runner(self.manifest, self.runner, str(self.model_dir.root))
            except Exception:
                self.runner.deactivate()
                raise

    @property
    def backend(self) -> str:
        return self.runner.name

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """The model input batch -> the model's outputs by name."""
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
        options = self.check_options(options)
        decoded, sizes = zip(*(self.decode(im) for im in images))
        if self.manifest.input.height is None and len(set(sizes)) > 1:
            return [r for im in decoded for r in self.predict(im, **options)]  # sizes differ: one at a time
        return self.postprocess(self.infer(self.preprocess(list(decoded))), sizes, **options)

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

