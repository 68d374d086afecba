"""What a benchmark ran on: CPU, usable cores, OS, package versions, GPUs.

Reads versions from package metadata, so describing the machine imports none of the
packages it names (torch stays out of the process unless the caller brought it in).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

#: Distributions whose versions a report shows, when installed.
PACKAGES = ("visionrt", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt",
            "tensorrt-rtx-cu13-bindings", "pillow")


def describe_machine() -> dict[str, Any]:
    """A JSON-ready description of this machine and its software."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "cpu_quota": cpu_quota(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "gpus": gpus(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask), which can be fewer than ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: Most memory (bytes) the inputs of one benchmark may take; also at most half the available memory.
MAX_BENCH_BYTES = 2 * 1024 ** 3


def available_memory() -> int | None:
    """Physical memory available now (bytes), where the OS says."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_bench_memory(need: int, what: str, limit: int | None = None) -> None:
    """:class:`InputError` when a benchmark's inputs, ``need`` bytes (``what`` says of what), exceed
    ``limit`` (default :data:`MAX_BENCH_BYTES` or half the available memory, whichever is less)."""
    from ..runtime.errors import InputError

    available = available_memory()
    limit = limit or min(MAX_BENCH_BYTES, available // 2 if available else MAX_BENCH_BYTES)
    if need > limit:
        raise InputError(f"{what} need about {need / 1024 ** 3:.1f} GiB, more than the {limit / 1024 ** 3:.1f} GiB "
                         f"limit ({MAX_BENCH_BYTES / 1024 ** 3:.0f} GiB, or half the available memory)",
                         fix="pass smaller --batch-sizes")


def cpu_quota() -> float | None:
    """The container's CPU limit in cores (cgroup v2 ``cpu.max`` or v1 CFS quota), ``None`` if unlimited."""
    cgroup = Path("/sys/fs/cgroup")
    try:
        if (cgroup / "cpu.max").is_file():
            quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        else:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except (OSError, ValueError):
        return None
    if quota in ("max", "-1"):
        return None
    return int(quota) / int(period)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def gpus() -> list[dict[str, str]]:
    """Name, driver and memory of each NVIDIA GPU that ``nvidia-smi`` lists; empty without one."""
    if shutil.which("nvidia-smi") is None:
        return []
    fields = ("name", "driver_version", "memory.total")
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return []
    return [dict(zip(("name", "driver", "memory"), (part.strip() for part in line.split(","))))
            for line in done.stdout.splitlines() if line.strip()]
