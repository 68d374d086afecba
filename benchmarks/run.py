"""``visionrt bench``: every requested backend of one model directory, model-only and end-to-end.

Backends: ``onnxruntime`` (CPU provider; CUDA when installed), ``torch`` (PyTorch eager,
the baseline; needs the train extra) and ``tensorrt`` (the manifest's engines; needs a GPU).
One that cannot run here gives a skipped row saying why, not an error. The same thread
count goes to onnxruntime and torch. Images come from the dataset's test split on disk, or
from the task's own benchmark cases (see :func:`bench_cases`; their label joins the model name).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..runtime.backends import Runner, open_runner
from ..runtime.backends.torch import NAME as TORCH_NAME
from ..runtime.errors import ArtifactError, BackendUnavailable, InputError, VisionRTError
from ..runtime.folders import image_files
from ..runtime.images import load_image
from ..runtime.manifest import ModelDir
from ..runtime.predictor import Predictor
from ..runtime.preprocess import centre_square, generated_images
from ..runtime.tasks import runtime_task
from ..runtime.tensorrt_env import FLAVOURS
from .compare import reference_workload
from .harness import BenchSettings, Result, bench_end_to_end, bench_model
from .machine import usable_cpus
from .report import write_report

#: The backend the others are compared with: PyTorch eager.
BASELINE = TORCH_NAME
log = logging.getLogger(__name__)


def test_images(model_dir: ModelDir, data_dir: str | os.PathLike | None,
                count: int = 64) -> list[Path | np.ndarray]:
    """Up to ``count`` inputs: the images of ``data_dir`` itself where it is a plain folder of
    images, else the held-out test inputs of the dataset (the manifest's by default) in any layout
    its task reads (``RuntimeTask.heldout``)."""
    if data_dir is None and "dataset" not in model_dir.manifest.model:
        log.info("bench: %s records no dataset: generated images of the input size (--data DIR for your own)",
                 model_dir.root)
        return generated_images(model_dir.manifest.input, min(count, GENERATED))
    root = Path(data_dir or model_dir.manifest.model["dataset"])
    plain = image_files(root) if root.is_dir() else []
    if plain:
        return plain[:count]
    try:
        inputs, _ = runtime_task(model_dir.manifest.task).heldout(root, count, model_dir.manifest)
    except VisionRTError as err:
        raise InputError(f"no test images under {root}: {err}",
                         fix="pass --data DIR: a folder of images, or the dataset the model was trained on") from err
    if not inputs:
        raise InputError(f"no test images under {root}",
                         fix="pass --data DIR: a folder of images, or the dataset the model was trained on")
    return list(inputs)


#: How many distinct images are generated for a model without data (batches repeat them).
GENERATED = 8


def bench_cases(model_dir: ModelDir, data_dir: str | os.PathLike | None,
                batch_sizes: list[int]) -> list[tuple[str, list[Path], list[int]]]:
    """What to measure: ``(label, images, batch sizes)`` per case.

    Models for images of any size are measured per input size: their task's runtime module
    lists ``bench_sides`` (and may cap the pixels of a batch with ``bench_pixels``), and their
    dataset holds ``bench/<side>x<side>.png`` (datasets made by ``visionrt data``; a folder of one's
    own photos has none: the largest centred square of its first test input, resized); one case
    per side, labelled e.g. "256×256".
    Otherwise: one unlabelled case of test images."""
    task = runtime_task(model_dir.manifest.task)
    sides = task.bench_sides
    if not sides:
        return [("", test_images(model_dir, data_dir, max(batch_sizes)), batch_sizes)]
    root = Path(data_dir or model_dir.manifest.model.get("dataset", "")) / "bench"
    budget = task.bench_pixels
    cases, photo = [], None
    for side in sides:
        image = root / f"{side}x{side}.png"
        if not image.is_file():
            photo = load_image(test_images(model_dir, data_dir, 1)[0]) if photo is None else photo
            image = centre_square(photo, side)
        fitting = [b for b in batch_sizes if budget is None or b * side * side <= budget]
        cases.append((f"{side}×{side}", [image], fitting or [min(batch_sizes)]))
    return cases


def _load_trained(model_dir: ModelDir):
    """The trained ``nn.Module`` for the torch backend (training code, imported when it is opened); a
    module of one's own through its factory (``export --module``); none for an imported ONNX."""
    if not model_dir.has("weights"):
        reason = "imported ONNX" if "imported_from" in model_dir.manifest.model else f"none in {model_dir.root}"
        raise BackendUnavailable(f"no PyTorch weights: {reason}")
    if model_dir.manifest.model.get("source") == "nn.Module":
        from ..export.user_module import load_module

        return load_module(model_dir)
    from ..train.loop import load_trained

    return load_trained(model_dir)


#: Where a backend computes a precision in another, the note its rows carry.
COMPUTED_AS = {("onnxruntime-cpu", "fp16"): "onnxruntime's CPU kernels compute fp16 as fp32 (+ casts)"}


def _runners(model_dir: ModelDir, backends: Iterable[str], threads: int,
             precisions: Iterable[str] = ("fp32",)) -> Iterable[tuple[str, str, Callable[[], Runner]]]:
    """``(label, precision, make runner)`` per backend and precision (PyTorch: fp32 only;
    TensorRT: the engines built from the precisions' files)."""
    precisions = list(precisions)
    for backend in backends:
        if backend == "torch":
            yield BASELINE, "fp32", lambda: open_runner(model_dir, "torch", threads=threads, load_model=_load_trained)
        elif backend == "tensorrt":
            for key, facts in (model_dir.manifest.engines or {"tensorrt": {}}).items():
                label = FLAVOURS[facts["flavour"]].runner_name if "flavour" in facts else key
                if facts.get("precision", "fp32") in precisions:
                    yield label, facts.get("precision", "fp32"), \
                        lambda key=key: open_runner(model_dir, "tensorrt", engine_key=key)
        else:
            for precision in precisions:
                yield backend, precision, lambda backend=backend, precision=precision: open_runner(
                    model_dir, backend, threads=threads, precision=precision)


def bench_model_dir(model_dir: ModelDir, backends: Iterable[str] = ("onnxruntime", "torch"),
                    batch_sizes: Iterable[int] = (1, 8, 32), data_dir: str | os.PathLike | None = None,
                    out_dir: str | os.PathLike | None = None, min_seconds: float = 1.0,
                    threads: int | None = None, max_seconds: float | None = None,
                    precisions: Iterable[str] = ("fp32",)) -> dict[str, Path]:
    """Benchmark, write ``bench.json/.md/.png`` (default ``<model_dir>/bench``), record in the manifest.

    ``precisions``: each backend runs each precision's file (``visionrt.runtime.precision``); a
    precision that was not exported gives a skipped row. The report's accuracy rows come from the
    manifest (parity per backend, ``precisions`` per precision file), and the report times a
    fixed reference workload (``compare.reference_workload``) for ``bench --compare --normalise``.

    ``min_seconds``/``max_seconds``: measuring time per point, see :class:`BenchSettings`."""
    m = model_dir.manifest
    threads = threads or usable_cpus()
    settings = BenchSettings(min_seconds=min_seconds, threads=threads,
                             **({} if max_seconds is None else {"max_seconds": max_seconds}))
    batch_sizes = list(batch_sizes)
    cases = bench_cases(model_dir, data_dir, batch_sizes)
    arch = m.model["arch"]
    results: list[Result] = []
    broken: list[ArtifactError] = []
    for label, precision, make in _runners(model_dir, backends, threads, precisions):
        try:
            runner = make()
            predictor = Predictor(model_dir, runner=runner)
        except (BackendUnavailable, ArtifactError) as err:
            if isinstance(err, ArtifactError):
                broken.append(err)
            results.append(Result(task=m.task, model=arch, backend=label, precision=precision, batch=batch_sizes[0],
                                  mode="model", timing=None, notes=f"skipped: {err}"))
            continue
        note = COMPUTED_AS.get((runner.name, precision), "")
        log.info("bench: %s %s, batch sizes %s", label, precision, ", ".join(map(str, batch_sizes)))
        for case, images, sizes in cases:
            point = dict(task=m.task, model=f"{arch} {case}".strip())
            batches = {b: (images * b)[:b] for b in sizes}
            arrays = {b: predictor.preprocess(batches[b]) for b in sizes}
            measured = bench_model(runner, make_feed=lambda b: {m.input.name: arrays[b]}, precision=precision,
                                   batch_sizes=sizes, settings=settings, **point)
            measured += bench_end_to_end(predictor.predict, inputs_for_batch=batches.__getitem__,
                                         backend=runner.name, precision=precision, batch_sizes=sizes,
                                         settings=settings, **point)
            results += [dataclasses.replace(r, notes="; ".join(filter(None, (r.notes, note)))) for r in measured]
        predictor.close()
    if broken and all(r.timing is None for r in results):  # nothing measured: the model's files are the problem
        raise broken[0]
    accuracy = [{"task": m.task, "backend": backend, "precision": "fp32",
                 m.primary_metric: values["test"][m.primary_metric]}
                for backend, values in m.metrics.items() if isinstance(values, dict)
                and m.primary_metric in values.get("test", {})  # an import's: agreement with its fp32, no metric
                and not _precision_runner(backend)]
    accuracy += precision_accuracy(m)
    paths = write_report(results, Path(out_dir or model_dir.root / "bench"), accuracy=accuracy,
                         baseline=BASELINE if any(r.backend == BASELINE for r in results) else None,
                         settings=settings, reference=reference_workload())
    m.benchmarks = {"settings": {"threads": threads, "min_seconds": min_seconds},
                    "median_ms": {"/".join(filter(None, (r.model.removeprefix(arch).strip(), r.backend,
                                                         None if r.precision == "fp32" else r.precision, r.mode,
                                                         f"b{r.batch}"))): r.timing.median_ms
                                  for r in results if r.timing is not None}}
    model_dir.record("bench", report=str(paths.markdown))
    model_dir.save()
    return {"json": paths.json, "markdown": paths.markdown, "chart": paths.png}


def _precision_runner(name: str) -> bool:
    """Whether a metrics entry is the run of a reduced-precision file (reported per precision)."""
    return any(name.startswith("onnxruntime-cpu-" + p) for p in ("fp16", "int8"))


def precision_accuracy(manifest) -> list[dict]:
    """Accuracy rows of the precision files measured at export (``manifest.precisions``): the
    task's metrics, their change vs PyTorch fp32, the worst raw output difference from it, the
    file's size (MB) and the verdict, for onnxruntime CPU (the TensorRT-layout int8 file, run in
    onnxruntime, as its own row)."""
    rows = []
    for precision, record in manifest.precisions.items():
        for key, entry in (record.get("files") or {}).items() if isinstance(record, dict) else ():
            accuracy = entry.get("accuracy")
            if not accuracy:
                continue
            backend = "onnxruntime-cpu" + (" (TensorRT int8 layout)" if entry["target"] == "tensorrt" else "")
            row = {"task": manifest.task, "backend": backend, "precision": precision,
                   "verdict": "PASS" if accuracy["passed"] else "FAIL"}
            for name, figures in accuracy["metrics"].items():
                if "tolerance" in figures:
                    row[name] = figures["value"]
                    row[f"{name} vs fp32"] = figures["change"]
            if "max_abs_diff" in accuracy:
                row["max |diff| vs fp32"] = accuracy["max_abs_diff"]
            if key in manifest.files:
                row["file MB"] = manifest.files[key].bytes / 1e6
            rows.append(row)
    return rows

