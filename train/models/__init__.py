"""Model construction by task, from a manifest's ``model`` entry."""
from __future__ import annotations

from torch import nn

from ...runtime.manifest import Manifest
from .classify import ClassifierConfig, build_classifier


def build_from_manifest(manifest: Manifest) -> nn.Module:
    """An untrained module of the architecture the manifest records (load weights after)."""
    if manifest.task == "classify":
        return build_classifier(ClassifierConfig(manifest.model["arch"], manifest.model.get("kwargs", {})),
                                len(manifest.classes))
    raise ValueError(f"no model builder for task '{manifest.task}'")
