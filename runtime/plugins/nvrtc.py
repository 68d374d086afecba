"""Compile the plugin kernels with NVRTC from PyPI: no GPU and no CUDA toolkit needed.

NVRTC comes from the ``cuda`` extra (``cuda-bindings`` + ``nvidia-cuda-nvrtc``). A kernel
file may include ``visionrt_cuda.cuh`` (beside this module); float attributes are baked in
as ``-D`` defines. Any compiler diagnostic, warnings included, fails the compilation with
the full log (as ``-Werror``, whatever the NVRTC version). Results are cached per process by
(source and header hash, architecture, output kind, defines).

Two output kinds:

- ``"cubin"``: machine code for one real architecture (``sm_XY``); the CUDA driver loads it
  whatever its minor version.
- ``"ptx"``: for the virtual architecture ``compute_XY``, JIT-compiled by whoever loads it.
  NVRTC 13.5 writes PTX ISA 9.5 and a driver older than the NVRTC cannot load it (a CUDA
  13.0 driver knows ISA 9.0): see :func:`driver_loads_ptx_from` and
  :data:`PLUGIN_DRIVER_MINIMUM`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path
from typing import Literal, Mapping

import numpy as np

from ..errors import PluginError

#: Architectures every kernel is compiled for in CI (Turing, Ampere, Ampere GA10x, Ada, Hopper).
ARCHS: tuple[int, ...] = (75, 80, 86, 89, 90)

#: The header the kernels include, passed to NVRTC by name.
HEADER = Path(__file__).with_name("visionrt_cuda.cuh")

#: NVRTC options for every compilation: C++17, no fused multiply-add (kernels then round
#: like the NumPy references: same operation order, IEEE float), IEEE division.
OPTIONS: tuple[str, ...] = ("--std=c++17", "--fmad=false")

_INSTALL_FIX = "pip install 'visionrt[cuda]' (cuda-bindings + nvidia-cuda-nvrtc)"

Output = Literal["cubin", "ptx"]


class KernelCompileError(PluginError):
    """NVRTC rejected a kernel or warned about it; ``log`` holds the compiler's output."""

    def __init__(self, message: str, log: str):
        super().__init__(f"{message}\n{log}", fix="fix the kernel source: visionrt compiles with warnings as errors")
        self.log = log


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A compiled kernel module: ``code`` is a CUBIN (ELF) or PTX text (NUL-terminated)."""

    code: bytes
    arch: int
    output: Output
    seconds: float


def _nvrtc():
    """The NVRTC bindings, or a PluginError naming the extra to install."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as err:
        raise PluginError(f"NVRTC is not available: {err}", fix=_INSTALL_FIX) from err
    try:
        _check(nvrtc, nvrtc.nvrtcVersion())
    except PluginError:
        raise
    except Exception as err:  # the bindings load libnvrtc lazily; a missing library surfaces here
        raise PluginError(f"the NVRTC library cannot be loaded: {err}", fix=_INSTALL_FIX) from err
    return nvrtc


def _check(nvrtc, result):
    """Unpack a cuda-bindings return tuple, raising on an NVRTC error code."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise PluginError(f"NVRTC call failed: {status.name}", fix=_INSTALL_FIX)
    return values[0] if len(values) == 1 else tuple(values)


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library in use."""
    nvrtc = _nvrtc()
    return tuple(_check(nvrtc, nvrtc.nvrtcVersion()))


def supported_archs() -> tuple[int, ...]:
    """Real architectures this NVRTC can compile for, e.g. (75, 80, ..., 120)."""
    nvrtc = _nvrtc()
    return tuple(_check(nvrtc, nvrtc.nvrtcGetSupportedArchs()))


#: The oldest CUDA driver (``cuDriverGetVersion`` form) that loads the PTX of the NVRTC each
#: install extra pins (pyproject.toml caps NVRTC at one minor so that this holds; README "GPU
#: requirements"): [trt] NVRTC 12.8 -> R570, [trt-cu13] and [cuda] NVRTC 13.0 -> R580.
PLUGIN_DRIVER_MINIMUM = {"trt": 12080, "trt-cu13": 13000, "cuda": 13000}


def driver_loads_ptx_from(driver_version: int, nvrtc: tuple[int, int]) -> bool:
    """Whether a CUDA driver (``cuDriverGetVersion`` form, e.g. 13000) can JIT this NVRTC's PTX.

    PTX carries the ISA version of the compiler that wrote it; a driver loads PTX only from
    compilers no newer than itself.
    """
    return driver_version >= nvrtc[0] * 1000 + nvrtc[1] * 10


def define_flags(defines: Mapping[str, str]) -> tuple[str, ...]:
    """``-DNAME=VALUE`` options in a stable order."""
    return tuple(f"-D{name}={value}" for name, value in sorted(defines.items()))


def float_literal(value: float) -> str:
    """A C++ float expression that is exactly ``value`` rounded to float32 (hex float, C++17)."""
    value = float(np.float32(value))
    if math.isinf(value):
        return "(__int_as_float(0x7f800000))" if value > 0 else "(-__int_as_float(0x7f800000))"
    if math.isnan(value):
        raise PluginError("a NaN attribute cannot be compiled into a kernel")
    return f"{value.hex()}f"


_cache: dict[tuple, Compiled] = {}


def compile_source(
    source: str,
    arch: int,
    defines: Mapping[str, str] | None = None,
    output: Output = "cubin",
    name: str = "kernel.cu",
) -> Compiled:
    """Compile CUDA C++ ``source`` for compute capability ``arch`` (e.g. 86).

    Raises PluginError without NVRTC or for an architecture it lacks, and KernelCompileError
    (with the log) on any error or warning.
    """
    flags = OPTIONS + define_flags(defines or {})
    header = HEADER.read_bytes()
    digest = hashlib.sha256(source.encode() + b"\0" + header).hexdigest()
    key = (digest, arch, output, flags)
    if key not in _cache:
        _cache[key] = _compile(source.encode(), header, arch, output, flags, name)
    return _cache[key]


def compile_file(path: Path, arch: int, defines: Mapping[str, str] | None = None, output: Output = "cubin") -> Compiled:
    """Compile a ``.cu`` file; see :func:`compile_source`."""
    return compile_source(path.read_text(), arch, defines, output, name=f"{path.parent.name}/{path.name}")


def _compile(source: bytes, header: bytes, arch: int, output: Output, flags: tuple[str, ...], name: str) -> Compiled:
    nvrtc = _nvrtc()
    if arch not in supported_archs():
        raise PluginError(
            f"this NVRTC {'.'.join(map(str, nvrtc_version()))} cannot compile for sm_{arch} "
            f"(it supports {', '.join(f'sm_{a}' for a in supported_archs())})",
            fix="install an nvidia-cuda-nvrtc that supports this GPU",
        )
    target = f"--gpu-architecture={'sm' if output == 'cubin' else 'compute'}_{arch}"
    options = [target.encode(), *(f.encode() for f in flags)]
    program = _check(nvrtc, nvrtc.nvrtcCreateProgram(source, name.encode(), 1, [header], [HEADER.name.encode()]))
    try:
        start = time.perf_counter()
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        seconds = time.perf_counter() - start
        # NVRTC writes into the buffers it is handed: they must be fresh, writable memory. (A
        # ``b" " * size`` of size 1, the size of a clean log, is CPython's shared b" " object:
        # writing into it broke every b" " of the process.)
        log = bytearray(_check(nvrtc, nvrtc.nvrtcGetProgramLogSize(program)))
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(program, log))
        log_text = log.rstrip(b"\0").decode(errors="replace").strip()
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS or log_text:
            verdict = "failed" if status != nvrtc.nvrtcResult.NVRTC_SUCCESS else "warned"
            raise KernelCompileError(f"NVRTC {verdict} compiling {name} for sm_{arch}", log_text or status.name)
        get_size, get = (
            (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if output == "cubin" else (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX)
        )
        code = bytearray(_check(nvrtc, get_size(program)))
        _check(nvrtc, get(program, code))
        return Compiled(code=bytes(code), arch=arch, output=output, seconds=seconds)
    finally:
        nvrtc.nvrtcDestroyProgram(program)
