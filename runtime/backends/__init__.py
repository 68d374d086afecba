"""Backend runners behind one interface, and how to open one for a model directory."""
from __future__ import annotations

import logging

import importlib.util
from typing import Any, Callable

from ..errors import ArtifactError, BackendUnavailable
from ..manifest import ModelDir
from ..precision import check_precision, resolve_onnx_key
from .base import Runner, TensorSpec

#: Backend names a user can ask for.
BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch", "auto")
#: Backends the runtime runs by itself (``predict``, ``serve``): the PyTorch reference needs the training code.
RUNTIME_BACKENDS = tuple(b for b in BACKENDS if b != "torch")


def open_runner(model_dir: ModelDir, backend: str = "onnxruntime", provider: str = "cpu",
                threads: int = 0, onnx_key: str | None = None, engine_key: str | None = None,
                load_model: Callable[[ModelDir], Any] | None = None, precision: str = "fp32") -> Runner:
    """A (not yet activated) runner for ``model_dir`` on ``backend``.

    ``onnxruntime`` runs file ``onnx_key`` (default: the file of ``precision``, see
    :mod:`..precision`) with ``provider`` (cpu/cuda/tensorrt); ``openvino`` runs the same file on
    the CPU (also ``precision="bf16"``: the fp32 file computed in bfloat16);
    ``auto`` picks the fastest CPU backend for ``precision`` (see :mod:`.auto`; the runner's
    ``chosen_because`` says why); ``tensorrt`` runs engine ``engine_key`` (default: the first engine built from ``precision``'s file);
    ``torch`` runs ``load_model(model_dir)`` (the trained ``nn.Module``, from the training code:
    see :mod:`.torch`) in PyTorch eager.
    """
    if backend == "auto":  # the fastest CPU backend for the precision; the runner says why
        from .auto import choose_cpu_backend

        chosen, why = choose_cpu_backend(model_dir, precision, lambda candidate: open_runner(
            model_dir, candidate, threads=threads, precision=precision))
        runner = open_runner(model_dir, chosen, threads=threads, onnx_key=onnx_key, precision=precision)
        runner.chosen_because = why
        logging.getLogger(__name__).info("backend auto: %s", why)
        return runner
    if backend == "torch":
        return _torch_runner(model_dir, threads, load_model)
    if backend == "openvino":
        from .openvino import OpenVinoRunner

        compute = "bf16" if precision == "bf16" else "fp32"
        key = onnx_key or resolve_onnx_key(model_dir, "fp32" if precision == "bf16" else precision)
        return _adapted(model_dir, OpenVinoRunner(model_dir.path(key), threads=threads, compute=compute))
    check_precision(precision)
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeRunner

        key = onnx_key or resolve_onnx_key(model_dir, precision)
        return _adapted(model_dir, OnnxRuntimeRunner(model_dir.path(key), provider=provider, threads=threads))
    if backend == "tensorrt":
        from .tensorrt import TensorRTRunner

        engines = model_dir.manifest.engines
        if not engines:
            raise BackendUnavailable(f"{model_dir.root} has no TensorRT engine",
                                     fix=f"build one: visionrt build {model_dir.root}")
        return _adapted(model_dir, TensorRTRunner.from_model_dir(model_dir, engine_key or _engine_for(model_dir, precision)))
    raise BackendUnavailable(f"unknown backend '{backend}'", fix=f"choose one of {', '.join(BACKENDS)}")


def _adapted(model_dir: ModelDir, runner: Runner) -> Runner:
    """``runner`` with an imported model's outputs mapped onto its task's contract (:mod:`..output_adapters`)."""
    from ..output_adapters import adapted

    spec = model_dir.manifest.input
    return adapted(runner, model_dir.manifest.postprocess, spec.height, spec.width, spec.layout)


def _engine_for(model_dir: ModelDir, precision: str) -> str:
    """The first engine of the manifest built from an ONNX of ``precision``."""
    for key, facts in model_dir.manifest.engines.items():
        if facts.get("precision", "fp32") == precision:
            return key
    raise ArtifactError(f"{model_dir.root} has no {precision} TensorRT engine "
                        f"(it has: {', '.join(model_dir.manifest.engines)})",
                        fix=f"build one: visionrt build {model_dir.root} --precision {precision}")


def _torch_runner(model_dir: ModelDir, threads: int, load_model: Callable[[ModelDir], Any] | None) -> Runner:
    try:
        installed = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a None placeholder in sys.modules
        installed = False
    if not installed:
        raise BackendUnavailable("PyTorch is not installed", fix="pip install 'visionrt[train]'")
    if load_model is None:
        raise BackendUnavailable("the torch backend needs the training code to build the model",
                                 fix="pass load_model=visionrt.train.loop.load_trained")
    from .torch import TorchRunner

    spec = model_dir.manifest.input
    return TorchRunner(lambda: load_model(model_dir), [TensorSpec(spec.name, tuple(spec.shape), spec.dtype)],
                       [o.name for o in model_dir.manifest.outputs], threads=threads)


__all__ = ["BACKENDS", "RUNTIME_BACKENDS", "Runner", "TensorSpec", "open_runner"]
