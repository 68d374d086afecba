"""Task-specific post-processing and metrics for the runtime, by task name."""
from __future__ import annotations

from types import ModuleType

from ..errors import ArtifactError


def task_module(task: str) -> ModuleType:
    """The module with ``postprocess`` and ``evaluate`` for ``task``."""
    if task == "classify":
        from . import classify

        return classify
    raise ArtifactError(f"this visionrt has no runtime support for task '{task}'", fix="upgrade visionrt")
