"""Task-specific runtime code (numpy only), one module per task.

Each module ``visionrt.runtime.tasks.<task>`` provides ``MODELS`` (``{architecture: plugin ops
its TensorRT engine needs}``, listed by ``visionrt doctor``), ``postprocess(outputs, manifest,
image_sizes, **options) -> list[result]`` (``image_sizes``: ``(height, width)`` of each original
image, to map results back onto it; each result has ``to_dict()``, ``summary()`` and ``draw(image)``),
``heldout(data_dir, count) -> (image paths, targets)`` for the test split of the task's
built-in dataset, and ``evaluate(outputs, targets, manifest) -> metrics``.

Optional, where a task needs them:

* ``prepare(image, manifest) -> image``: its own step before the generic preprocessing (e.g.
  super-resolution's bicubic upscale), run by the Predictor and the parity check alike; it may
  refuse an image with :class:`~visionrt.runtime.errors.InputError`;
* ``PARITY_TOLERANCE``: ``{metric: (atol, rtol)}`` the backends' task metrics may differ by
  (default: exactly equal);
* ``BENCH_SIDES`` (and ``BENCH_PIXELS``, the most pixels per batch): benchmark per input size
  on the dataset's ``bench/<side>x<side>.png`` instead of on the test images;
* ``report_picture(result, image, target) -> image``: the pipeline report's picture of a
  held-out image (default: ``result.draw(image)``);
* results whose product is an image have ``output() -> RGB uint8``, saved by ``predict --save-dir``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ArtifactError

#: Tasks this visionrt can carry through every stage.
TASKS = ("classify", "localize", "segment", "detect", "instance", "superres", "pose", "style")


def task_module(task: str) -> ModuleType:
    """The runtime module for ``task``."""
    if task not in TASKS:
        raise ArtifactError(f"this visionrt has no runtime support for task '{task}' (it has {', '.join(TASKS)})",
                            fix="upgrade visionrt")
    return importlib.import_module(f"{__name__}.{task}")
