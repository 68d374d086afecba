"""Task-specific runtime code (numpy only), one module per task.

Each module ``visionrt.runtime.tasks.<task>`` provides ``postprocess(outputs, manifest,
**options) -> list[result]`` (each result has ``to_dict()``, ``summary()`` and ``draw(image)``),
``heldout(data_dir, count) -> (image paths, targets)`` for the test split of the task's
built-in dataset, and ``evaluate(outputs, targets, manifest) -> metrics``.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ArtifactError

#: Tasks this visionrt can carry through every stage.
TASKS = ("classify",)


def task_module(task: str) -> ModuleType:
    """The runtime module for ``task``."""
    if task not in TASKS:
        raise ArtifactError(f"this visionrt has no runtime support for task '{task}' (it has {', '.join(TASKS)})",
                            fix="upgrade visionrt")
    return importlib.import_module(f"{__name__}.{task}")
