"""Checkpoints as safetensors: model weights, and optimizer + loop state for resuming.

``<dir>/model.safetensors`` holds the weights (what export reads). ``<dir>/resume.safetensors``
holds the optimizer's tensors under ``state.<param index>.<name>`` with the loop state
(epoch, best metric, param-group hyper-parameters) as JSON in the safetensors metadata.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..runtime import atomic
from ..runtime.errors import ArtifactError

MODEL_FILE = "model.safetensors"
RESUME_FILE = "resume.safetensors"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(model, "module", model)


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    with atomic.atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """``model`` with the weights of ``path``; :class:`ArtifactError` when the file is not a
    safetensors file or holds another model's weights (other names or shapes)."""
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors' SafetensorError (a bad header), OSError
        raise ArtifactError(f"{path} is not a safetensors weights file: {_first_line(err)}",
                            fix="re-run visionrt train, or put the weights file back") from err
    try:
        unwrap(model).load_state_dict(state)
    except RuntimeError as err:  # missing or unexpected keys, size mismatches
        raise ArtifactError(f"{path} holds the weights of another model: {_first_line(err)}",
                            fix="the manifest's model (arch, kwargs) must be the one these weights were trained as") \
            from err
    return model


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def save_resume(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, loop_state: dict[str, Any]) -> None:
    """Write weights and everything needed to continue training after ``loop_state['epoch']``."""
    save_weights(model, directory / MODEL_FILE)
    opt = optimizer.state_dict()
    tensors = {f"state.{index}.{name}": value.contiguous().cpu()
               for index, entry in opt["state"].items()
               for name, value in entry.items() if torch.is_tensor(value)}
    meta = {"loop": loop_state, "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict()}
    with atomic.atomic_path(directory / RESUME_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"visionrt": json.dumps(meta)})


def load_resume(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer and scheduler from :func:`save_resume`; return the loop state."""
    load_weights(model, directory / MODEL_FILE)
    path = directory / RESUME_FILE
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["visionrt"])
        state: dict[int, dict[str, Any]] = {}
        for key in f.keys():
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = f.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return meta["loop"]
