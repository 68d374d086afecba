"""TensorRT and TensorRT-RTX runner: a serialized engine on an NVIDIA GPU, through cuda-python.

Before it loads the engine it checks what can be checked on any machine, each with its
own clear error: the installed TensorRT is the flavour and release the engine was built with
(:class:`EngineMismatch`), the file is as long as the build wrote it (:class:`ArtifactError`),
there is a CUDA GPU (:class:`BackendUnavailable`) of a compute capability the engine targets
(:class:`EngineMismatch`), and every input and output has a NumPy type (:class:`ArtifactError`
for bfloat16, fp8, fp4 I/O). Each call then sets the input shapes (dynamic batch), grows the
buffers, copies in, runs ``execute_async_v3`` on its stream, copies out and synchronizes.

Host-side staging buffers are pinned (``cudaMallocHost``), as in NVIDIA's TensorRT samples:
copies from pageable memory are staged by the driver and are not asynchronous. Device and
pinned buffers grow (never shrink) per tensor and are freed on deactivation; outputs are
copied out of the pinned buffers, so a returned array stays valid after the next call.

Inputs, outputs and their shapes come from the build facts (``manifest.engines[key]``,
written by ``visionrt.export.build``), so they are known without a GPU.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import numpy as np

from .. import tensorrt_env
from ..errors import ArtifactError, BackendUnavailable, EngineMismatch, InputError, VisionRTError
from ..manifest import ModelDir
from .base import Runner, TensorSpec

#: Build facts the runner relies on.
REQUIRED_FACTS = ("flavour", "tensorrt_version", "engine_bytes", "inputs", "outputs", "profile")
#: TensorRT warnings and errors a runner keeps (the latest; the cause of a failed call is among them).
RUNNER_LOG_LIMIT = 200


class CudaError(VisionRTError):
    """A CUDA call failed while running an engine."""


class TensorRTRunner(Runner):
    """Runs the engine at ``engine_path``, described by ``build_facts`` (see ``visionrt.export.build``)."""

    def __init__(self, engine_path: str | os.PathLike, build_facts: Mapping[str, Any]):
        super().__init__()
        self.path = Path(engine_path)
        self.facts = dict(build_facts)
        missing = [key for key in REQUIRED_FACTS if key not in self.facts]
        if missing:
            raise ArtifactError(f"build facts of {self.path.name} lack {', '.join(missing)}",
                                fix="rebuild with `visionrt build`")
        if self.facts["flavour"] not in tensorrt_env.FLAVOURS:
            raise ArtifactError(f"build facts of {self.path.name} name an unknown flavour {self.facts['flavour']!r}",
                                fix="rebuild with `visionrt build`")
        self.flavour = tensorrt_env.FLAVOURS[self.facts["flavour"]]
        self.name = self.flavour.runner_name
        self._cudart: ModuleType | None = None
        self._runtime = self._engine = self._context = self._stream = self._logger = None
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._pinned: dict[str, tuple[int, int]] = {}   # tensor name -> (pinned host pointer, bytes)

    @classmethod
    def from_model_dir(cls, model_dir: ModelDir, key: str = "rtx") -> "TensorRTRunner":
        """The runner of engine ``key`` of ``model_dir`` (its sha256 checked against the manifest)."""
        facts = model_dir.manifest.engines.get(key)
        if facts is None:
            built = ", ".join(sorted(model_dir.manifest.engines)) or "none"
            raise ArtifactError(f"{model_dir.root} has no engine '{key}' (it has: {built})",
                                fix="run `visionrt build` on it")
        return cls(model_dir.path(key), facts)

    # metadata ------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        return [_spec(tensor) for tensor in self.facts["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [_spec(tensor) for tensor in self.facts["outputs"]]

    # lifecycle -----------------------------------------------------------------------------
    def _activate(self) -> None:
        self._check_dtypes()
        trt = self._tensorrt()
        self._check_file()
        self._cudart = tensorrt_env.import_cudart()
        tensorrt_env.check_cuda_packages(self.flavour.name)
        self._check_gpu(trt)
        self._logger = tensorrt_env.make_logger(trt, keep="WARNING", limit=RUNNER_LOG_LIMIT)
        self._runtime = trt.Runtime(self._logger)
        self._engine = deserialize(trt, self._runtime, self.path.read_bytes(), self._logger, self.path.name)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise CudaError(f"{self.flavour.title} cannot create an execution context for {self.path.name}: "
                            + ("; ".join(self._logger.errors()) or "no error message"))
        self._stream = self._cuda(self._cudart.cudaStreamCreate(), "create a stream")

    def _deactivate(self) -> None:
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        for pointer, _ in self._pinned.values():
            self._cudart.cudaFreeHost(pointer)
        self._buffers.clear()
        self._pinned.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
        self._stream = None
        self._context = None  # before the engine, which it needs while it is torn down
        self._engine = None   # before the runtime
        self._runtime = None

    def _tensorrt(self) -> ModuleType:
        """The installed module of the engine's flavour, if its release is the one that built it."""
        built = f"{self.flavour.title} {self.facts['tensorrt_version']}"
        trt = tensorrt_env.installed(self.flavour.name)
        if trt is not None and tensorrt_env.same_release(tensorrt_env.version(trt), self.facts["tensorrt_version"]):
            return trt
        here = [f"{spec.title} {tensorrt_env.version(module)}" for name, spec in tensorrt_env.FLAVOURS.items()
                if (module := tensorrt_env.installed(name)) is not None]
        if not here:
            raise BackendUnavailable(f"engine {self.path.name} was built with {built}, and no TensorRT is installed here",
                                     fix=self.flavour.install)
        raise EngineMismatch(f"engine {self.path.name} was built with {built}, this machine has {', '.join(here)}",
                             fix="rebuild with `visionrt build`" + ("" if trt else f", or {self.flavour.install}"))

    def _check_dtypes(self) -> None:
        """:class:`ArtifactError` for an input or output NumPy cannot hold (bfloat16, fp8, fp4)."""
        for spec in self.inputs + self.outputs:
            try:
                np.dtype(spec.dtype)
            except TypeError:
                raise ArtifactError(f"engine {self.path.name}: tensor '{spec.name}' is {spec.dtype}, which NumPy "
                                    "(and so this runner) cannot hold",
                                    fix="export with float32 or float16 inputs and outputs (cast inside the "
                                        "model) and rebuild") from None

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise ArtifactError(f"engine {self.path} does not exist", fix="run `visionrt build`")
        size, built = self.path.stat().st_size, self.facts["engine_bytes"]
        if size != built:
            raise ArtifactError(f"engine {self.path} has {size} bytes, the build wrote {built}: truncated or replaced",
                                fix="rebuild with `visionrt build`")

    def _check_gpu(self, trt: ModuleType) -> None:
        gpus, no_gpu = tensorrt_env.find_gpus()
        if not gpus:
            raise BackendUnavailable(f"no CUDA GPU ({no_gpu}): TensorRT engines run only on an NVIDIA GPU",
                                     fix="use the onnxruntime backend")
        gpu, targets = gpus[0], self.facts.get("compute_capabilities") or []
        if targets and gpu.compute_capability not in targets:
            cc = gpu.compute_capability
            if self.flavour.name == "tensorrt":
                fix = "rebuild on this machine with `visionrt build --flavour tensorrt`"
            elif cc in tensorrt_env.rtx_targets(trt):
                fix = f"rebuild with `visionrt build --flavour tensorrt_rtx --compute-capability {cc}`"
            else:
                fix = (f"TensorRT-RTX does not support compute capability {cc}: build with full TensorRT "
                       f"({tensorrt_env.FLAVOURS['tensorrt'].install}) or use the onnxruntime backend")
            raise EngineMismatch(f"engine {self.path.name} targets compute capability {', '.join(targets)}; "
                                 f"this GPU ({gpu.name}) is {cc}", fix=fix)

    # inference -----------------------------------------------------------------------------
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, context, stream = self._cudart, self._context, self._stream
        for spec in self.inputs:
            array = feed[spec.name]
            self._check_profile(spec.name, array.shape)
            if not context.set_input_shape(spec.name, array.shape):
                raise InputError(f"{self.name}: the engine rejects shape {array.shape} for input '{spec.name}'")
            pointer = self._device_buffer(spec.name, array.nbytes)
            host = self._pinned_view(spec.name, array.shape, array.dtype)
            np.copyto(host, array)
            self._cuda(cudart.cudaMemcpyAsync(pointer, host.ctypes.data, array.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                       f"copy input '{spec.name}' to the GPU")
        results = {}
        for spec in self.outputs:
            shape = tuple(context.get_tensor_shape(spec.name))
            if any(dim < 0 for dim in shape):
                raise ArtifactError(f"{self.name}: output '{spec.name}' has a data-dependent shape {shape}",
                                    fix="export the model with fixed-size outputs")
            results[spec.name] = self._pinned_view(spec.name, shape, np.dtype(spec.dtype))
            self._device_buffer(spec.name, results[spec.name].nbytes)
        for name, (pointer, _) in self._buffers.items():
            context.set_tensor_address(name, pointer)
        if not context.execute_async_v3(int(stream)):
            raise CudaError(f"{self.name}: execute_async_v3 failed: "
                            + ("; ".join(self._logger.errors()[-3:]) or "no error message"))
        for name, host in results.items():
            self._cuda(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes,
                                              cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                       f"copy output '{name}' from the GPU")
        self._cuda(cudart.cudaStreamSynchronize(stream), "run the engine")
        return {name: host.copy() for name, host in results.items()}  # the pinned buffers are reused

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        """:class:`InputError` when ``shape`` lies outside the engine's optimisation profile."""
        profile = self.facts["profile"][name]
        for axis, (size, low, high) in enumerate(zip(shape, profile["min"], profile["max"])):
            if not low <= size <= high:
                what = "batch" if axis == 0 else f"axis {axis}"
                raise InputError(f"{self.name}: input '{name}' has {what} {size}, the engine takes {low}..{high}",
                                 fix="split the batch, or rebuild with `visionrt build --max-batch`" if axis == 0
                                 else "resize the input, or rebuild with `visionrt build --height/--width`")

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """Device pointer of at least ``nbytes`` for tensor ``name``, grown (never shrunk) on demand."""
        return self._grow(self._buffers, name, nbytes, self._cudart.cudaMalloc, self._cudart.cudaFree, "device")

    def _pinned_view(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An array ``shape`` of ``dtype`` over the pinned host buffer of tensor ``name`` (grown on demand)."""
        count = int(np.prod(shape, dtype=np.int64))
        pointer = self._grow(self._pinned, name, count * dtype.itemsize, self._cudart.cudaMallocHost,
                             self._cudart.cudaFreeHost, "pinned host")
        memory = (ctypes.c_char * self._pinned[name][1]).from_address(pointer)
        return np.frombuffer(memory, dtype=dtype, count=count).reshape(shape)

    def _grow(self, pool: dict[str, tuple[int, int]], name: str, nbytes: int, malloc, free, kind: str) -> int:
        """Pointer of at least ``nbytes`` from ``pool[name]``, reallocated with ``malloc`` when too small.

        The old entry leaves ``pool`` before it is freed: when the allocation that follows fails
        (out of memory), no entry names freed memory, to be used by the next call or freed twice.
        """
        pointer, capacity = pool.get(name, (0, 0))
        if pointer and nbytes <= capacity:
            return pointer
        if pointer:
            del pool[name]
            self._cuda(free(pointer), f"free the {kind} buffer of '{name}'")
        capacity = max(nbytes, 1)
        pointer = self._cuda(malloc(capacity), f"allocate {capacity} bytes of {kind} memory for '{name}'")
        pool[name] = (pointer, capacity)
        return pointer

    def _cuda(self, result: tuple, doing: str) -> Any:
        """Value of a cuda-python call ``(error, [value])``; :class:`CudaError` unless it succeeded."""
        error, *value = result
        if error != self._cudart.cudaError_t.cudaSuccess:
            raise CudaError(f"{self.name}: CUDA failed to {doing}: {tensorrt_env.cuda_error_text(self._cudart, error)}")
        return value[0] if value else None


def deserialize(trt: ModuleType, runtime: Any, data: bytes, logger: Any, name: str) -> Any:
    """The engine in ``data``; :class:`EngineMismatch` or :class:`ArtifactError` with TensorRT's reason otherwise."""
    if hasattr(runtime, "get_engine_validity"):  # TensorRT-RTX: names the reason without loading
        validity, diagnostics = runtime.get_engine_validity(data)
        reasons = [flag for flag, bit in trt.EngineInvalidityDiagnostics.__members__.items()
                   if int(diagnostics) & int(bit)]
        if validity == trt.EngineValidity.INVALID and reasons:
            error = ArtifactError if reasons == ["MALFORMED_ENGINE"] else EngineMismatch
            raise error(f"engine {name} cannot run here: {', '.join(r.lower().replace('_', ' ') for r in reasons)}",
                        fix="update the NVIDIA driver" if any("OLD_CUDA" in r for r in reasons)
                        else "rebuild with `visionrt build`")
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except RuntimeError as err:  # most releases return None instead
        logger.messages.append(("ERROR", str(err)))
        engine = None
    if engine is None:
        raise ArtifactError(f"cannot deserialize engine {name}: " + ("; ".join(logger.errors()) or "no error message"),
                            fix="the file is truncated, corrupt or from another TensorRT: rebuild with `visionrt build`")
    return engine


def _spec(tensor: Mapping[str, Any]) -> TensorSpec:
    """TensorSpec of a build-facts tensor; ``-1`` (dynamic) becomes ``None``."""
    return TensorSpec(tensor["name"], tuple(None if dim < 0 else dim for dim in tensor["shape"]), tensor["dtype"])
