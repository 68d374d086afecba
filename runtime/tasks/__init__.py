"""Task-specific runtime code (numpy only): one module per task, each declaring its spec
``TASK``, a :class:`~.base.RuntimeTask` (documented there), registered by name in :data:`TASKS`.
The architecture catalogue is the specs' ``architectures``; the prediction options every entry
point takes are their ``options`` (:func:`prediction_options`).
"""
from __future__ import annotations

import importlib

from ..errors import ArtifactError, InputError
from .base import Architecture, Option, RuntimeTask

#: Tasks this visionrt can carry through every stage.
TASKS = ("classify", "localize", "segment", "detect", "instance", "keypoints", "superres", "pose", "style")


def runtime_task(task: str) -> RuntimeTask:
    """The runtime half of ``task``; :class:`ArtifactError` for a task this visionrt lacks."""
    if task not in TASKS:
        raise ArtifactError(f"this visionrt has no runtime support for task '{task}' (it has {', '.join(TASKS)})",
                            fix="upgrade visionrt")
    return importlib.import_module(f"{__name__}.{task}").TASK


def architectures(task: str) -> dict[str, Architecture]:
    """``task``'s architectures by name, the default first."""
    listed = runtime_task(task).architectures
    return {a.name: a for a in sorted(listed, key=lambda a: not a.default)}


def require_architecture(task: str, name: str) -> Architecture:
    """The catalogue entry of ``name``; :class:`InputError` naming the choices when ``task`` has none such."""
    known = architectures(task)
    if name not in known:
        raise InputError(f"unknown {task} model '{name}' (choose from {', '.join(known)})",
                         fix=f"pass --model {next(iter(known))}, or one of the others")
    return known[name]


def prediction_options() -> dict[str, tuple[Option, list[str]]]:
    """Every task's post-processing options by name (what ``visionrt predict`` makes flags of),
    each with the tasks that take it; an option several tasks take is declared alike by each."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for task in TASKS:
        for option in runtime_task(task).options.items:
            found.setdefault(option.name, (option, []))[1].append(task)
    return found
