"""A batch size and schedule sized to the training set, for the fields the user left unset.

The tasks' default batch sizes and epochs are tuned on the built-in data (thousands of images:
tens of optimizer steps per epoch). On a user's first few dozen photos the same defaults give one
or two steps per epoch and a run that early-stops after a handful of steps. :func:`size_to_data`
changes only the fields listed in ``TrainConfig.auto`` (``visionrt train`` lists those the user
did not set, so flags and ``--config`` always win; the Python API's default, an empty list, uses
the configuration as given):

* ``batch_size``: ``min(task default, max(MIN_BATCH, n_train // BATCHES_PER_EPOCH), n_train)``,
  so an epoch is at least about :data:`BATCHES_PER_EPOCH` steps;
* ``epochs``: raised until the run has at least :data:`MIN_STEPS` optimizer steps;
* ``patience``: early stopping cannot end the run before :data:`MIN_STEPS` steps
  (:func:`may_stop_early`).

On the built-in datasets every rule leaves the task's configuration as it is (tested).
"""
from __future__ import annotations

import dataclasses
import math

from .config import TrainConfig

#: The fields :func:`size_to_data` may change.
AUTO_FIELDS = ("batch_size", "epochs", "patience")
#: The smallest batch chosen automatically (BatchNorm needs a few samples per batch).
MIN_BATCH = 8
#: Aim for at least this many steps per epoch when choosing the batch size.
BATCHES_PER_EPOCH = 8
#: Optimizer steps a run trains at least (epochs raised, early stopping held back).
MIN_STEPS = 180


def steps_per_epoch(batch_size: int, n_train: int, world: int = 1) -> int:
    """Optimizer steps in one epoch of ``n_train`` samples split over ``world`` processes
    (incomplete batches dropped)."""
    per_rank = max(1, batch_size // world)
    return n_train // world // per_rank


def size_to_data(config: TrainConfig, n_train: int, world: int = 1) -> TrainConfig:
    """``config`` with its automatic fields (``config.auto``) sized to ``n_train`` training samples."""
    batch = config.batch_size
    if "batch_size" in config.auto:
        batch = max(1, min(config.batch_size, max(MIN_BATCH, n_train // BATCHES_PER_EPOCH), n_train))
    epochs = config.epochs
    steps = steps_per_epoch(batch, n_train, world)
    if "epochs" in config.auto and steps:
        epochs = max(epochs, math.ceil(MIN_STEPS / steps))
    return dataclasses.replace(config, batch_size=batch, epochs=epochs)


def may_stop_early(config: TrainConfig, steps_done: int) -> bool:
    """Whether early stopping may end the run after ``steps_done`` optimizer steps: always when
    ``patience`` is the user's, else after :data:`MIN_STEPS`."""
    return "patience" not in config.auto or steps_done >= MIN_STEPS


def describe(config: TrainConfig, n_train: int, world: int = 1) -> str:
    """One line naming the batch size and schedule a run uses and which of them were chosen here."""
    steps = steps_per_epoch(config.batch_size, n_train, world)
    chosen = [f"--{name.replace('_', '-')}" for name in ("batch_size", "epochs") if name in config.auto]
    why = (f" ({' and '.join(chosen)} chosen for {n_train} training samples; pass them to set them)"
           if chosen else "")
    return (f"batch {config.batch_size}, {config.epochs} epochs of {steps} steps "
            f"({config.epochs * steps} optimizer steps){why}")
