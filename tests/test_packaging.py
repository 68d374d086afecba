"""What ``pip install visionrt`` gets: a wheel built from a copy of the sources holds every module,
the serving page and the plugins' CUDA kernels, and setuptools builds it without a warning (its
deprecations become build failures on a date it names)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a build: pip makes an isolated build environment, seconds on a loaded machine
def test_the_wheel_holds_the_page_and_the_kernels_and_builds_without_warnings(tmp_path):
    source = tmp_path / "source"
    for name in ("train", "export", "runtime", "benchmarks"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp_path)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "Warning" not in build.stdout + build.stderr, build.stdout + build.stderr
    (wheel,) = tmp_path.glob("visionrt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "visionrt/runtime/server/static/index.html" in names
    kernels = {f"visionrt/runtime/plugins/{p}/kernel.cu" for p in ("max_unpool", "nms", "roi_align", "roi_pool")}
    assert kernels <= names
    modules = {f"visionrt/{path.relative_to(ROOT).as_posix()}" for top in ("train", "export", "runtime", "benchmarks")
               for path in (ROOT / top).rglob("*.py") if "__pycache__" not in path.parts}
    assert modules <= names, sorted(modules - names)[:5]
