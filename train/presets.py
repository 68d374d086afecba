"""Standard-depth presets: the networks and input sizes real photos need (classification at
224 px as ResNet-18, detection at 512 px), meant for a GPU. The quick CPU configurations of the
built-in data stay the defaults; a preset starts from the task's full configuration and changes
the fields it names (``visionrt train --preset standard``; flags and ``--config`` still win).
"""
from __future__ import annotations

from typing import Any

#: Per task, per preset name: TrainConfig fields over the full configuration.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "classify": {"standard": {
        "model": "resnet", "image_size": 224, "batch_size": 64, "epochs": 90, "lr": 0.1,
        "model_kwargs": {"widths": [64, 128, 256, 512], "blocks": 2, "stem": "imagenet"}}},   # ResNet-18
    "detect": {"standard": {
        "model": "yolo", "image_size": 512, "batch_size": 16, "epochs": 100, "optimizer": "adam", "lr": 1e-3,
        "model_kwargs": {"widths": [32, 64, 128, 256, 512], "blocks": 2, "head": 512}}},       # stride 32: 16×16 grid
}


def preset_names() -> list[str]:
    """Every preset name of any task (for the CLI's choices)."""
    return sorted({name for presets in PRESETS.values() for name in presets})


def preset(task: str, name: str) -> dict[str, Any]:
    """The fields of ``task``'s preset ``name``; ``ValueError`` naming the presets the task has."""
    presets = PRESETS.get(task, {})
    if name not in presets:
        have = ", ".join(presets) or "none"
        raise ValueError(f"task {task} has no preset '{name}' (its presets: {have})")
    return presets[name]
