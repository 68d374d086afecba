"""Training-side task definitions, one module per task.

Each module ``visionrt.train.tasks.<task>`` provides:

* ``Task(data_dir)``: data in memory, ``build_model(config)``, ``train_loss(model, indices,
  generator)``, ``evaluate(model, split) -> metrics``, ``metric`` (the primary one, higher is
  better) and the manifest parts ``input_spec()``, ``outputs()``, ``postprocess()``;
* ``build_data(out_dir, quick, seed, progress) -> Path``: the task's built-in dataset;
* ``default_config(quick) -> TrainConfig``: the quick CPU run or the full one;
* ``build_model(model_entry, classes) -> nn.Module``: the architecture a manifest records;
  a task whose graph holds post-processing (NMS) sets ``POSTPROCESS_IN_GRAPH = True`` and takes
  the manifest's ``postprocess`` as a third argument (its thresholds live only there).
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from ...runtime.tasks import TASKS
from ..config import TrainConfig


def get(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (available: {', '.join(TASKS)})")
    return importlib.import_module(f"{__name__}.{name}")


def load_task(name: str, data_dir):
    """The training task object for ``name`` over the dataset in ``data_dir``."""
    return get(name).Task(data_dir)


def configure(task: str, quick: bool = True, model: str | None = None, **overrides: Any) -> TrainConfig:
    """The task's quick (or full) training configuration, for ``model`` if given (then without
    the default model's ``model_kwargs``), with ``overrides`` (TrainConfig fields) applied."""
    config = get(task).default_config(quick)
    if model and model != config.model:
        config = dataclasses.replace(config, model=model, model_kwargs={})
    return dataclasses.replace(config, **overrides)
