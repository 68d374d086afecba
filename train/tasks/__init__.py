"""Training-side task definitions, one module per task.

Each module ``visionrt.train.tasks.<task>`` provides:

* ``Task(data_dir)``: data in memory, ``build_model(config)``, ``train_loss(model, indices,
  generator)``, ``evaluate(model, split) -> metrics``, ``metric`` (the primary one, higher is
  better) and the manifest parts ``input_spec()``, ``outputs()``, ``postprocess()``;
* ``build_data(out_dir, quick, seed, progress) -> Path``: the task's built-in dataset;
* ``default_config(quick) -> TrainConfig``: the quick CPU run or the full one;
* ``build_model(model_entry, classes) -> nn.Module``: the architecture a manifest records.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ...runtime.tasks import TASKS


def get(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (available: {', '.join(TASKS)})")
    return importlib.import_module(f"{__name__}.{name}")


def load_task(name: str, data_dir):
    """The training task object for ``name`` over the dataset in ``data_dir``."""
    return get(name).Task(data_dir)
