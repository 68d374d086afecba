"""Which TensorRT flavours and CUDA GPUs this machine has (no torch).

Two flavours build and run engines: full **TensorRT** (``import tensorrt``; builds only on
the GPU it targets) and **TensorRT for RTX** (``import tensorrt_rtx`` from NVIDIA's SDK, or
``tensorrt_rtx_bindings`` from PyPI; builds ahead of time, also on a CPU-only machine, for
a list of compute capabilities). GPUs are found through cuda-python. ``visionrt doctor``
prints :func:`report`; the builder and the TensorRT runner use the rest.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import importlib.metadata
import logging
from types import ModuleType
from typing import Any

from .errors import BackendUnavailable


@dataclasses.dataclass(frozen=True)
class Flavour:
    """One TensorRT distribution: how to import it, name it, and install it."""

    name: str                 # value of ``flavour`` in the build facts
    title: str                # as printed in messages, e.g. "TensorRT-RTX"
    runner_name: str          # Runner.name of its engines
    short: str                # in engine file names and manifest keys: model.<short>.engine
    modules: tuple[str, ...]  # import names, tried in order
    install: str              # the one-line fix when it is missing
    builds_without_gpu: bool


FLAVOURS = {
    "tensorrt": Flavour(
        "tensorrt", "TensorRT", "tensorrt", "trt", ("tensorrt",),
        "pip install 'visionrt[trt]' --extra-index-url https://pypi.nvidia.com",
        builds_without_gpu=False),
    "tensorrt_rtx": Flavour(
        "tensorrt_rtx", "TensorRT-RTX", "tensorrt-rtx", "rtx", ("tensorrt_rtx", "tensorrt_rtx_bindings"),
        "pip install 'visionrt[rtx]'",
        builds_without_gpu=True),
}

#: Compute capabilities TensorRT-RTX's support matrix lists (used when it is not installed).
RTX_DOCUMENTED_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")

_log = logging.getLogger("visionrt.tensorrt")


def flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise BackendUnavailable(f"unknown TensorRT flavour '{name}'",
                                 fix=f"use one of auto, {', '.join(FLAVOURS)}") from None


class BrokenInstall(BackendUnavailable):
    """A TensorRT flavour is installed (its module is found) but fails to import, e.g. its shared
    libraries are missing (OSError) or one of its own imports fails."""


def import_tensorrt(name: str) -> ModuleType:
    """The module of flavour ``name``: :class:`BackendUnavailable` naming the extra when none of
    its modules is installed, :class:`BrokenInstall` with the cause when one is but fails to import."""
    spec = flavour(name)
    broken = []
    for module in spec.modules:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the module is there, something it imports is not
                broken.append(f"{module}: {err}")
        except (ImportError, OSError) as err:  # OSError: the Python module is there, its libraries are not
            broken.append(f"{module}: {type(err).__name__}: {err}")
    if broken:
        raise BrokenInstall(f"{spec.title} is installed but cannot be imported ({'; '.join(broken)})",
                            fix=f"reinstall it: {spec.install} --force-reinstall")
    raise BackendUnavailable(f"{spec.title} is not installed (no module {' or '.join(spec.modules)})",
                             fix=spec.install)


def installed(name: str) -> ModuleType | None:
    """The module of flavour ``name``, or ``None`` when it is not installed; :class:`BrokenInstall`
    when it is but fails to import (a broken install is an error to report, not an absence)."""
    try:
        return import_tensorrt(name)
    except BrokenInstall:
        raise
    except BackendUnavailable:
        return None


def resolve(name: str = "auto") -> Flavour:
    """``auto`` is full TensorRT when importable, else TensorRT-RTX; raise if neither is."""
    if name != "auto":
        return flavour(name)
    for candidate in FLAVOURS:
        if installed(candidate) is not None:
            return FLAVOURS[candidate]
    raise BackendUnavailable(
        "no TensorRT is installed: neither TensorRT nor TensorRT-RTX can be imported",
        fix=f"{FLAVOURS['tensorrt_rtx'].install} (builds on any machine), or "
            f"{FLAVOURS['tensorrt'].install} for full TensorRT")


def version(trt: ModuleType) -> str:
    return str(trt.__version__)


def same_release(a: str, b: str) -> bool:
    """Whether versions ``a`` and ``b`` agree in major.minor.patch (engines need that)."""
    return a.split(".")[:3] == b.split(".")[:3]


def rtx_targets(trt: ModuleType) -> list[str]:
    """Compute capabilities an installed TensorRT-RTX can build for, e.g. ``["7.5", "8.0", ...]``."""
    return [cc_text(member.value) for name, member in trt.ComputeCapability.__members__.items()
            if name.startswith("SM")]


def cc_text(value: int) -> str:
    """``86`` -> ``"8.6"``, ``120`` -> ``"12.0"``."""
    return f"{value // 10}.{value % 10}"


def make_logger(trt: ModuleType, keep: str = "INFO", limit: int = 10_000) -> Any:
    """A ``trt.ILogger`` that forwards to Python logging and keeps the last ``limit`` messages of
    severity ``keep`` or worse (bounded: an engine runner lives as long as its server and may log
    a warning per call).

    ``logger.messages`` holds ``(severity name, text)``, oldest first; ``logger.errors()`` the
    error texts, the cause to report when a parse, build or deserialization fails.
    """
    threshold = trt.ILogger.Severity.__members__[keep]
    levels = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
              "INFO": logging.DEBUG, "VERBOSE": logging.DEBUG}  # TensorRT's INFO is build chatter

    class KeepingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: collections.deque[tuple[str, str]] = collections.deque(maxlen=limit)

        def log(self, severity, msg):  # noqa: D102 (called by TensorRT)
            _log.log(levels.get(severity.name, logging.INFO), "%s", msg)
            if severity <= threshold:
                self.messages.append((severity.name, msg))

        def errors(self) -> list[str]:
            return [msg for severity, msg in self.messages if severity in ("ERROR", "INTERNAL_ERROR")]

    return KeepingLogger()


# GPUs ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # "8.6"
    memory_mib: int


def import_cudart() -> ModuleType:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailable("cuda-python is not installed: TensorRT engines need it for GPU memory",
                                 fix="pip install cuda-bindings (included in visionrt[rtx] and visionrt[trt])") from None
    return cudart


def find_gpus() -> tuple[list[Gpu], str | None]:
    """The CUDA GPUs visible here and, when there are none, why (no driver, no device, ...)."""
    try:
        cudart = import_cudart()
    except BackendUnavailable as err:
        return [], str(err)
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess:
        _, driver = cudart.cudaDriverGetVersion()
        if not driver:
            return [], "no NVIDIA driver"
        reason = cuda_error_text(cudart, err)
        cuda = cuda_bindings_major()
        if err == cudart.cudaError_t.cudaErrorInsufficientDriver and cuda:
            reason += (f" (this driver runs CUDA {driver // 1000}.{driver % 1000 // 10}; the CUDA {cuda} packages need "
                       f"{_DRIVER_FOR_CUDA.get(cuda, f'a CUDA {cuda} driver')}: update the driver, or install "
                       "the extras of an older CUDA, e.g. visionrt[trt] for CUDA 12)")
        return [], reason
    gpus = []
    for index in range(count):
        err, props = cudart.cudaGetDeviceProperties(index)
        if err == cudart.cudaError_t.cudaSuccess:
            gpus.append(Gpu(index, props.name.decode(errors="replace").rstrip("\x00"),
                            f"{props.major}.{props.minor}", props.totalGlobalMem >> 20))
    return gpus, None if gpus else "no CUDA device"


#: The oldest driver branch each CUDA major runs on.
_DRIVER_FOR_CUDA = {12: "an R525+ driver", 13: "an R580+ driver"}


def cuda_bindings_major() -> int | None:
    """The CUDA major of the installed cuda-bindings (cuda-python), or None without them."""
    for distribution in ("cuda-bindings", "cuda-python"):
        try:
            return int(importlib.metadata.version(distribution).split(".")[0])
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
    return None


def built_for_cuda(name: str) -> int | None:
    """The CUDA major the installed wheels of flavour ``name`` were built for, read from their
    distribution names (``tensorrt-cu12``, ``tensorrt-rtx-cu13-libs``, ...); None when that
    cannot be told (e.g. a TensorRT installed from NVIDIA's tar or deb packages)."""
    prefix = "tensorrt-rtx-cu" if name == "tensorrt_rtx" else "tensorrt-cu"
    for distribution in importlib.metadata.distributions():
        dist_name = (distribution.metadata["Name"] or "").lower().replace("_", "-")
        major = dist_name[len(prefix):].split("-")[0]
        if dist_name.startswith(prefix) and major.isdigit():
            return int(major)
    return None


def check_cuda_packages(name: str) -> None:
    """:class:`BackendUnavailable` when cuda-bindings are for another CUDA major than the
    TensorRT wheels of flavour ``name`` (two CUDA runtimes in one process; the newer one may
    also need a newer driver)."""
    wanted, have = built_for_cuda(name), cuda_bindings_major()
    if wanted and have and wanted != have:
        raise BackendUnavailable(f"{FLAVOURS[name].title} is built for CUDA {wanted}, the installed cuda-bindings "
                                 f"for CUDA {have}", fix=f"pip install 'cuda-bindings>={wanted},<{wanted + 1}'")


def cuda_error_text(cudart: ModuleType, err: Any) -> str:
    """``"cudaErrorNoDevice: no CUDA-capable device is detected"``."""
    _, name = cudart.cudaGetErrorName(err)
    _, text = cudart.cudaGetErrorString(err)
    return f"{name.decode()}: {text.decode()}"


def report() -> dict[str, Any]:
    """What ``visionrt doctor`` shows: flavours with versions and whether they can build here, GPUs."""
    gpus, no_gpu = find_gpus()
    flavours = {}
    for name, spec in FLAVOURS.items():
        try:
            trt, broken = installed(name), None
        except BrokenInstall as err:
            trt, broken = None, err
        entry: dict[str, Any] = {"installed": trt is not None or broken is not None,
                                 "version": version(trt) if trt else None,
                                 "module": trt.__name__ if trt else None,
                                 "can_build": trt is not None and (spec.builds_without_gpu or bool(gpus)),
                                 "can_run": trt is not None and bool(gpus)}
        if name == "tensorrt_rtx":
            entry["compute_capabilities"] = rtx_targets(trt) if trt else list(RTX_DOCUMENTED_TARGETS)
        if broken is not None:
            entry["broken"], entry["fix"] = str(broken), broken.fix
        elif trt is None:
            entry["fix"] = spec.install
        flavours[name] = entry
    return {"flavours": flavours, "gpus": [dataclasses.asdict(g) for g in gpus], "no_gpu_reason": no_gpu}
