"""The export stage: write the ONNX, then prove it on held-out image files.

The same preprocessed batches (decoded from the test split's PNGs by the runtime's own
image loader and preprocessing) go to PyTorch eager and to onnxruntime; outputs are
compared per tensor and the task metrics must come out the same (or within the task spec's
``parity_tolerance``).

Where the portable ONNX holds ops TensorRT lacks (MaxPool with Indices, MaxUnpool, RoI
pooling, NMS), the stage also writes its TensorRT flavour ``model.trt.onnx`` (manifest key
``onnx_trt``, plugin nodes in the ``visionrt`` domain; see ``trt_flavour.py``), which the build
then uses, and checks it the same way in onnxruntime with the plugins' reference ops.
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ..runtime import atomic
from ..runtime.backends.base import Runner
from ..runtime.backends.onnxruntime import OnnxRuntimeRunner
from ..runtime.backends.torch import TorchRunner
from ..runtime.errors import BackendUnavailable, InputError
from ..runtime.manifest import ModelDir
from ..runtime.plugins import onnxruntime_ops
from ..runtime.predictor import Pipeline
from ..runtime.progress import progress
from ..runtime.tasks import runtime_task
from ..train.loop import load_trained
from .build import TRT_ONNX_KEY
from .onnx_export import export_onnx, write_onnx
from .parity import ParityReport, check_parity
from .trt_flavour import plugin_ops, to_trt_flavour

PARITY_FILE = "parity.json"
TRT_ONNX_FILE = "model.trt.onnx"
#: Name of the onnxruntime run of the TensorRT flavour in parity reports and metrics.
TRT_FLAVOUR_RUNNER = "onnxruntime-cpu-trt-flavour"
ATOL, RTOL = 1e-4, 1e-3
log = logging.getLogger(__name__)


def heldout_batches(model_dir: ModelDir, data_dir: str | Path, samples: int | None, batch: int = 64):
    """Preprocessed test-split batches ``[(feed, targets)]`` from the image files on disk
    (the first ``samples`` images, or all), with the task's targets for them."""
    pipeline = Pipeline(model_dir)
    paths, targets = pipeline.task.heldout(data_dir, samples, model_dir.manifest)
    spec = model_dir.manifest.input
    batch = batch if spec.height else 1  # images of any size go one at a time
    for start in range(0, len(paths), batch):
        yield {spec.name: pipeline.preprocess(paths[start:start + batch])}, targets[start:start + batch]


def verify(model_dir: ModelDir, candidates: Sequence[Runner], data_dir: str | Path, samples: int | None = None,
           atol: float = ATOL, rtol: float = RTOL, metric_tolerance=None,
           judge_outputs: bool = True) -> list[ParityReport]:
    """Parity of each candidate (a Runner) against PyTorch eager on held-out images, recorded in the
    manifest. The images are decoded and the PyTorch model run once, whatever the candidates.
    ``metric_tolerance`` (default: the task spec's ``parity_tolerance``) and ``judge_outputs`` as in
    :func:`~visionrt.export.parity.check_parity` (reduced precisions: the task metric only)."""
    manifest = model_dir.manifest
    batches = list(heldout_batches(model_dir, data_dir, samples))
    targets = np.concatenate([targets for _, targets in batches])
    reference = _Replayed(TorchRunner(lambda: load_trained(model_dir), candidates[0].inputs,
                                      [o.name for o in manifest.outputs]),
                          len(batches), progress("parity: PyTorch reference", log, level=logging.DEBUG))
    task = runtime_task(manifest.task)
    reports = []
    for candidate in candidates:
        report = check_parity(reference, candidate, [feed for feed, _ in batches], atol=atol, rtol=rtol,
                              task_metric=lambda outputs: task.evaluate(outputs, targets, manifest),
                              metric_tolerance=task.parity_tolerance if metric_tolerance is None else metric_tolerance,
                              postprocessed=lambda ref, cand: task.compare(ref, cand, targets, manifest),
                              judge_outputs=judge_outputs)
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
    further candidate compared on the same feeds; ``report(done, total)`` follows the ``total`` feeds' first runs."""

    def __init__(self, runner: Runner, total: int, report):
        self.runner, self.name, self._outputs = runner, runner.name, {}
        self.total, self.report = total, report

    def infer(self, feed):
        if id(feed) not in self._outputs:
            self._outputs[id(feed)] = self.runner.infer(feed)
            self.report(len(self._outputs), self.total)
        return self._outputs[id(feed)]


def export_trt_flavour(model_dir: ModelDir) -> list[str]:
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
    log.info("wrote %s (TensorRT lacks ops of the portable ONNX; plugin nodes: %s)", path, ", ".join(ops))
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


def export_and_verify(model_dir: ModelDir, data_dir: str | Path | None = None,
                      samples: int | None = None) -> ParityReport:
    """Export ONNX and check it in onnxruntime (CPU) against PyTorch, and its TensorRT flavour where
    one is needed; returns the portable ONNX's parity report, or the flavour's where that one fails.
    ``samples`` (an integer >= 1) and ``data_dir`` (an existing folder) are checked before anything is written."""
    data_dir = data_dir or model_dir.manifest.model["dataset"]
    if samples is not None and not (isinstance(samples, int) and not isinstance(samples, bool) and samples >= 1):
        raise InputError(f"samples must be an integer >= 1, got {samples!r}", fix="or None for the whole test split")
    if not Path(data_dir).is_dir():
        raise InputError(f"parity data {data_dir} is not a folder", fix="pass --data DIR, the dataset of the test split")
    export_onnx(model_dir)
    with contextlib.ExitStack() as stack:
        candidates = [stack.enter_context(OnnxRuntimeRunner(model_dir.path("onnx")))]
        if export_trt_flavour(model_dir):
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            try:
                candidates.append(stack.enter_context(trt_flavour_runner(model_dir, scratch)))
            except BackendUnavailable as err:
                log.warning("TensorRT flavour not checked: %s", err)
        reports = verify(model_dir, candidates, data_dir, samples)
    for report in reports:
        log.info("%s", report.summary())
    return next((r for r in reports[1:] if not r.passed), reports[0])
