"""A batch size and schedule sized to the training set, for the fields the user left unset.

The tasks' default batch sizes and epochs are tuned on the built-in data (thousands of images:
tens of optimizer steps per epoch). On a user's first few dozen photos the same defaults give one
or two steps per epoch and a run that early-stops after a handful of steps. :func:`size_to_data`
changes only the fields listed in ``TrainConfig.auto`` (``visionrt train`` lists those the user
did not set, so flags and ``--config`` always win; the Python API's default, an empty list, uses
the configuration as given):

* ``batch_size``: ``min(task default, max(MIN_BATCH, n_train // BATCHES_PER_EPOCH), n_train)``,
  so an epoch is at least about :data:`BATCHES_PER_EPOCH` steps;
* ``epochs``: raised until the run has at least :func:`min_steps` optimizer steps
  (:data:`MIN_STEPS`, or the task module's own ``MIN_STEPS``: a detector learns its boxes from
  scratch more slowly than a classifier its classes);
* ``patience``: early stopping cannot end the run before those steps (:func:`may_stop_early`);
* ``model``: the architecture the task names for small sets (its module's ``SMALL_SET_MODEL``,
  ``(below, name)``: pose trains the integral head below 1000 images, where DeepPose's fully
  connected regression learns the training poses by heart and predicts the mean pose elsewhere).

On the built-in datasets every rule leaves the task's configuration as it is (tested).
"""
from __future__ import annotations

import dataclasses
import math

from .config import TrainConfig

#: The fields :func:`size_to_data` may change.
AUTO_FIELDS = ("batch_size", "epochs", "patience", "model")
#: The smallest batch chosen automatically (BatchNorm needs a few samples per batch).
MIN_BATCH = 8
#: Aim for at least this many steps per epoch when choosing the batch size.
BATCHES_PER_EPOCH = 8
#: Optimizer steps a run trains at least (epochs raised, early stopping held back), unless its
#: task's module sets its own ``MIN_STEPS``.
MIN_STEPS = 180


def steps_per_epoch(batch_size: int, n_train: int, world: int = 1) -> int:
    """Optimizer steps in one epoch of ``n_train`` samples split over ``world`` processes
    (incomplete batches dropped)."""
    per_rank = max(1, batch_size // world)
    return n_train // world // per_rank


def min_steps(task: str) -> int:
    """The optimizer steps a run of ``task`` trains at least: its module's ``MIN_STEPS``, else :data:`MIN_STEPS`."""
    from .tasks import get

    return getattr(get(task), "MIN_STEPS", MIN_STEPS)


def small_set_model(task: str, n_train: int) -> str | None:
    """The architecture ``task`` trains on ``n_train`` samples when none is named (its module's
    ``SMALL_SET_MODEL``), or ``None`` for the task's default."""
    from .tasks import get

    below, name = getattr(get(task), "SMALL_SET_MODEL", (0, None))
    return name if n_train < below else None


def size_to_data(config: TrainConfig, n_train: int, world: int = 1) -> TrainConfig:
    """``config`` with its automatic fields (``config.auto``) sized to ``n_train`` training samples."""
    if "model" in config.auto and (model := small_set_model(config.task, n_train)) not in (None, config.model):
        config = dataclasses.replace(config, model=model, model_kwargs={})
    batch = config.batch_size
    if "batch_size" in config.auto:
        batch = max(1, min(config.batch_size, max(MIN_BATCH, n_train // BATCHES_PER_EPOCH), n_train))
    epochs = config.epochs
    steps = steps_per_epoch(batch, n_train, world)
    if "epochs" in config.auto and steps:
        epochs = max(epochs, math.ceil(min_steps(config.task) / steps))
    return dataclasses.replace(config, batch_size=batch, epochs=epochs)


def may_stop_early(config: TrainConfig, steps_done: int) -> bool:
    """Whether early stopping may end the run after ``steps_done`` optimizer steps: always when
    ``patience`` is the user's, else after :func:`min_steps`."""
    return "patience" not in config.auto or steps_done >= min_steps(config.task)


def describe(config: TrainConfig, n_train: int, world: int = 1) -> str:
    """One line naming the batch size and schedule a run uses and which of them were chosen here."""
    steps = steps_per_epoch(config.batch_size, n_train, world)
    chosen = [f"--{name.replace('_', '-')}" for name in ("batch_size", "epochs") if name in config.auto]
    model = ""
    if "model" in config.auto and small_set_model(config.task, n_train) == config.model:
        chosen.append("--model")
        model = f", model {config.model}"
    named = ", ".join(chosen[:-1]) + " and " * (len(chosen) > 1) + "".join(chosen[-1:])
    why = f" ({named} chosen for {n_train} training samples; pass them to set them)" if chosen else ""
    return (f"batch {config.batch_size}, {config.epochs} epochs of {steps} steps "
            f"({config.epochs * steps} optimizer steps){model}{why}")
