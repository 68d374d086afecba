"""The precision latency figures, measured in one run: int8 / fp32 median latency at batch 1.

    python -m visionrt.benchmarks.precision --model-dir runs/classify-resnet --out precision.json

For a model directory with its int8 file exported (the quick classifier: the issue asks
≤ 0.55 in onnxruntime) and for a ResNet-18-shaped network at 224×224 from random weights
(≤ 0.45), each on onnxruntime CPU and OpenVINO where installed. fp32 and int8 are timed
alternately, a round each at a time, so drift on a shared machine hits both alike. The CPU
model and thread count are recorded beside the ratios. Needs the ``train`` extra (torch, to
export the ResNet-18 shape).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.errors import BackendUnavailable
from ..runtime.manifest import ModelDir
from .machine import describe_machine, usable_cpus

log = logging.getLogger(__name__)

#: The figures the issue asks for: int8 / fp32 latency at batch 1 in onnxruntime.
TARGETS = {"quick model": 0.55, "resnet18-shape 224": 0.45}


def resnet18_shape(side: int = 224):
    """A ResNet-18-shaped classifier (7×7 stem + max-pool, 2+2+2+2 basic blocks of 64-512
    channels, 1000 classes), random weights, built from visionrt's ResNet."""
    import torch
    from torch import nn

    from ..train.models.classify import ResNet

    torch.manual_seed(0)
    model = ResNet(1000, widths=(64, 128, 256, 512), blocks=2)
    model.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
    return model.eval(), (1, 3, side, side)


def _export(model, shape: tuple[int, ...], path: Path) -> Path:
    import torch

    from ..export.onnx_export import OPSET

    program = torch.onnx.export(model, (torch.zeros(shape),), dynamo=True, opset_version=OPSET,
                                input_names=["images"], output_names=["logits"])
    program.save(str(path))
    return path


class _RandomReader(CalibrationDataReader):
    """Calibration data for latency only: ``count`` random batches of ``shape``."""

    def __init__(self, shape: tuple[int, ...], count: int = 8):
        rng = np.random.default_rng(0)
        self.batches = [{"images": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]

    def get_next(self):
        return self.batches.pop() if self.batches else None


def _int8_of(fp32: Path, shape: tuple[int, ...], scratch: Path) -> Path:
    import onnx

    from ..export.precision import head_nodes, quantize

    model = onnx.load(fp32)
    out = scratch / "model.int8.onnx"
    quantize(model, out, "portable", scratch / "calibration.json", head_nodes(model), reader=_RandomReader(shape))
    return out


def _runner(backend: str, path: Path, threads: int):
    if backend == "openvino":
        from ..runtime.backends.openvino import OpenVinoRunner

        return OpenVinoRunner(path, threads=threads, compute="fp32")
    return OnnxRuntimeRunner(path, threads=threads)


def ratio(fp32: Path, int8: Path, feed: dict[str, np.ndarray], backend: str = "onnxruntime",
          threads: int = 1, rounds: int = 10, runs: int = 10) -> dict[str, Any]:
    """Median batch-1 latency of both files on ``backend``, timed alternately, and int8 / fp32."""
    samples: dict[str, list[float]] = {"fp32": [], "int8": []}
    with _runner(backend, fp32, threads) as a, _runner(backend, int8, threads) as b:
        for runner in (a, b):
            for _ in range(3):
                runner.infer(feed)
        for _ in range(rounds):
            for name, runner in (("fp32", a), ("int8", b)):
                for _ in range(runs):
                    start = time.perf_counter()
                    runner.infer(feed)
                    samples[name].append((time.perf_counter() - start) * 1e3)
    median = {name: float(np.median(values)) for name, values in samples.items()}
    return {"fp32_ms": median["fp32"], "int8_ms": median["int8"], "ratio": median["int8"] / median["fp32"],
            "runs": len(samples["fp32"])}


def measure(model_dir: str | Path | None = None, side: int = 224, threads: int | None = None,
            rounds: int = 10, runs: int = 10, backends: tuple[str, ...] = ("onnxruntime", "openvino")) -> dict:
    """Every ratio (the model directory's and the ResNet-18 shape's, per backend), the CPU
    model and threads, and whether each onnxruntime ratio meets :data:`TARGETS`."""
    threads = threads or usable_cpus()
    cases: dict[str, tuple[Path, Path, dict]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if model_dir is not None:
            md = ModelDir.open(model_dir)
            spec = md.manifest.input
            batch = np.random.default_rng(0).standard_normal(
                (1, spec.channels, spec.height or side, spec.width or side)).astype(np.float32)
            cases["quick model"] = (md.path("onnx"), md.path("onnx_int8"), {spec.name: batch})
        model, shape = resnet18_shape(side)
        fp32 = _export(model, shape, scratch / "resnet18.onnx")
        int8 = _int8_of(fp32, shape, scratch)
        cases[f"resnet18-shape {side}"] = (fp32, int8, {"images": np.random.default_rng(1).standard_normal(
            shape).astype(np.float32)})
        figures = {}
        for name, (a, b, feed) in cases.items():
            for backend in backends:
                try:
                    result = ratio(a, b, feed, backend, threads, rounds, runs)
                except BackendUnavailable as err:
                    log.warning("%s on %s skipped: %s", name, backend, err)
                    continue
                target = TARGETS.get(name) if backend == "onnxruntime" else None
                figures[f"{name} / {backend}"] = {**result, "target": target,
                                                  "meets": None if target is None else result["ratio"] <= target}
                log.info("%s on %s: int8/fp32 = %.3f", name, backend, result["ratio"])
    machine = describe_machine()
    return {"cpu": machine.get("cpu"), "threads": threads, "batch": 1, "figures": figures, "machine": machine}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="a model directory with its int8 file exported (the quick classifier)")
    parser.add_argument("--side", type=int, default=224, help="input side of the ResNet-18 shape")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per round and file")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure(args.model_dir, args.side, args.threads, args.rounds, args.runs)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
