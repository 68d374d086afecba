"""visionrt's plugins as TensorRT ahead-of-time Python plugins (``tensorrt.plugin``).

Each op's ``tensorrt.py`` describes its outputs (``@trtp.register``) and its kernel
(``@trtp.aot_impl``): NVRTC-compiled code for the GPU the engine is built on, its launch
geometry and int32 arguments. TensorRT bakes the kernel into the engine, which then runs with
no Python and no plugin library (trtexec, Triton, C++). Call :func:`register_plugins` once
before parsing a TensorRT-flavour ONNX; :func:`check_tensorrt_takes_plugins` tells, before
parsing, whether an installed TensorRT can take them at all, and :func:`preflight` finds the
build GPU and compiles each op's kernel for it.

TensorRT's Python plugin wrapper catches whatever a callback (``register``'s describe,
``aot_impl``) raises, prints it to stderr and reports a generic failure, so the cause would
never reach the user. Every callback is therefore wrapped by :meth:`AotBuilder.reported`,
which keeps the first exception of the build; :func:`callback_failures`, around the parse and
build, re-raises it in place of the opaque error TensorRT then gives.

``tensorrt`` is imported only inside these functions: ``visionrt doctor`` imports this
module on machines without TensorRT.

Notes on the ``tensorrt.plugin`` API that the op modules follow:

- annotations must be real classes (no ``from __future__ import annotations`` in the op
  modules): TensorRT inspects them to tell tensors from attributes;
- ``aot_impl`` takes the inputs, every attribute in ``register``'s order, ``outputs`` and
  ``tactic``; TensorRT passes the attributes positionally in the order the ONNX node lists
  them, so ``register`` declares them in ONNX's (alphabetical) order;
- float attributes reach the kernel as ``-D`` defines (AOT kernel arguments are int32 only);
- the kernel is PTX for the build GPU's ``compute_XY``: ``aot_impl``'s documentation says of
  the compiled kernel "Presently, only PTX is supported" (``tensorrt/plugin/_lib.py``, 10.9+),
  and NVIDIA's quickly-deployable-plugins sample returns PTX. PTX carries the ISA of the NVRTC
  that wrote it, so a driver older than the NVRTC cannot JIT it: that is a :class:`PluginError`
  at build time naming both versions (see :func:`kernel_format`), not a silent switch to a
  CUBIN that the documented contract does not cover. ``register_plugins(output="cubin")``
  still hands TensorRT a CUBIN, as an explicit, unverified opt-in.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Mapping, Tuple, Union

from .. import tensorrt_env
from ..errors import PluginError
from . import nvrtc
from .launch import KernelLaunch

#: First TensorRT whose Python plugins compile ahead of time into the engine (``aot_impl``).
AOT_MIN_TENSORRT = (10, 9)
#: The op modules, each with ``PLUGINS`` (names) and ``register(aot)``.
OP_MODULES = ("roi_pool", "roi_align", "nms", "max_unpool")

_ALTERNATIVES = ("build with full TensorRT >= 10.9 (pip install 'visionrt[trt]' --extra-index-url "
                 "https://pypi.nvidia.com), or run the portable ONNX with the onnxruntime backend")


def op_modules() -> list[ModuleType]:
    """The ``tensorrt.py`` module of every op (importing them does not import TensorRT)."""
    return [importlib.import_module(f"{__package__}.{op}.tensorrt") for op in OP_MODULES]


def op_module(plugin: str) -> ModuleType:
    """The ``tensorrt.py`` module that registers plugin ``plugin`` (e.g. ``"RoiAlign2d"``)."""
    for module in op_modules():
        if plugin in module.PLUGINS:
            return module
    raise PluginError(f"no visionrt plugin '{plugin}'", fix=f"the plugins are {', '.join(plugin_names())}")


def plugin_names() -> list[str]:
    """Names of every visionrt plugin, as ONNX op types in the ``visionrt`` domain."""
    return [name for module in op_modules() for name in module.PLUGINS]


def check_tensorrt_takes_plugins(trt: ModuleType, ops: Iterable[str]) -> None:
    """PluginError, naming ``ops`` and the alternatives, unless ``trt`` can build them into an engine."""
    ops = sorted(set(ops))
    if not ops:
        return
    named = ", ".join(ops)
    if trt.__name__ in tensorrt_env.FLAVOURS["tensorrt_rtx"].modules:
        raise PluginError(f"TensorRT-RTX has no plugin layer, so it cannot build the visionrt plugin ops ({named})",
                          fix=_ALTERNATIVES)
    version = tensorrt_env.version(trt)
    if _release(version) < AOT_MIN_TENSORRT:
        raise PluginError(f"TensorRT {version} cannot compile Python plugins into an engine (ahead-of-time plugins "
                          f"need TensorRT {'.'.join(map(str, AOT_MIN_TENSORRT))} or later), so it cannot build the "
                          f"visionrt plugin ops ({named})", fix=_ALTERNATIVES)


def _release(version: str) -> tuple[int, int]:
    major, minor, *_ = (int(part) for part in version.split(".")[:2] + ["0"])
    return major, minor


def kernel_format(driver_version: int, nvrtc_version: tuple[int, int]) -> nvrtc.Output:
    """``"ptx"`` (the form ``aot_impl`` documents) when the driver (``cudaDriverGetVersion`` form,
    e.g. 13000) can JIT this NVRTC's PTX; a :class:`PluginError` naming both versions otherwise."""
    if nvrtc.driver_loads_ptx_from(driver_version, nvrtc_version):
        return "ptx"
    driver = f"{driver_version // 1000}.{driver_version % 1000 // 10}"
    raise PluginError(
        f"the NVIDIA driver (CUDA {driver}) cannot JIT the PTX of NVRTC {nvrtc_version[0]}.{nvrtc_version[1]}, "
        "and TensorRT's ahead-of-time plugins take PTX",
        fix=f"install an NVRTC of CUDA {driver} or older (nvidia-cuda-nvrtc, -cu12 for CUDA 12) or update the "
            "driver; register_plugins(output='cubin') hands TensorRT a CUBIN instead, which its documentation "
            "does not cover")


@dataclasses.dataclass
class AotBuilder:
    """What every op's ``aot_impl`` shares: ``trt``/``trtp`` and the kernel to hand to TensorRT.

    ``arch`` (compute capability, e.g. 86) and ``output`` default to the current CUDA device
    and :func:`kernel_format`, looked up at the first kernel request (engine build time).
    ``failure`` is the first exception a callback raised during the current build.
    """

    trt: ModuleType
    trtp: ModuleType
    arch: int | None = None
    output: nvrtc.Output | None = None
    failure: BaseException | None = None

    def dtype(self, trt_dtype: Any) -> str:
        """numpy name of a TensorRT float type the kernels take; PluginError for any other."""
        names = {self.trt.float32: "float32", self.trt.float16: "float16"}
        if trt_dtype not in names:
            raise PluginError(f"visionrt plugin kernels take float32 or float16 tensors, not {trt_dtype}",
                              fix="export the model in fp32 or fp16 (int8 QDQ models keep plugin inputs in float)")
        return names[trt_dtype]

    def element_type(self, plugin: str, data: Mapping[str, Any], indices: Mapping[str, Any] | None = None) -> str:
        """The kernel's one float type (numpy name): every ``data`` tensor (name -> TensorDesc) must
        have it, every ``indices`` tensor int64; PluginError naming the tensor otherwise."""
        (first, desc), *rest = data.items()
        dtype = self.dtype(desc.dtype)
        for name, other in rest:
            if other.dtype != desc.dtype:
                raise PluginError(f"{plugin}: {first} is {desc.dtype} and {name} {other.dtype}, but its kernel reads "
                                  "both as one float type", fix=f"cast {first} and {name} to the same float type")
        for name, other in (indices or {}).items():
            if other.dtype != self.trt.int64:
                raise PluginError(f"{plugin}: {name} must be int64, not {other.dtype}", fix=f"cast {name} to int64")
        return dtype

    def reported(self, callback: Callable) -> Callable:
        """``callback`` (same signature and annotations, which TensorRT inspects), keeping the first
        exception it raises in :attr:`failure` before TensorRT's wrapper swallows it."""

        @functools.wraps(callback)
        def keeping(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as err:
                if self.failure is None:
                    self.failure = err
                raise

        return keeping

    @property
    def result_type(self) -> Any:
        """The return annotation TensorRT requires of an ``aot_impl``."""
        trtp = self.trtp
        return Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]

    def kernel(self, source: Path, defines: Mapping[str, str], launch: KernelLaunch) -> tuple:
        """``aot_impl``'s result: (kernel name, compiled code, launch parameters, int32 arguments)."""
        if self.arch is None or self.output is None:
            arch, driver = _current_device()
            self.arch = self.arch or arch
            self.output = self.output or kernel_format(driver, nvrtc.nvrtc_version())
        code = nvrtc.compile_file(source, self.arch, defines, self.output).code
        trtp = self.trtp
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y, params.grid_z = (self._size(v) for v in launch.grid)
        params.block_x, params.block_y, params.block_z = launch.block
        params.shared_mem = launch.shared_mem
        args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(value) for value in launch.args])
        return launch.kernel, code, params, args

    def _size(self, value: Any) -> Any:
        return value if isinstance(value, int) else self.trtp.SymInt32(value)


def _current_device() -> tuple[int, int]:
    """(compute capability of the current CUDA device, driver version), e.g. (86, 13000)."""
    cudart = tensorrt_env.import_cudart()
    err, device = cudart.cudaGetDevice()
    if err != cudart.cudaError_t.cudaSuccess:
        raise PluginError(f"no CUDA device to compile the plugin kernels for: {tensorrt_env.cuda_error_text(cudart, err)}",
                          fix="build TensorRT engines on the GPU they are for")
    attr = cudart.cudaDeviceAttr
    major = _cuda_value(cudart, cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device),
                        f"read the compute capability of CUDA device {device}")
    minor = _cuda_value(cudart, cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device),
                        f"read the compute capability of CUDA device {device}")
    driver = _cuda_value(cudart, cudart.cudaDriverGetVersion(), "read the CUDA driver version")
    return major * 10 + minor, driver


def _cuda_value(cudart: ModuleType, result: tuple, doing: str) -> int:
    """The value of a cuda-python call ``(error, value)``; PluginError unless it succeeded."""
    err, value = result
    if err != cudart.cudaError_t.cudaSuccess:
        raise PluginError(f"CUDA failed to {doing}: {tensorrt_env.cuda_error_text(cudart, err)}",
                          fix="check the GPU with `nvidia-smi` and `visionrt doctor`")
    return value


def preflight(ops: Iterable[str], arch: int | None = None, output: nvrtc.Output | None = None
              ) -> tuple[int, nvrtc.Output]:
    """Before parsing: the build GPU's compute capability, the kernel format its driver loads, and
    each op's kernel compiled for them (with its example defines): no CUDA device, a driver too old
    for this NVRTC's PTX and a kernel NVRTC rejects are then a :class:`PluginError` with its fix here,
    not a failure inside a plugin callback. ``arch``/``output`` override the device's."""
    if arch is None or output is None:
        device_arch, driver = _current_device()
        arch = arch or device_arch
        output = output or kernel_format(driver, nvrtc.nvrtc_version())
    for module in dict.fromkeys(op_module(op) for op in ops):
        nvrtc.compile_file(module.KERNEL, arch, module.EXAMPLE_DEFINES, output)
    return arch, output


@contextlib.contextmanager
def callback_failures() -> Iterator[None]:
    """Around one parse and build: when it fails after a plugin callback raised, raise that
    exception instead (a :class:`PluginError` as it is, with its fix; any other wrapped in one),
    chained to the generic error TensorRT gave."""
    if _builder is not None:
        _builder.failure = None
    try:
        yield
    except Exception as err:
        failure = _builder.failure if _builder is not None else None
        if failure is None or failure is err:
            raise
        if isinstance(failure, PluginError):
            raise failure from err
        raise PluginError(f"a visionrt plugin callback failed: {type(failure).__name__}: {failure}",
                          fix="this is a bug in visionrt's plugin glue: report it with the build log") from failure
    finally:
        if _builder is not None:
            _builder.failure = None


_builder: AotBuilder | None = None


def register_plugins(trt: ModuleType | None = None, arch: int | None = None,
                     output: nvrtc.Output | None = None) -> list[str]:
    """Register every visionrt plugin with TensorRT's plugin registry; returns their names.

    Idempotent (TensorRT refuses a second registration; later calls only update ``arch`` and
    ``output``). ``trt`` defaults to the installed full TensorRT; ``arch``/``output`` override
    the build GPU's compute capability and the kernel format.
    """
    global _builder
    trt = trt if trt is not None else tensorrt_env.import_tensorrt("tensorrt")
    names = plugin_names()
    check_tensorrt_takes_plugins(trt, names)
    if _builder is None or _builder.trt is not trt:
        _builder = AotBuilder(trt, importlib.import_module(f"{trt.__name__}.plugin"), arch, output)
        for module in op_modules():
            module.register(_builder)
    else:
        _builder.arch, _builder.output = arch, output
    return names
