"""Checks of an imported model, which has no PyTorch: its fp32 ONNX in onnxruntime is the reference.

The images are the user's (``--data``: a folder of photos, no labels needed) or, without them,
generated ones of the input size. The task's *targets* are fp32's own predictions on them (the
top-1 class, the class map, the detections shown), so a task metric measures agreement with fp32:
top-1 agreement for a classifier, mIoU of the class maps for a segmenter, mAP against fp32's
detections for a detector. Used for

* the precision files (``export DIR --precision fp16,int8 --data photos/``): each judged on
  that agreement with the tolerances of trained models, plus the raw output difference;
* parity (``export DIR``): onnxruntime against the other backends present (OpenVINO, TensorRT
  where it runs), recorded as a trained model's parity is.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..runtime import atomic
from ..runtime.backends import open_runner
from ..runtime.backends.base import Runner
from ..runtime.errors import BackendUnavailable, InputError
from ..runtime.folders import image_files
from ..runtime.images import load_image
from ..runtime.manifest import ModelDir
from ..runtime.output_adapters import adapted
from ..runtime.preprocess import generated_images, model_input
from ..runtime.tasks import TASKS, runtime_task
from .parity import ParityReport, check_parity
from .stage import _Replayed

log = logging.getLogger(__name__)

#: Name of the reference run in reports and metrics.
REFERENCE = "onnxruntime-cpu-fp32"
PARITY_FILE = "parity.json"
#: Generated images used where the user gives none (parity only).
GENERATED = 8
#: Tasks whose outputs have one size whatever the input's: fp32's own predictions of images fed at
#: several sizes (an import with a range of sizes) can be put together as targets.
SIZE_FREE_TASKS = ("classify",)


def is_imported(model_dir: ModelDir) -> bool:
    """Whether ``model_dir`` holds an imported ONNX (no PyTorch model to compare with)."""
    return "imported_from" in model_dir.manifest.model and not model_dir.has("weights")


def photos(data_dir: str | Path, minimum: int = 1) -> list[Path]:
    """The image files of a folder of photos (directly in it, or in its sub-folders)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of images", fix="pass --data DIR, a folder of your photos")
    found = image_files(root) or sorted(p for sub in root.rglob("*") if sub.is_dir() for p in image_files(sub))
    if len(found) < minimum:
        raise InputError(f"{root} holds {len(found)} image(s); {minimum} needed", fix="pass a folder of photos")
    return found


def check_judged(model_dir: ModelDir) -> None:
    """:class:`InputError` unless the reduced precisions of this imported model's task can be judged
    against its fp32 here (its spec's ``imported.own_targets``)."""
    task = model_dir.manifest.task
    if runtime_task(task).imported.own_targets is None:
        judged = [t for t in TASKS if runtime_task(t).imported.own_targets is not None]
        raise InputError(f"the fp16/int8 files of an imported {task} model cannot be judged here: agreement with "
                         f"fp32 is measured for {' and '.join(judged)} imports",
                         fix="benchmark and build it in fp32, or export it from PyTorch with labelled data")
    if not _judged_by_task(model_dir.manifest):
        raise InputError(f"the fp16/int8 files of an imported {task} model of several input sizes cannot be judged "
                         "here: fp32's own predictions differ in size from image to image",
                         fix="import it with a fixed --image-size HxW to make and judge its fp16/int8 files")


def _judged_by_task(manifest) -> bool:
    """Whether fp32's own predictions can be the targets of a task metric for this model: its task
    makes them (``imported.own_targets``), and from images of one input size or outputs of one size."""
    return runtime_task(manifest.task).imported.own_targets is not None and (
        manifest.input.height is not None or manifest.task in SIZE_FREE_TASKS)


def _batches(model_dir: ModelDir, images: Sequence[Path | np.ndarray], batch: int = 32) -> list[dict[str, np.ndarray]]:
    spec = model_dir.manifest.input
    size = batch if spec.height else 1
    return [{spec.name: model_input([load_image(p) for p in images[i:i + size]], model_dir.manifest)}
            for i in range(0, len(images), size)]


def judge(model_dir: ModelDir, candidates: Iterable[Runner], images: Sequence[Path | np.ndarray],
          metric_tolerance, judge_outputs: bool, atol: float = 1e-4, rtol: float = 1e-3) -> list[ParityReport]:
    """Each candidate against fp32 onnxruntime on ``images``: raw outputs and the task's agreement with
    fp32's own predictions; recorded in ``manifest.parity``/``metrics`` under the candidate's name."""
    manifest = model_dir.manifest
    task = runtime_task(manifest.task)
    feeds = _batches(model_dir, images)
    runner = open_runner(model_dir, "onnxruntime")
    runner.name = REFERENCE
    replay = _Replayed(runner, len(feeds), lambda done, total: None)
    with runner:
        reference_outputs = [replay.infer(feed) for feed in feeds]
    metric = None
    if _judged_by_task(manifest):
        merged = {k: np.concatenate([o[k] for o in reference_outputs]) for k in reference_outputs[0]}
        targets = task.imported.own_targets(merged, manifest)
        metric = lambda outputs: task.evaluate(outputs, targets, manifest)  # noqa: E731
    reports = []
    for candidate in candidates:
        with candidate:
            report = check_parity(replay, candidate, feeds, atol=atol, rtol=rtol, task_metric=metric,
                                  metric_tolerance=metric_tolerance, judge_outputs=judge_outputs)
        manifest.parity[candidate.name] = {**report.to_dict(), "reference_is": "fp32 ONNX in onnxruntime "
                                           "(imported model: no PyTorch)", "images": len(images)}
        manifest.metrics[candidate.name] = {"test": {k: v["candidate"] for k, v in report.task.items()},
                                            "images": report.samples, "against": "fp32's own predictions"}
        log.info("%s", report.summary())
        reports.append(report)
    return reports


def precision_runner(model_dir: ModelDir, path: Path, name: str) -> Runner:
    """A precision file in onnxruntime CPU, its outputs adapted as the manifest says."""
    from ..runtime.backends.onnxruntime import OnnxRuntimeRunner

    spec = model_dir.manifest.input
    runner = adapted(OnnxRuntimeRunner(path), model_dir.manifest.postprocess, spec.height, spec.width, spec.layout)
    runner.name = name
    return runner


def check_backends(model_dir: ModelDir, data_dir: str | Path | None = None, samples: int | None = None,
                   backends: Sequence[str] = ("openvino", "tensorrt")) -> ParityReport | None:
    """Parity of the other backends present against onnxruntime fp32 on the user's photos (or
    generated images of the input size); written to ``parity.json`` and the manifest. Returns the
    worst report (a failing one first), or ``None`` where no other backend is present."""
    images: list = photos(data_dir)[:samples] if data_dir else generated_images(model_dir.manifest.input, GENERATED)
    candidates = []
    for backend in backends:
        try:
            candidates.append(open_runner(model_dir, backend).activate())  # activation finds a missing GPU
        except BackendUnavailable as err:
            log.info("parity: %s skipped (%s)", backend, err)
        except Exception as err:  # noqa: BLE001 - a backend that cannot open this model is reported, not fatal
            log.warning("parity: %s cannot open %s: %s", backend, model_dir.root, err)
    if not candidates:
        return None
    reports = judge(model_dir, candidates, images, runtime_task(model_dir.manifest.task).parity_tolerance,
                    judge_outputs=True)
    atomic.write_text(model_dir.root / PARITY_FILE, json.dumps(model_dir.manifest.parity, indent=2) + "\n")
    model_dir.add_file("parity", model_dir.root / PARITY_FILE, role="parity reports per backend")
    model_dir.record("parity", reference=REFERENCE, candidates=[r.candidate for r in reports],
                     passed=all(r.passed for r in reports))
    model_dir.save()
    return min(reports, key=lambda r: r.passed)

