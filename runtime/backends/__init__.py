"""Backend runners behind one interface, and how to open one for a model directory."""
from __future__ import annotations

from ..errors import BackendUnavailable
from ..manifest import ModelDir
from .base import Runner, TensorSpec

#: Backend names a user can ask for.
BACKENDS = ("onnxruntime", "tensorrt")


def open_runner(model_dir: ModelDir, backend: str = "onnxruntime", provider: str = "cpu",
                threads: int = 0, onnx_key: str = "onnx", engine_key: str | None = None) -> Runner:
    """A (not yet activated) runner for ``model_dir`` on ``backend``.

    ``onnxruntime`` runs file ``onnx_key`` with ``provider`` (cpu/cuda/tensorrt);
    ``tensorrt`` runs engine ``engine_key`` (default: the only or first engine in the manifest).
    """
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model_dir.path(onnx_key), provider=provider, threads=threads)
    if backend == "tensorrt":
        from .tensorrt import TensorRTRunner

        engines = model_dir.manifest.engines
        if not engines:
            raise BackendUnavailable(f"{model_dir.root} has no TensorRT engine",
                                     fix=f"build one: visionrt build {model_dir.root}")
        return TensorRTRunner.from_model_dir(model_dir, engine_key or next(iter(engines)))
    raise BackendUnavailable(f"unknown backend '{backend}'", fix=f"choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Runner", "TensorSpec", "open_runner"]
