"""The training half of a task's contract: :class:`TrainTask`.

A task's training module ``visionrt.train.tasks.<task>`` provides, beside its ``Task`` (a
:class:`TrainTask` subclass):

* ``build_data(out_dir, quick, seed, progress) -> Path``: the task's built-in dataset;
* ``default_config(quick) -> TrainConfig``: the quick CPU run or the full one, whose ``model``
  is the catalogue's default architecture (:func:`visionrt.runtime.tasks.architectures`);
* one builder per architecture of the task's catalogue, registered with
  ``@register_model(task, name)`` (:mod:`.architectures`).
"""
from __future__ import annotations

import abc
import dataclasses
import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ...runtime.errors import InputError
from ...runtime.manifest import InputSpec, OutputSpec
from ..config import TrainConfig
from ..data.build import is_builtin_digits
from ..data.check import Report, check_coco
from ..data.lazy import LazyImages
from .architectures import build_model


class Baseline(NamedTuple):
    """What a model that ignores the image scores on a split: ``value`` of the metric ``metric`` (a
    key of :meth:`TrainTask.evaluate`) when always predicting ``what``."""

    metric: str
    value: float
    what: str


class TrainTask(abc.ABC):
    """A task's data in memory, its loss and metrics, and its parts of the manifest.

    ``classes`` names the model's classes (or joints); ``mean``/``std`` ``[C]`` are the input
    normalisation (pixels scaled to [0, 1]) the model trains with and the manifest records."""

    #: The task's name (``manifest.task``).
    name: str
    #: Its primary metric on held-out data (higher is better): early stopping and the manifest's ``primary_metric``.
    metric: str
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    #: The input side of the task's built-in data: the default of ``TrainConfig.image_size``.
    image_size: int = 64
    #: The resize policy for the user's data (``TrainConfig.resize`` overrides it; the built-in
    #: data is already of the input size, so no policy changes its pixels).
    resize: str = "bilinear"

    def fitted_input(self, config: TrainConfig | None) -> InputSpec:
        """The model's input size and resize policy (normalisation comes later, from the data):
        ``config``'s where it sets them, else the task's. A centre crop is refused where the task
        has boxes or joints (its default is then a letterbox): it would cut objects off."""
        size = (config.image_size if config else None) or self.image_size
        resize = (config.resize if config else None) or self.resize
        if resize == "center-crop" and self.resize == "letterbox":
            raise InputError(f"--resize center-crop would cut {self.name} objects off the image",
                             fix="use letterbox (the default) or a stretch (bilinear)")
        return InputSpec(height=size, width=size, resize=resize)

    @staticmethod
    def mirrors(data_dir: str | os.PathLike, config: TrainConfig | None) -> bool:
        """Whether training mirrors images left-right at random: ``config.flip`` where set, else
        unless the data is the built-in digits (a mirrored digit is no digit)."""
        if config is not None and config.flip is not None:
            return config.flip
        return not is_builtin_digits(data_dir)

    @abc.abstractmethod
    def __len__(self) -> int:
        """Training samples per epoch."""

    def build_model(self, config: TrainConfig) -> nn.Module:
        """The network ``config`` names, for this data's classes (its registered builder, given
        :meth:`postprocess_defaults`)."""
        return build_model(self.name, {"arch": config.model, "kwargs": config.model_kwargs}, self.classes,
                           self.postprocess_defaults())

    @classmethod
    def check_split(cls, data_dir: Path, split: str, report: Report) -> None:
        """Check ``split`` of the user's dataset in ``data_dir`` in this task's format, noting each
        problem on ``report`` (``visionrt data check``; the checks of each format are in
        :mod:`visionrt.train.data.check`); default: COCO json with boxes."""
        check_coco(data_dir, split, report)

    @abc.abstractmethod
    def train_loss(self, model: nn.Module, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scalar loss of the training samples ``indices`` (augmented with ``generator``)."""

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on ``split`` (``"val"`` or ``"test"``), :attr:`metric` among them."""

    @abc.abstractmethod
    def outputs(self) -> list[OutputSpec]:
        """The model's outputs, for the manifest."""

    def train_sources(self) -> list[LazyImages]:
        """The training split's images on disk, which the loop's DataLoader reads ahead: every
        :class:`LazyImages` among ``splits["train"]``'s fields (tasks holding their data in memory: none)."""
        split = self.splits["train"]
        fields = split if isinstance(split, tuple) else vars(split).values()
        return [field for field in fields if isinstance(field, LazyImages)]

    def baseline(self, split: str) -> Baseline | None:
        """The score on ``split`` of a model that ignores the image (the warning at the end of
        training compares against it, :mod:`visionrt.train.verdict`); default: none."""
        return None

    def input_spec(self) -> InputSpec:
        """The manifest's input: :attr:`spec` (size and resize policy, set by the task from
        :meth:`fitted_input`), normalised by :attr:`mean`/:attr:`std`."""
        return dataclasses.replace(self.spec, mean=tuple(map(float, self.mean)), std=tuple(map(float, self.std)))

    def postprocess_defaults(self) -> dict:
        """The post-processing parameters training writes into the manifest's ``postprocess``: the
        defaults the runtime applies to this model (default: none)."""
        return {}

    def build_profile(self) -> dict:
        """The engine's default optimisation profile for the manifest's ``build_profile``
        (``min_batch``/``opt_batch``/``max_batch``, ``height``/``width`` as ``[min, opt, max]``);
        default: none (the builder's defaults and the fixed input size)."""
        return {}
