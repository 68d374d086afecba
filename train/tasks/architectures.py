"""The architectures the training side builds, each registered once with its builder.

In the manner of torchvision's ``register_model``: a task's training module
(``train/tasks/<task>.py``) decorates one builder per architecture of the runtime catalogue
(:func:`visionrt.runtime.tasks.architectures`)::

    @register_model("detect", "fasterrcnn")
    def fasterrcnn(kwargs: dict, classes: list[str], postprocess: dict | None) -> nn.Module:
        return FasterRCNN(len(classes), FasterRCNNConfig(**kwargs), nms_settings(postprocess))

    register_model("classify", "resnet")(per_class(ResNet))     # ResNet(num_classes, **kwargs)

``kwargs`` are the manifest's ``model.kwargs`` (a copy: the builder may pop from it), ``classes``
its class (or joint) names, ``postprocess`` its post-processing parameters, which models holding
post-processing in the graph (NMS) are built from; None before training has written them.
:func:`build_model` builds what a manifest's ``model`` entry names.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

from torch import nn

from ...runtime.tasks import architectures

Builder = Callable[[dict, list[str], "dict | None"], nn.Module]

_BUILDERS: dict[str, dict[str, Builder]] = {}
_QUICK: dict[tuple[str, str], dict[str, Any]] = {}


def register_model(task: str, name: str, quick: Mapping[str, Any] | None = None) -> Callable[[Builder], Builder]:
    """Decorator: ``builder`` builds ``task``'s architecture ``name``, which the runtime catalogue
    must list (``ValueError`` otherwise, or when ``name`` is registered twice). Without a function
    of its own: ``register_model(task, name)(per_class(Network))``. ``quick``: the
    :class:`~visionrt.train.config.TrainConfig` fields where this architecture's quick run differs
    from the task's."""
    def register(builder: Builder) -> Builder:
        if name not in architectures(task):
            raise ValueError(f"{task} model '{name}' is not in the runtime catalogue "
                             f"(runtime/tasks/{task}.py lists {', '.join(architectures(task))})")
        if name in _BUILDERS.setdefault(task, {}):
            raise ValueError(f"{task} model '{name}' is registered twice")
        _BUILDERS[task][name] = builder
        _QUICK[task, name] = dict(quick or {})
        return builder
    return register


def per_class(network: Callable[..., nn.Module]) -> Builder:
    """The builder of a network made as ``network(number of classes, **kwargs)`` (classifiers, segmenters)."""
    return lambda kwargs, classes, postprocess: network(len(classes), **kwargs)


def model_builders(task: str) -> dict[str, Builder]:
    """``task``'s builders by architecture name (importing the task's training module registers them)."""
    importlib.import_module(f"{__package__}.{task}")
    return dict(_BUILDERS.get(task, {}))


def quick_settings(task: str, name: str) -> dict[str, Any]:
    """The quick-run :class:`~visionrt.train.config.TrainConfig` fields of ``task``'s architecture
    ``name`` that differ from the task's quick configuration."""
    model_builders(task)
    return dict(_QUICK.get((task, name), {}))


def build_model(task: str, model_entry: dict, classes: list[str], postprocess: dict | None = None) -> nn.Module:
    """The network a manifest's ``model`` entry (``{"arch", "kwargs"}``) names, for ``classes``;
    ``ValueError`` naming the choices for an architecture ``task`` lacks."""
    builders = model_builders(task)
    arch = model_entry["arch"]
    if arch not in builders:
        raise ValueError(f"unknown {task} model '{arch}' (choose from {', '.join(builders)})")
    return builders[arch](dict(model_entry.get("kwargs", {})), classes, postprocess)
