"""The export stage: write the ONNX, then prove it on held-out image files.

The same preprocessed batches (decoded from the test split's PNGs by the runtime's own
image loader and preprocessing) go to PyTorch eager and to onnxruntime; outputs are
compared per tensor and the task metric must come out the same.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..runtime import atomic
from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.images import load_image
from ..runtime.manifest import ModelDir
from ..runtime.preprocess import preprocess
from ..runtime.tasks import task_module
from .onnx_export import export_onnx, load_trained
from .parity import ParityReport, check_parity
from .torch_runner import TorchRunner

PARITY_FILE = "parity.json"
ATOL, RTOL = 1e-4, 1e-3


def heldout_batches(model_dir: ModelDir, data_dir: str | Path, samples: int | None, batch: int = 64):
    """Preprocessed test-split batches ``[(feed, targets)]`` from the image files on disk
    (the first ``samples`` images, or all), with the task's targets for them."""
    task = task_module(model_dir.manifest.task)
    paths, targets = task.heldout(data_dir, samples)
    spec = model_dir.manifest.input
    batch = batch if spec.height else 1  # images of any size go one at a time
    for start in range(0, len(paths), batch):
        images = [load_image(p) for p in paths[start:start + batch]]
        yield {spec.name: preprocess(images, spec)}, targets[start:start + batch]


def verify(model_dir: ModelDir, candidate, data_dir: str | Path, samples: int | None = None,
           atol: float = ATOL, rtol: float = RTOL) -> ParityReport:
    """Parity of ``candidate`` (a Runner) against PyTorch eager on held-out images, recorded in the manifest."""
    manifest = model_dir.manifest
    batches = list(heldout_batches(model_dir, data_dir, samples))
    targets = np.concatenate([targets for _, targets in batches])
    reference = TorchRunner(load_trained(model_dir), candidate.inputs, [o.name for o in manifest.outputs])
    task = task_module(manifest.task)
    report = check_parity(reference, candidate, [feed for feed, _ in batches], atol=atol, rtol=rtol,
                          task_metric=lambda outputs: task.evaluate(outputs, targets, manifest))
    manifest.parity[candidate.name] = report.to_dict()
    manifest.metrics[candidate.name] = {"test": {k: v["candidate"] for k, v in report.task.items()},
                                        "images": report.samples}
    atomic.write_text(model_dir.root / PARITY_FILE, json.dumps(manifest.parity, indent=2) + "\n")
    model_dir.add_file("parity", model_dir.root / PARITY_FILE, role="parity reports per backend")
    model_dir.record("parity", candidate=candidate.name, passed=report.passed, samples=report.samples)
    model_dir.save()
    return report


def export_and_verify(model_dir: ModelDir, data_dir: str | Path | None = None, samples: int | None = None,
                      log=print) -> ParityReport:
    """Export ONNX and check it in onnxruntime (CPU) against PyTorch; returns the parity report."""
    export_onnx(model_dir, log=log)
    data_dir = data_dir or model_dir.manifest.model["dataset"]
    with OnnxRuntimeRunner(model_dir.path("onnx")) as candidate:
        report = verify(model_dir, candidate, data_dir, samples)
    log(report.summary())
    return report
