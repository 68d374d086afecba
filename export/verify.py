"""The export stage: write the ONNX, then prove it on held-out image files.

The same preprocessed batches (decoded from the test split's PNGs by the runtime's own
image loader and preprocessing) go to PyTorch eager and to onnxruntime; outputs are
compared per tensor and the task metrics must come out the same (or within the task's
``PARITY_TOLERANCE``).

Where the portable ONNX holds ops TensorRT lacks (MaxPool with Indices, MaxUnpool, RoI
pooling, NMS), the stage also writes its TensorRT flavour ``model.trt.onnx`` (manifest key
``onnx_trt``, plugin nodes in the ``visionrt`` domain; see ``trt_flavour.py``), which the build
then uses, and checks it the same way in onnxruntime with the plugins' reference ops.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ..runtime import atomic
from ..runtime.backends.base import Runner
from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.errors import BackendUnavailable
from ..runtime.images import load_image
from ..runtime.manifest import ModelDir
from ..runtime.plugins import onnxruntime_ops
from ..runtime.preprocess import model_input
from ..runtime.tasks import task_module
from .build import TRT_ONNX_KEY
from .onnx_export import export_onnx, load_trained, write_onnx
from .parity import ParityReport, check_parity
from .torch_runner import TorchRunner
from .trt_flavour import plugin_ops, to_trt_flavour

PARITY_FILE = "parity.json"
TRT_ONNX_FILE = "model.trt.onnx"
#: Name of the onnxruntime run of the TensorRT flavour in parity reports and metrics.
TRT_FLAVOUR_RUNNER = "onnxruntime-cpu-trt-flavour"
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
        yield {spec.name: model_input(images, model_dir.manifest)}, targets[start:start + batch]


def verify(model_dir: ModelDir, candidates: Sequence[Runner], data_dir: str | Path, samples: int | None = None,
           atol: float = ATOL, rtol: float = RTOL) -> list[ParityReport]:
    """Parity of each candidate (a Runner) against PyTorch eager on held-out images, recorded in the
    manifest. The images are decoded and the PyTorch model run once, whatever the candidates."""
    manifest = model_dir.manifest
    batches = list(heldout_batches(model_dir, data_dir, samples))
    targets = np.concatenate([targets for _, targets in batches])
    reference = _Replayed(TorchRunner(load_trained(model_dir), candidates[0].inputs,
                                      [o.name for o in manifest.outputs]))
    task = task_module(manifest.task)
    reports = []
    for candidate in candidates:
        report = check_parity(reference, candidate, [feed for feed, _ in batches], atol=atol, rtol=rtol,
                              task_metric=lambda outputs: task.evaluate(outputs, targets, manifest),
                              metric_tolerance=getattr(task, "PARITY_TOLERANCE", 0.0),
                              postprocessed=_postprocessed_parity(task, targets, manifest))
        manifest.parity[candidate.name] = report.to_dict()
        manifest.metrics[candidate.name] = {"test": {k: v["candidate"] for k, v in report.task.items()},
                                            "images": report.samples}
        model_dir.record("parity", candidate=candidate.name, passed=report.passed, samples=report.samples)
        reports.append(report)
    atomic.write_text(model_dir.root / PARITY_FILE, json.dumps(manifest.parity, indent=2) + "\n")
    model_dir.add_file("parity", model_dir.root / PARITY_FILE, role="parity reports per backend")
    model_dir.save()
    return reports


class _Replayed:
    """A runner whose outputs are computed once per feed (by identity) and replayed for every
    further candidate compared on the same feeds."""

    def __init__(self, runner: Runner):
        self.runner, self.name, self._outputs = runner, runner.name, {}

    def infer(self, feed):
        if id(feed) not in self._outputs:
            self._outputs[id(feed)] = self.runner.infer(feed)
        return self._outputs[id(feed)]


def _postprocessed_parity(task, targets, manifest):
    """The task's comparison after post-processing (``compare(reference, candidate, targets,
    manifest)`` in its runtime module, e.g. detections matched by IoU), where it has one."""
    compare = getattr(task, "compare", None)
    return None if compare is None else (lambda reference, candidate: compare(reference, candidate, targets, manifest))


def export_trt_flavour(model_dir: ModelDir, log=print) -> list[str]:
    """Write ``model.trt.onnx`` (key ``onnx_trt``) where the portable ONNX holds ops TensorRT lacks;
    returns those plugin ops (none: nothing written, and a stale flavour is dropped)."""
    flavour = to_trt_flavour(onnx.load(model_dir.path("onnx")))
    ops = plugin_ops(flavour)
    if not ops:
        model_dir.manifest.files.pop(TRT_ONNX_KEY, None)
        return []
    path = model_dir.root / TRT_ONNX_FILE
    write_onnx(flavour, path)
    model_dir.add_file(TRT_ONNX_KEY, path, role=f"TensorRT-flavoured ONNX, plugin ops {', '.join(ops)}")
    model_dir.record("export", onnx=TRT_ONNX_FILE, plugin_ops=ops)
    model_dir.save()
    log(f"wrote {path} (TensorRT lacks ops of the portable ONNX; plugin nodes: {', '.join(ops)})")
    return ops


def trt_flavour_runner(model_dir: ModelDir, scratch: Path) -> OnnxRuntimeRunner:
    """The TensorRT flavour as an onnxruntime runner with the plugins' NumPy references (its
    runnable copy written under ``scratch``); :class:`BackendUnavailable` without
    onnxruntime-extensions."""
    setup = onnxruntime_ops.session_setup()
    runnable = onnxruntime_ops.write_for_onnxruntime(model_dir.path(TRT_ONNX_KEY), scratch / TRT_ONNX_FILE)
    runner = OnnxRuntimeRunner(runnable, session_setup=setup)
    runner.name = TRT_FLAVOUR_RUNNER
    return runner


def export_and_verify(model_dir: ModelDir, data_dir: str | Path | None = None, samples: int | None = None,
                      log=print) -> ParityReport:
    """Export ONNX and check it in onnxruntime (CPU) against PyTorch, and its TensorRT flavour where
    one is needed; returns the portable ONNX's parity report, or the flavour's where that one fails."""
    export_onnx(model_dir, log=log)
    data_dir = data_dir or model_dir.manifest.model["dataset"]
    with contextlib.ExitStack() as stack:
        candidates = [stack.enter_context(OnnxRuntimeRunner(model_dir.path("onnx")))]
        if export_trt_flavour(model_dir, log):
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            try:
                candidates.append(stack.enter_context(trt_flavour_runner(model_dir, scratch)))
            except BackendUnavailable as err:
                log(f"TensorRT flavour not checked: {err}")
        reports = verify(model_dir, candidates, data_dir, samples)
    for report in reports:
        log(report.summary())
    return next((r for r in reports[1:] if not r.passed), reports[0])
