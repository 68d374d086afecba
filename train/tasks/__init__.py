"""Training-side task definitions, by task name."""
from __future__ import annotations


def load_task(name: str, data_dir):
    """The task object for ``name`` over the dataset in ``data_dir``."""
    if name == "classify":
        from .classify import ClassifyTask

        return ClassifyTask(data_dir)
    raise ValueError(f"task '{name}' has no training code yet (available: classify)")
