"""glibc's allocator, made steady for a long-running server.

glibc returns freed memory to the kernel past thresholds it moves as the process runs (a chunk
above the *mmap threshold* is its own mapping; the top of a heap beyond the *trim threshold* is
given back), so whether a batch's arrays (several MiB of decoded images and input tensor) land in
pages already mapped depends on the process's history: where they do not, every batch pays
page faults (on the quick classifier at 32 images a batch, ~20 µs an image of kernel time on the
model's thread, 4 % of the server's throughput: benchmarks/README.md, "Cut 6"). :func:`hold_freed_memory`
fixes both thresholds at the ceiling glibc's own adjustment reaches (32 MiB, twice that to trim),
so memory a batch freed is reused by the next, and resident memory stays at its peak rather than
dropping between batches.
"""
from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Allocations below this many bytes come from the heap, not a mapping of their own.
MMAP_THRESHOLD = 32 << 20
#: Free memory at a heap's top kept for reuse, up to this many bytes.
TRIM_THRESHOLD = 64 << 20


def hold_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this
    process; whether they were set. Not where the user has chosen them (``GLIBC_TUNABLES`` naming
    ``malloc``, or a ``MALLOC_...`` variable such as ``MALLOC_TRIM_THRESHOLD_``), nor outside glibc
    (no ``mallopt``, or it refuses)."""
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    held = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc allocator thresholds %s", "set" if held else "not set")
    return held
