"""The server's allocator setting (runtime/server/allocator.py): arrays a batch frees are reused by the
next without page faults, and a user's own glibc malloc settings are left alone."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")

# Three 16 MiB arrays a round, on a thread as the model's: past glibc's moving trim threshold, so by
# default every round gives its pages back and faults them in again.
ROUNDS = """
import resource, sys, threading
import numpy as np
from visionrt.runtime.server.allocator import hold_freed_memory
held = hold_freed_memory() if sys.argv[1] == "hold" else None
out = []
def rounds():
    for i in range(12):
        if i == 2:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        arrays = [np.ones(4 << 20, np.float32) for _ in range(3)]
        del arrays
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(held, out[0])
"""


def faults(mode: str, **env: str) -> tuple[str, int]:
    """(what ``hold_freed_memory`` answered, page faults of ten rounds after two of warm-up)."""
    run = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    held, count = run.stdout.split()
    return held, int(count)


def test_held_memory_is_reused_without_page_faults():
    held, count = faults("hold")
    assert held == "True" and count < 1000
    default, count = faults("default")
    assert count > 10_000  # what it prevents: ~4k faults a round


def test_a_users_own_malloc_settings_are_left_alone():
    for env in ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}, {"MALLOC_TRIM_THRESHOLD_": "1048576"}):
        held, count = faults("hold", **env)
        assert held == "False" and count > 10_000
