"""Export a user's own ``nn.Module`` for a task to a full model directory.

    model_dir = export_module(MyNet(), "classify", "runs/mynet", classes=names, image_size=(224, 224),
                              mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), data="photos/")

The module runs once on an example batch and its outputs are checked against the task's
output contract (:mod:`visionrt.runtime.contracts`) before anything is written. Then: the
manifest (built as ``visionrt import`` builds it), the weights (``model.safetensors``), the
portable ONNX with the manifest in its metadata (the exporter of visionrt's own models, so
its custom ops become standard ONNX ops), the TensorRT flavour where the graph uses plugin
ops, and parity of each ONNX in onnxruntime against PyTorch eager on the user's images (a
folder of PNG/JPEG files; seeded noise images when none is given), per output tensor.

A module returns a tensor, a tuple in the contract's order, or a dict by output name. With
``factory`` ("pkg.mod:function", as the CLI's ``--module``) the directory records how to
rebuild the module, so the torch backend (benchmark baseline) can load it again.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..runtime import atomic
from ..runtime.backends.base import TensorSpec
from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.backends.torch import TorchRunner
from ..runtime.contracts import CONTRACTS, ContractError, contract
from ..runtime.errors import ArtifactError, BackendUnavailable, InputError
from ..runtime.images import load_image
from ..runtime.manifest import Manifest, ModelDir
from ..runtime.preprocess import model_input
from ..train import checkpoint
from .import_onnx import add_description_arguments, describe, description
from .onnx_export import export_onnx
from .parity import check_parity
from .stage import ATOL, PARITY_FILE, RTOL, export_trt_flavour, trt_flavour_runner

log = logging.getLogger(__name__)

#: Image files a parity folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Side of the example (and noise) images of a model that takes any size.
ANY_SIZE_EXAMPLE = 64


class _Ordered(nn.Module):
    """The user's module with its outputs as a tuple in ``names`` order (what the ONNX exporter and
    the parity reference need)."""

    def __init__(self, module: nn.Module, names: Sequence[str], tuple_names: Sequence[str]):
        super().__init__()
        self.module, self.names, self.tuple_names = module, list(names), list(tuple_names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = _named(self.module(images), self.tuple_names)
        return tuple(named[name] for name in self.names)


def _named(result: Any, tuple_names: Sequence[str]) -> dict[str, torch.Tensor]:
    if isinstance(result, dict):
        return dict(result)
    result = result if isinstance(result, (tuple, list)) else (result,)
    names = list(tuple_names) + [f"output{i}" for i in range(len(tuple_names), len(result))]
    return dict(zip(names, result))


def _tuple_names(task: str, count: int) -> list[str]:
    """Names for a module's positional outputs: those of the contract variant with ``count`` outputs."""
    variants = contract(task).variants
    chosen = next((v for v in variants if len(v.outputs) == count), variants[0])
    return [t.name for t in chosen.outputs]


def export_module(module: nn.Module, task: str, out_dir: str | os.PathLike, *, classes: Sequence[str] = (),
                  image_size: tuple[int, int] | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, resize: str = "bilinear",
                  postprocess: dict[str, Any] | None = None, name: str | None = None,
                  data: str | os.PathLike | None = None, samples: int = 8, factory: str | None = None,
                  factory_kwargs: dict[str, Any] | None = None, input_name: str = "images",
                  atol: float = ATOL, rtol: float = RTOL) -> ModelDir:
    """Export ``module`` for ``task`` into the new model directory ``out_dir`` (see the module doc);
    the parity reports are in ``manifest.parity``. :class:`ContractError` when the module's outputs
    do not meet the task's contract."""
    module = module.eval()
    any_size = contract(task).image_size == "any"
    height, width = (ANY_SIZE_EXAMPLE, ANY_SIZE_EXAMPLE) if any_size or image_size is None else image_size
    example = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    source = f"module {name or type(module).__name__}"
    try:
        with torch.inference_mode():
            result = module(example)
    except Exception as err:  # the user's code: any error, reported with the shape it was given
        raise ContractError(f"{source} fails on an example batch [2, 3, {height}, {width}]: "
                            f"{type(err).__name__}: {err}", fix="it must take [N, 3, H, W] float32 images") from err
    count = len(result) if isinstance(result, (tuple, list, dict)) else 1
    tuple_names = _tuple_names(task, count)
    named = _named(result, tuple_names)
    not_tensors = [k for k, v in named.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ContractError(f"{source} returns non-tensor output(s) {', '.join(not_tensors)}",
                            fix="return a tensor, a tuple of tensors or a dict of tensors")
    found = [TensorSpec(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in named.items()]
    size = None if any_size else image_size
    inputs = [TensorSpec(input_name, ("batch", 3, size[0] if size else "height", size[1] if size else "width"),
                         "float32")]
    spec, outputs, post = describe(task, inputs, found, source, classes=classes, image_size=size, mean=mean,
                                   std=std, resize=resize, postprocess=postprocess, batch=2,
                                   shape_check=(height, width))
    model_dir = _create(Path(out_dir), Manifest(
        task=task, model={"arch": name or type(module).__name__, "source": "nn.Module",
                          **({"factory": factory, "kwargs": factory_kwargs or {}} if factory else {})},
        classes=list(classes), input=spec, outputs=outputs, postprocess=post,
        versions={"torch": torch.__version__, "python": sys.version.split()[0]}))
    checkpoint.save_weights(module, model_dir.root / checkpoint.MODEL_FILE)
    model_dir.add_file("weights", model_dir.root / checkpoint.MODEL_FILE, role="PyTorch weights of the user's module")
    model_dir.record("export", module=type(module).__qualname__, factory=factory)
    model_dir.save()
    ordered = _Ordered(module, [o.name for o in outputs], tuple_names)
    export_onnx(model_dir, model=ordered)
    plugin_ops = export_trt_flavour(model_dir)
    check_module_parity(model_dir, ordered, data, samples, bool(plugin_ops), atol, rtol)
    return model_dir


def _create(out: Path, manifest: Manifest) -> ModelDir:
    if (out / "manifest.json").exists():
        raise ArtifactError(f"{out} already holds a model directory", fix="choose another --out, or delete it")
    return ModelDir.create(out, manifest)


def image_files(folder: str | os.PathLike, count: int) -> list[Path]:
    """The first ``count`` PNG/JPEG files of ``folder`` (sorted by name)."""
    root = Path(folder)
    paths = sorted(p for p in root.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    if not paths:
        raise InputError(f"no PNG or JPEG images in {root}", fix="pass --data a folder of photos for the parity check")
    return paths[:count]


def _feeds(manifest: Manifest, data: str | os.PathLike | None, samples: int) -> list[dict[str, np.ndarray]]:
    """Preprocessed inputs as the runtime makes them: one batch, or one image at a time for a model of any size."""
    spec = manifest.input
    if data is not None:
        images = [load_image(path) for path in image_files(data, samples)]
    else:
        rng = np.random.default_rng(0)
        side = max(manifest.postprocess.get("min_side", 0), ANY_SIZE_EXAMPLE)
        shape = (spec.height or side, spec.width or side, 3)
        images = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(samples)]
    if spec.height is not None:
        return [{spec.name: model_input(images, manifest)}]
    return [{spec.name: model_input([image], manifest)} for image in images]


def check_module_parity(model_dir: ModelDir, module: nn.Module, data: str | os.PathLike | None, samples: int,
                        trt_flavour: bool, atol: float = ATOL, rtol: float = RTOL) -> list:
    """Parity of the ONNX (and its TensorRT flavour) in onnxruntime against ``module`` in PyTorch eager,
    per output, on the images in ``data`` (or noise); recorded in the manifest and ``parity.json``."""
    manifest = model_dir.manifest
    feeds = _feeds(manifest, data, samples)
    on = f"{sum(len(f[manifest.input.name]) for f in feeds)} " + (f"images from {data}" if data else "noise images")
    with contextlib.ExitStack() as stack:
        candidates = [stack.enter_context(OnnxRuntimeRunner(model_dir.path("onnx")))]
        if trt_flavour:
            try:
                scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                candidates.append(stack.enter_context(trt_flavour_runner(model_dir, scratch)))
            except BackendUnavailable as err:
                log.warning("TensorRT flavour not checked: %s", err)
        reference = TorchRunner(lambda: module, candidates[0].inputs, [o.name for o in manifest.outputs])
        reports = [check_parity(reference, candidate, feeds, atol=atol, rtol=rtol) for candidate in candidates]
    for report in reports:
        manifest.parity[report.candidate] = {**report.to_dict(), "on": on}
        model_dir.record("parity", candidate=report.candidate, passed=report.passed, samples=report.samples)
        log.info("%s", report.summary())
    atomic.write_text(model_dir.root / PARITY_FILE, json.dumps(manifest.parity, indent=2) + "\n")
    model_dir.add_file("parity", model_dir.root / PARITY_FILE, role="parity reports per backend")
    model_dir.save()
    return reports


# the module from its factory ---------------------------------------------------------------
def load_factory(text: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """``"pkg.mod:factory"`` -> ``factory(**kwargs)``, an ``nn.Module``; :class:`InputError` naming what
    is wrong. Modules are found on ``sys.path`` and, as ``python -m`` and uvicorn do, in the current folder."""
    module_name, sep, attribute = text.partition(":")
    if not sep or not module_name or not attribute:
        raise InputError(f"--module {text!r} is not PKG.MODULE:FACTORY", fix="e.g. --module mypkg.models:make_net")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except ImportError as err:
        raise InputError(f"cannot import {module_name}: {err}",
                         fix="install the package, or run from the folder that holds it") from err
    except AttributeError:
        raise InputError(f"{module_name} has no {attribute}", fix="name a function or class of that module") from None
    model = factory(**(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise InputError(f"{text} returned {type(model).__name__}, not a torch.nn.Module",
                         fix="name a function or class that returns the module")
    return model


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Weights from a safetensors file (or a PyTorch state dict ``.pt``/``.pth``) into ``model``;
    :class:`InputError` when they do not fit it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist", fix="pass --weights the file of the trained weights")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        detail = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise InputError(f"{path.name} does not fit the module: {detail[-1]}",
                         fix="pass the weights saved from this module's state_dict()") from err
    return model


def load_module(model_dir: ModelDir) -> nn.Module:
    """The module of a directory that ``export --module`` wrote, rebuilt by its factory with its weights;
    :class:`BackendUnavailable` for one exported from Python without a factory."""
    m = model_dir.manifest.model
    if "factory" not in m:
        raise BackendUnavailable("the PyTorch module cannot be rebuilt: exported from Python without a factory",
                                 fix="pass factory='pkg.mod:function' to export_module")
    return load_weights(load_factory(m["factory"], m.get("kwargs")), model_dir.path("weights")).eval()


# command line ----------------------------------------------------------------------------
def cmd_export_module(args: argparse.Namespace) -> None:
    """``visionrt export --module PKG.MOD:FACTORY --task T --out DIR ...``; exits 1 when parity fails."""
    missing = [flag for flag, value in (("--task", args.task), ("--out", args.out)) if value is None]
    if missing:
        raise InputError(f"export --module needs {' and '.join(missing)}", fix="e.g. --task classify --out runs/mine")
    module = load_factory(args.module, args.module_kwargs)
    if args.weights is not None:
        load_weights(module, args.weights)
    options = description(args)
    options["name"] = options["name"] or args.module.partition(":")[2]
    model_dir = export_module(module, args.task, args.out, data=args.data, samples=args.samples or 8,
                              factory=args.module, factory_kwargs=args.module_kwargs, **options)
    parity = model_dir.manifest.parity
    passed = all(report["passed"] for report in parity.values())
    text = f"model directory written to {model_dir.root}; parity " + ", ".join(
        f"{name} {'PASS' if r['passed'] else 'FAIL'}" for name, r in parity.items())
    print(json.dumps({"model_dir": str(model_dir.root), "parity": parity}, indent=2) if args.json else text)
    if not passed:
        sys.exit(1)
