"""The models a server holds, loaded once at start-up from the directories it was given.

Each entry is ``DIR`` (served under the directory's name) or ``NAME=DIR``. Every file is
opened through :class:`~visionrt.runtime.manifest.ModelDir` (sha256-checked). Requests name a
model, never a path: nothing a client sends can make the server open another file.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Iterator, Sequence

from ..backends import TensorSpec
from ..errors import InputError, VisionRTError
from ..manifest import Manifest, ModelDir
from ..predictor import Predictor

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class UnknownModel(VisionRTError):
    """A request for a model the server does not hold (HTTP 404)."""


@dataclasses.dataclass
class ServedModel:
    """One model: ``instances`` Predictors (one session each) over the same directory.

    ``max_batch_size`` is the most images one execution takes (never above the engine
    profile's maximum batch where an engine runs it).
    """

    name: str
    model_dir: ModelDir
    predictors: list[Predictor]
    max_batch_size: int

    @property
    def manifest(self) -> Manifest:
        return self.model_dir.manifest

    @property
    def options(self) -> list[str]:
        return self.predictors[0].options

    @property
    def input(self) -> TensorSpec:
        return self.predictors[0].runner.inputs[0]

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.predictors[0].runner.outputs

    @property
    def backend(self) -> str:
        return self.predictors[0].backend

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()


def parse_entry(entry: str) -> tuple[str, Path]:
    """``"NAME=DIR"`` or ``"DIR"`` -> ``(name, dir)``; the name defaults to the directory's name."""
    name, sep, path = entry.partition("=")
    if not sep:
        name, path = Path(entry).resolve().name, entry
    if not _NAME.match(name):
        raise InputError(f"model name '{name}' is not usable in a URL",
                         fix="name it with NAME=DIR, NAME made of letters, digits, '_', '.', '-'")
    return name, Path(path)


def profile_max_batch(predictor: Predictor) -> int | None:
    """The largest batch the runner's engine profile accepts, or None when it has no such limit."""
    facts = getattr(predictor.runner, "facts", None) or {}
    profile = facts.get("profile", {}).get(predictor.manifest.input.name)
    return int(profile["max"][0]) if profile else None


def open_predictor(model_dir: ModelDir, backend: str, precision: str | None, threads: int) -> Predictor:
    """A Predictor of ``model_dir`` on ``backend`` in ``precision`` (default fp32)."""
    return Predictor(model_dir, backend=backend, threads=threads, precision=precision or "fp32")


class ModelRepository:
    """Name -> :class:`ServedModel`, loaded at start-up from ``entries`` only."""

    def __init__(self, models: dict[str, ServedModel]):
        self.models = models

    @classmethod
    def load(cls, entries: Sequence[str], backend: str = "onnxruntime", precision: str | None = None,
             instances: int = 1, threads: int = 0, max_batch_size: int = 32) -> "ModelRepository":
        if not entries:
            raise InputError("no model directory given", fix="visionrt serve MODEL_DIR [NAME=MODEL_DIR ...]")
        if instances < 1 or max_batch_size < 1:
            raise InputError("--instances and --max-batch-size must be at least 1")
        models: dict[str, ServedModel] = {}
        for entry in entries:
            name, path = parse_entry(entry)
            if name in models:
                raise InputError(f"two models are named '{name}'", fix="name them apart with NAME=DIR")
            model_dir = ModelDir.open(path)
            predictors = [open_predictor(model_dir, backend, precision, threads) for _ in range(instances)]
            limit = profile_max_batch(predictors[0])
            models[name] = ServedModel(name, model_dir, predictors, min(max_batch_size, limit or max_batch_size))
            log.info("serving %s (%s, %s) from %s", name, model_dir.manifest.task, predictors[0].backend, path)
        return cls(models)

    def get(self, name: str) -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise UnknownModel(f"no model named '{name}' is served here",
                               fix=f"the models are: {', '.join(sorted(self.models)) or 'none'}")
        return model

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self.models.values())

    def close(self) -> None:
        for model in self:
            model.close()
