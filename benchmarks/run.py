"""``visionrt bench``: every requested backend of one model directory, model-only and end-to-end.

Backends: ``onnxruntime`` (CPU provider; CUDA when installed), ``torch`` (PyTorch eager,
the baseline; needs the train extra) and ``tensorrt`` (the manifest's engines; needs a GPU).
One that cannot run here gives a skipped row saying why, not an error. The same thread
count goes to onnxruntime and torch. Images come from the dataset's test split on disk, or
from the task's own benchmark cases (see :func:`bench_cases`; their label joins the model name).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable


from ..runtime.backends import Runner, open_runner
from ..runtime.errors import BackendUnavailable, InputError
from ..runtime.manifest import ModelDir
from ..runtime.predictor import Predictor
from ..runtime.tasks import task_module
from ..runtime.tensorrt_env import FLAVOURS
from .harness import BenchSettings, Result, bench_end_to_end, bench_model
from .machine import usable_cpus
from .report import write_report

BASELINE = "torch-eager"


def test_images(model_dir: ModelDir, data_dir: str | os.PathLike | None, count: int = 64) -> list[Path]:
    """Up to ``count`` image files of the dataset's test split (the manifest's dataset by default)."""
    root = Path(data_dir or model_dir.manifest.model.get("dataset", ""))
    paths = sorted((root / "images" / "test").glob("*.png"))[:count]
    if not paths:
        raise InputError(f"no test images under {root / 'images' / 'test'}",
                         fix="pass --data DIR of a dataset made by `visionrt data`")
    return paths


def bench_cases(model_dir: ModelDir, data_dir: str | os.PathLike | None,
                batch_sizes: list[int]) -> list[tuple[str, list[Path], list[int]]]:
    """What to measure: ``(label, images, batch sizes)`` per case.

    Models for images of any size are measured per input size: their task's runtime module
    lists ``BENCH_SIDES`` (and may cap the pixels of a batch with ``BENCH_PIXELS``), and their
    dataset holds ``bench/<side>x<side>.png``; one case per side, labelled e.g. "256×256".
    Otherwise: one unlabelled case of test images."""
    task = task_module(model_dir.manifest.task)
    sides = getattr(task, "BENCH_SIDES", ())
    if not sides:
        return [("", test_images(model_dir, data_dir, max(batch_sizes)), batch_sizes)]
    root = Path(data_dir or model_dir.manifest.model.get("dataset", "")) / "bench"
    budget = getattr(task, "BENCH_PIXELS", None)
    cases = []
    for side in sides:
        path = root / f"{side}x{side}.png"
        if not path.is_file():
            raise InputError(f"no benchmark image {path}", fix="pass --data DIR of a dataset made by `visionrt data`")
        fitting = [b for b in batch_sizes if budget is None or b * side * side <= budget]
        cases.append((f"{side}×{side}", [path], fitting or [min(batch_sizes)]))
    return cases


def _torch_runner(model_dir: ModelDir, threads: int) -> Runner:
    try:
        import torch
    except ImportError as err:
        raise BackendUnavailable("PyTorch is not installed", fix="pip install 'visionrt[train]'") from err
    from ..export.onnx_export import load_trained
    from ..export.torch_runner import TorchRunner
    from ..runtime.backends.base import TensorSpec

    torch.set_num_threads(threads)
    spec = model_dir.manifest.input
    inputs = [TensorSpec(spec.name, tuple(spec.shape), spec.dtype)]
    return TorchRunner(load_trained(model_dir), inputs, [o.name for o in model_dir.manifest.outputs])


def _runners(model_dir: ModelDir, backends: Iterable[str], threads: int) -> Iterable[tuple[str, Callable[[], Runner]]]:
    for backend in backends:
        if backend == "torch":
            yield BASELINE, lambda: _torch_runner(model_dir, threads)
        elif backend == "tensorrt":
            for key, facts in (model_dir.manifest.engines or {"tensorrt": {}}).items():
                label = FLAVOURS[facts["flavour"]].runner_name if "flavour" in facts else key
                yield label, lambda key=key: open_runner(model_dir, "tensorrt", engine_key=key)
        else:
            yield backend, lambda backend=backend: open_runner(model_dir, backend, threads=threads)


def bench_model_dir(model_dir: ModelDir, backends: Iterable[str] = ("onnxruntime", "torch"),
                    batch_sizes: Iterable[int] = (1, 8, 32), data_dir: str | os.PathLike | None = None,
                    out_dir: str | os.PathLike | None = None, min_seconds: float = 1.0,
                    threads: int | None = None, max_seconds: float | None = None) -> dict[str, Path]:
    """Benchmark, write ``bench.json/.md/.png`` (default ``<model_dir>/bench``), record in the manifest.

    ``min_seconds``/``max_seconds``: measuring time per point, see :class:`BenchSettings`."""
    m = model_dir.manifest
    threads = threads or usable_cpus()
    settings = BenchSettings(min_seconds=min_seconds, threads=threads,
                             **({} if max_seconds is None else {"max_seconds": max_seconds}))
    batch_sizes = list(batch_sizes)
    cases = bench_cases(model_dir, data_dir, batch_sizes)
    arch = m.model["arch"]
    results: list[Result] = []
    for label, make in _runners(model_dir, backends, threads):
        try:
            runner = make()
            predictor = Predictor(model_dir, runner=runner)
        except BackendUnavailable as err:
            results.append(Result(task=m.task, model=arch, backend=label, precision="fp32", batch=batch_sizes[0],
                                  mode="model", timing=None, notes=f"skipped: {err}"))
            continue
        precision = getattr(runner, "facts", {}).get("precision", "fp32")
        for case, images, sizes in cases:
            point = dict(task=m.task, model=f"{arch} {case}".strip())
            batches = {b: (images * b)[:b] for b in sizes}
            arrays = {b: predictor.preprocess(batches[b]) for b in sizes}
            results += bench_model(runner, make_feed=lambda b: {m.input.name: arrays[b]}, precision=precision,
                                   batch_sizes=sizes, settings=settings, **point)
            results += bench_end_to_end(predictor.predict, inputs_for_batch=batches.__getitem__,
                                        backend=runner.name, precision=precision, batch_sizes=sizes,
                                        settings=settings, **point)
        predictor.close()
    accuracy = [{"task": m.task, "backend": "torch-eager" if backend == "pytorch" else backend, "precision": "fp32",
                 m.metrics["metric"]: values["test"][m.metrics["metric"]]}
                for backend, values in m.metrics.items() if isinstance(values, dict) and "test" in values]
    paths = write_report(results, Path(out_dir or model_dir.root / "bench"), accuracy=accuracy,
                         baseline=BASELINE if any(r.backend == BASELINE for r in results) else None,
                         settings=settings)
    m.benchmarks = {"settings": {"threads": threads, "min_seconds": min_seconds},
                    "median_ms": {"/".join(filter(None, (r.model.removeprefix(arch).strip(), r.backend, r.mode,
                                                         f"b{r.batch}"))): r.timing.median_ms
                                  for r in results if r.timing is not None}}
    model_dir.record("bench", report=str(paths.markdown))
    model_dir.save()
    return {"json": paths.json, "markdown": paths.markdown, "chart": paths.png}
