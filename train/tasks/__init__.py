"""Training-side task definitions: one module per task (the names the runtime's
:data:`~visionrt.runtime.tasks.TASKS` registers), each a :class:`~.base.TrainTask` subclass
``Task`` beside the module functions :mod:`.base` documents, and builders of its architectures
registered in :mod:`.architectures`.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from ...runtime.tasks import TASKS, require_architecture
from .. import presets
from ..config import TrainConfig


def get(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (available: {', '.join(TASKS)})")
    return importlib.import_module(f"{__name__}.{name}")


def load_task(name: str, data_dir, config: TrainConfig | None = None):
    """The training task object for ``name`` over the dataset in ``data_dir``, read as ``config``
    says (input size, resize policy; default: the task's)."""
    return get(name).Task(data_dir, config)


def configure(task: str, quick: bool = True, model: str | None = None, preset: str | None = None,
              **overrides: Any) -> TrainConfig:
    """The task's quick (or full) training configuration, or its full one changed by ``preset``
    (:mod:`visionrt.train.presets`), for ``model`` if given (then without the default model's
    ``model_kwargs``; :class:`~visionrt.runtime.errors.InputError` naming the choices for a model
    the task lacks), with ``overrides`` (TrainConfig fields) applied."""
    config = get(task).default_config(quick and preset is None)
    if preset is not None:
        config = dataclasses.replace(config, **presets.preset(task, preset))
    if model:
        require_architecture(task, model)
    if model and model != config.model:
        config = dataclasses.replace(config, model=model, model_kwargs={})
        if quick and preset is None:
            from .architectures import quick_settings

            config = dataclasses.replace(config, **quick_settings(task, model))
    return dataclasses.replace(config, **overrides)
