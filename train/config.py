"""Training configuration: one dataclass, defaults = the quick CPU run."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable


#: ``TrainConfig.schedule``: the learning rate after the linear warm-up, as a function of the
#: fraction of the remaining steps done: cosine decay to zero; step decay (×0.1 at 1/2 and 3/4,
#: the classic ResNet schedule); or constant.
SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": lambda done: 0.5 * (1 + math.cos(math.pi * done)),
    "step": lambda done: 0.1 ** ((done >= 0.5) + (done >= 0.75)),
    "constant": lambda done: 1.0,
}
#: ``TrainConfig.optimizer``: SGD with Nesterov momentum, or Adam.
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass
class TrainConfig:
    task: str = "classify"
    model: str = "resnet"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    epochs: int = 12
    batch_size: int = 64          # global: split across DDP processes
    lr: float = 0.1               # peak learning rate, reached after the warm-up
    schedule: str = "cosine"      # after the warm-up: "cosine", "step" (x0.1 at 1/2 and 3/4) or "constant"
    optimizer: str = "sgd"        # "sgd" (Nesterov momentum) or "adam"
    momentum: float = 0.9         # SGD only
    weight_decay: float = 5e-4
    patience: int = 4             # early stop after this many epochs without a better val metric
    max_minutes: float | None = None  # stop at the end of the epoch that crosses this budget
    seed: int = 0
    threads: int = 0              # torch intra-op threads per process (0 = torch's default)
    resume: bool = False
    image_size: int | None = None  # the model's input side in px (None: the task's, that of its built-in data)
    resize: str | None = None      # resize policy (visionrt.runtime.preprocess.RESIZE_POLICIES; None: the task's)
    workers: int = 0               # DataLoader processes decoding the training batches (0: in the training process)
    flip: bool | None = None       # mirror training images left-right at random (None: unless the data is the built-in digits)
    scale_jitter: float | None = None  # detect/instance: zoom each image by 1 ± this (None: 0.25, 0 on the built-in digits)
    # fields sized to the training set when training starts (visionrt.train.schedule.AUTO_FIELDS: batch_size,
    # epochs, patience, model); `visionrt train` lists those the user did not set; empty: every field as given
    auto: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown} (known: {sorted(known)})")
        return cls(**data)
