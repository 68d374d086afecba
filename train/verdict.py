"""The check at the end of training: is the model better than one that ignores the image?

A run that collapsed (one class for every image, no boxes found) still writes a model and a
falling training loss; :func:`judge` compares its test score with the task's
:meth:`~visionrt.train.tasks.base.TrainTask.baseline` (the majority class, the mean box or
pose, all background, no detections) and returns one line naming the likely cause and the flag
that fixes it.
"""
from __future__ import annotations

import dataclasses

from .config import TrainConfig
from .schedule import AUTO_FIELDS, min_steps, size_to_data, small_set_model

#: The model must close at least this share of the gap between the baseline and a perfect score.
MIN_SKILL = 0.1


def judge(task, test_metrics: dict, config: TrainConfig, steps: int, n_train: int) -> str | None:
    """A warning when ``test_metrics`` are no better than ``task``'s baseline on the test split,
    else ``None``; ``steps``: the optimizer steps trained over ``n_train`` samples."""
    baseline = task.baseline("test")
    if baseline is None or baseline.metric not in test_metrics:
        return None
    value = float(test_metrics[baseline.metric])
    if value - baseline.value >= MIN_SKILL * (1 - baseline.value):
        return None
    if steps < min_steps(config.task):
        sized = size_to_data(dataclasses.replace(config, auto=list(AUTO_FIELDS)), n_train)
        flags = " ".join(f"--{name.replace('_', '-')} {getattr(sized, name)}" for name in ("batch_size", "epochs")
                         if getattr(sized, name) != getattr(config, name)) or "more --epochs"
        cause = (f"only {steps} optimizer steps (batch {config.batch_size} over {n_train} training samples): "
                 f"pass {flags}")
    elif small_set_model(config.task, n_train) not in (None, config.model):
        cause = (f"the {config.model} architecture on {n_train} training samples: pass --model "
                 f"{small_set_model(config.task, n_train)} (or leave --model out to have it chosen)")
    else:
        cause = (f"the learning rate {config.lr:g} (pass --lr {config.lr / 10:g}), too few images per class "
                 f"or an input too small to tell them apart (--image-size)")
    return (f"test {baseline.metric} {value:.3f} is no better than always predicting {baseline.what} "
            f"({baseline.value:.3f}): the model has not learned from the images; likely cause: {cause}")
