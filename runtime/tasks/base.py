"""The runtime half of a task's contract: :class:`RuntimeTask`, and :class:`Architecture`, one
entry of the architecture catalogue (what ``visionrt doctor``, ``--model`` and the tests list).

A task's runtime module ``visionrt.runtime.tasks.<task>`` defines one subclass and an instance
of it named ``TASK``. The abstract methods are what every task provides; the rest are defaults
a task overrides only where it differs.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import folders
from ..manifest import Manifest
from ..render import side_by_side

#: Parity tolerance of the task metrics: one absolute tolerance for every metric, or per metric
#: ``{name: (atol, rtol)}`` (metrics not named: exactly equal).
MetricTolerance = float | dict[str, tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One trainable architecture of a task: its ``name`` (the manifest's ``model["arch"]``, the
    CLI's ``--model``), the plugin ops its TensorRT engine needs (none: any TensorRT takes it)
    and whether it is the task's ``default`` (the one ``visionrt train`` picks)."""

    name: str
    plugin_ops: tuple[str, ...] = ()
    default: bool = False


class RuntimeTask(abc.ABC):
    """What the runtime, export and benchmarks need of a task (numpy only).

    Results (what :meth:`postprocess` returns, one per image) have ``to_dict()``, ``summary()``
    and ``draw(image) -> RGB uint8``; those whose product is an image are :class:`ImageResult`
    (``output() -> RGB uint8``, what ``predict --save-dir`` saves).
    """

    #: The task's name (``manifest.task``).
    name: str
    #: Its architectures, exactly one of them ``default``.
    architectures: tuple[Architecture, ...]
    #: How far each backend's task metrics may be from PyTorch's (see :data:`MetricTolerance`).
    PARITY_TOLERANCE: MetricTolerance = 0.0
    #: Input sides (px) to benchmark on the dataset's ``bench/<side>x<side>.png``, for models of
    #: any input size; empty: benchmark on the test images.
    BENCH_SIDES: tuple[int, ...] = ()
    #: The most input pixels per benchmarked batch (``None``: no cap).
    BENCH_PIXELS: int | None = None

    @abc.abstractmethod
    def postprocess(self, outputs: dict[str, np.ndarray], manifest: Manifest,
                    image_sizes: list[tuple[int, int]], **options: Any) -> list[Any]:
        """Model outputs of a batch -> one result per image; ``image_sizes`` are the original
        images' ``(height, width)``, to map results back onto them; ``options`` are the task's
        own keywords (what ``predict`` accepts)."""

    @abc.abstractmethod
    def heldout(self, data_dir: str | Path, count: int | None = None,
                manifest: Manifest | None = None) -> tuple[list[Path | np.ndarray], np.ndarray]:
        """The first ``count`` (or all) test-split images (paths, or arrays made from the data) of the
        task's dataset and their targets; ``manifest``, the model's, where the data alone does not
        say what its inputs are (super-resolution from a folder of photos: the scale)."""

    @abc.abstractmethod
    def evaluate(self, outputs: dict[str, np.ndarray], targets: np.ndarray, manifest: Manifest) -> dict[str, float]:
        """Task metrics of the model outputs for :meth:`heldout` images against their targets."""

    def training_images(self, data_dir: str | Path, manifest: Manifest) -> list[Path]:
        """The training split's image files (what int8 calibration samples); default:
        :func:`~visionrt.runtime.folders.training_images` of the dataset's layout."""
        return folders.training_images(data_dir)

    def model_image(self, image: np.ndarray, manifest: Manifest) -> np.ndarray:
        """A :meth:`training_images` image as the model's users give it (before :meth:`prepare`);
        default: itself (super-resolution degrades its high-resolution photos)."""
        return image

    def prepare(self, image: np.ndarray, manifest: Manifest) -> np.ndarray:
        """The task's own step before the generic preprocessing, on one RGB uint8 image (run by the
        Predictor and the parity check alike); it may refuse the image with
        :class:`~visionrt.runtime.errors.InputError`. Default: the image unchanged."""
        return image

    def compare(self, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], targets: np.ndarray,
                manifest: Manifest) -> dict[str, Any] | None:
        """Parity after post-processing of two backends' outputs on the same batch: a dict with
        ``passed`` that replaces the per-output verdict (e.g. detections matched by IoU), or
        ``None`` (default) to judge the raw outputs within tolerance."""
        return None

    def report_picture(self, result: Any, image: np.ndarray, target: Any) -> np.ndarray:
        """The pipeline report's picture of a held-out ``image`` with its ``target``
        (RGB uint8). Default: ``result.draw(image)``."""
        return result.draw(image)

    @property
    def default_architecture(self) -> Architecture:
        (default,) = [a for a in self.architectures if a.default]
        return default


@dataclasses.dataclass
class ImageResult:
    """A result that is an image (super-resolution, style transfer): ``image`` RGB uint8
    ``[H, W, 3]``, ``title`` what made it (e.g. ``"vdsr x2"``), ``facts`` the fields of
    :meth:`to_dict` beside its size, ``text`` the one-line summary; :meth:`draw` shows the input
    (through ``show_input``, e.g. a bicubic upscale, where given), titled ``input_title``, beside it."""

    image: np.ndarray
    title: str
    facts: dict[str, Any]
    text: str
    input_title: str = "input"
    show_input: Callable[[np.ndarray], np.ndarray] | None = None

    def to_dict(self) -> dict:
        h, w = self.image.shape[:2]
        return {"width": w, "height": h, **self.facts}

    def summary(self) -> str:
        return self.text

    def output(self) -> np.ndarray:
        return self.image

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The input ``image`` | this result, side by side."""
        shown = self.show_input(image) if self.show_input else image
        return side_by_side([(self.input_title, shown), (self.title, self.image)])
