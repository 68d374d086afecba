"""``--backend auto``: the fastest CPU backend for a precision, and why it was chosen.

From the manifest's benchmark results (model-only median at batch 1, written by ``visionrt
bench``) where they cover the precision; else measured here on a zero batch, briefly.
"""
from __future__ import annotations

import importlib.util
import time
from typing import Callable

import numpy as np

from ..errors import BackendUnavailable, VisionRTError
from ..manifest import ModelDir
from .base import Runner

#: CPU backends ``auto`` chooses among, by the runner name their benchmark rows carry.
CPU_BACKENDS = {"onnxruntime": "onnxruntime-cpu", "openvino": "openvino-cpu"}


def choose_cpu_backend(model_dir: ModelDir, precision: str, open_backend: Callable[[str], Runner]) -> tuple[str, str]:
    """``(backend, why)``: the CPU backend with the lowest batch-1 latency for ``precision``;
    ``open_backend(name)`` opens a runner of ``model_dir`` on backend ``name`` where it is measured here."""
    candidates = [b for b in CPU_BACKENDS if b == "onnxruntime" or importlib.util.find_spec(b) is not None]
    measured = _from_benchmarks(model_dir, precision, candidates)
    source = "the manifest's benchmark (model-only median, batch 1)"
    if len(measured) < len(candidates):
        measured, source = _measure(model_dir, candidates, open_backend), "a quick measurement here (batch 1)"
    if not measured:
        raise BackendUnavailable(f"no CPU backend can run {model_dir.root} in {precision}",
                                 fix=f"visionrt export {model_dir.root} --precision {precision}")
    best = min(measured, key=measured.get)
    figures = ", ".join(f"{b} {ms:.3g} ms" for b, ms in sorted(measured.items(), key=lambda item: item[1]))
    return best, f"{best} is fastest for {precision} by {source}: {figures}"


def _from_benchmarks(model_dir: ModelDir, precision: str, candidates: list[str]) -> dict[str, float]:
    medians = (model_dir.manifest.benchmarks or {}).get("median_ms", {})
    suffix = "/model/b1" if precision == "fp32" else f"/{precision}/model/b1"
    found = {}
    for backend in candidates:
        key = f"{CPU_BACKENDS[backend]}{suffix}"
        matches = [ms for k, ms in medians.items() if k == key or k.endswith("/" + key)]
        if matches:
            found[backend] = matches[0]  # the first (smallest) input size
    return found


def _measure(model_dir: ModelDir, candidates: list[str], open_backend: Callable[[str], Runner],
             runs: int = 10) -> dict[str, float]:
    spec = model_dir.manifest.input
    batch = np.zeros((1, spec.channels, spec.height or 224, spec.width or 224), np.float32)
    found = {}
    for backend in candidates:
        try:
            with open_backend(backend) as runner:
                runner.infer({spec.name: batch})
                samples = []
                for _ in range(runs):
                    start = time.perf_counter()
                    runner.infer({spec.name: batch})
                    samples.append((time.perf_counter() - start) * 1e3)
            found[backend] = float(np.median(samples))
        except VisionRTError:
            continue
    return found
