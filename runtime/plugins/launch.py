"""How a plugin kernel is launched: one description shared by TensorRT and the GPU benchmark.

Each op's ``tensorrt.py`` has ``launch*(...)`` functions that return a :class:`KernelLaunch`.
TensorRT's AOT plugin (``aot_impl``) calls it with symbolic shape expressions, the GPU
benchmark with plain ints, so both launch the kernel with the same grid, block and
arguments. The sizes are written with ``+``, ``*`` and ``//`` by ints only, with the
symbolic operand on the left, which TensorRT shape expressions support.

Kernel signatures follow TensorRT's AOT convention: input pointers, then the int32 scalar
arguments (``KernelLaunch.args``), then output pointers.
"""
from __future__ import annotations

import dataclasses
from typing import Any

#: Element types of the kernels, as numpy dtype names, and their entry-point suffixes.
DTYPE_SUFFIX = {"float32": "f32", "float16": "f16"}

#: Threads per block of the one-thread-per-output-element kernels.
ELEMENTWISE_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class KernelLaunch:
    """One kernel launch: entry point, grid and block ``(x, y, z)``, dynamic shared memory in
    bytes, and the int32 scalar arguments in kernel order. Sizes are ints or shape expressions."""

    kernel: str
    grid: tuple[Any, Any, Any]
    block: tuple[int, int, int]
    args: tuple[Any, ...]
    shared_mem: int = 0


def kernel_name(stem: str, dtype: str) -> str:
    """``kernel_name("roi_align", "float16")`` -> ``"visionrt_roi_align_f16"``."""
    return f"visionrt_{stem}_{DTYPE_SUFFIX[dtype]}"


def elementwise(stem: str, dtype: str, total: Any, args: tuple[Any, ...]) -> KernelLaunch:
    """One thread per output element: at least ``total`` threads in blocks of ``ELEMENTWISE_BLOCK``.

    ``total`` sizes the grid only. The kernel counts its elements itself, in 64 bits, from
    its int32 arguments (``args`` ends with the outer count: RoIs or N*C planes), and walks
    them in a grid-stride loop: an output of 2^31 elements or more (MaxUnpool at a
    32x64x1024x1024 profile maximum) would wrap a 32-bit count, and AOT kernel arguments are
    int32 only. Every argument is one shape factor, far below 2^31.

    The grid is ``total // block + 1``, never 0: an empty output (no RoIs in the batch) then
    launches one block whose threads all skip the loop. A grid of 0 is an invalid launch
    configuration, which TensorRT would report as a failed enqueue, and an AOT plugin cannot
    return early on the host. (It costs one idle block when ``total`` is a multiple of the block.)
    """
    return KernelLaunch(kernel_name(stem, dtype), grid=(total // ELEMENTWISE_BLOCK + 1, 1, 1),
                        block=(ELEMENTWISE_BLOCK, 1, 1), args=tuple(args))
