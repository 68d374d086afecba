"""Every stage for one task, composed: data -> train -> export + parity -> build -> bench -> report.

Each stage reads and writes the model directory; this module only sequences them and
says what each wrote where. Needs the ``train`` extra (torch); the engine build needs
``rtx`` or ``trt`` and is skipped with a note when neither is installed.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from ..runtime import atomic
from ..runtime.errors import ArtifactError, BackendUnavailable, InputError, PluginError, VisionRTError
from ..runtime.manifest import ModelDir
from ..runtime.precision import PRECISIONS
from ..train.cli import build_data

log = logging.getLogger(__name__)


def run_pipeline(task: str, out: str | os.PathLike, quick: bool = True, model: str | None = None,
                 seed: int = 0, build: bool = True, bench_seconds: float = 1.0,
                 precisions: Sequence[str] = PRECISIONS,
                 bench_batch_sizes: Sequence[int] = (1, 8, 32), epochs: int | None = None,
                 overrides: Mapping[str, Any] | None = None, dataset: str | None = None,
                 name: str | None = None) -> dict[str, Any]:
    """Run every stage; returns the paths written and the headline figures.

    ``precisions``: beside fp32, the reduced precisions exported (``export/precision.py``: files,
    accuracy vs PyTorch fp32 and verdict in ``manifest.precisions``), built and benchmarked.

    ``bench_seconds``: minimum measuring time per benchmark point; warm-up and measuring each
    stop after five times that (slow points, e.g. large images, get fewer runs);
    ``bench_batch_sizes``: the batch sizes benchmarked; ``epochs``: instead of the configuration's;
    ``overrides``: other :class:`~visionrt.train.config.TrainConfig` fields (e.g. ``model_kwargs``);
    ``dataset``: a sibling of the built-in dataset's folder to train on instead (superres's ``x3``);
    ``name``: the model directory's name under ``out`` (default ``<task>-<model>``)."""
    from ..export.stage import export_and_verify
    from ..train import tasks
    from ..train.loop import fit
    from .run import bench_model_dir

    out = Path(out)
    mode = "quick" if quick else "full"
    data_dir = build_data(task, out / "data" / task, quick=quick, seed=seed)
    if dataset:
        data_dir = data_dir.parent / dataset
        if not data_dir.is_dir():
            raise InputError(f"{task}'s built-in data has no dataset '{dataset}' beside {data_dir.parent}",
                             fix="name one of its folders")
        log.info("data: training on %s", data_dir)

    config = tasks.configure(task, quick, model, seed=seed, threads=os.cpu_count() or 1,
                             **{**(overrides or {}), **({"epochs": epochs} if epochs else {})})
    log.info("train: %s/%s (%s)", task, config.model, mode)
    model_dir = fit(config, data_dir, out / (name or f"{task}-{config.model}"), overwrite=True)  # a re-run replaces it
    log.info("train: wrote %s", model_dir.path("weights", verify=False))

    log.info("export: ONNX + parity with PyTorch on held-out images")
    parity = export_and_verify(model_dir, data_dir)
    reduced = [p for p in precisions if p != "fp32"]
    if reduced:
        from ..export.precision import export_precisions

        log.info("export: %s files, accuracy vs PyTorch fp32", ", ".join(reduced))
        for precision, record in export_precisions(model_dir, data_dir, reduced).items():
            if precision in reduced:
                log.info("  %s: %s", precision, "PASS" if record.get("passed") else "FAIL (outside its tolerance)")

    engine_note = "not requested (--no-build)"
    if build:
        engine_note = "; ".join(_build(model_dir, precision) for precision in ("fp32", *reduced))

    log.info("bench: latency per backend and batch size")
    bench = bench_model_dir(model_dir, backends=["onnxruntime", "openvino", "torch", "tensorrt"],
                            batch_sizes=list(bench_batch_sizes), data_dir=data_dir, out_dir=model_dir.root / "bench",
                            min_seconds=bench_seconds, max_seconds=5 * bench_seconds,
                            precisions=["fp32", *reduced])
    pictures = write_pictures(model_dir, data_dir)
    report = write_pipeline_report(ModelDir.open(model_dir.root), parity.passed, engine_note, bench, pictures)
    log.info("report: %s", report["markdown"])
    return {"model_dir": str(model_dir.root), "report": str(report["markdown"]),
            **{k: str(v) for k, v in report.items()}}


def _build(model_dir: ModelDir, precision: str = "fp32") -> str:
    from ..export.build import BuildError, build

    log.info("build: TensorRT engine (%s)", precision)
    try:
        result = build(model_dir, precision=precision)
    except (BackendUnavailable, PluginError, BuildError, ArtifactError) as err:
        log.warning("build skipped: %s", err)
        return f"skipped: {err}"
    f = result.facts
    shapes = " / ".join("×".join(map(str, shape)) for shape in next(iter(f["profile"].values())).values())
    note = (f"{result.path.name}: {f['flavour']} {f['tensorrt_version']}, {f['precision']}, input min / opt / max "
            f"{shapes}, compute capability {', '.join(f['compute_capabilities'])}, "
            f"built in {f['build_seconds']:.1f}s ({f['engine_bytes'] / 1e6:.1f} MB)")
    log.info("build: %s", note)
    return note


def write_pictures(model_dir: ModelDir, data_dir: str | os.PathLike, count: int = 3) -> list[Path]:
    """``pictures/<name>.png`` for the first ``count`` held-out images: each result drawn on its
    image by the task's ``report_picture(result, image, target)``."""
    from ..runtime.images import load_image
    from ..runtime.predictor import Predictor
    from ..runtime.tasks import runtime_task

    task = runtime_task(model_dir.manifest.task)
    paths, targets = task.heldout(data_dir, count, model_dir.manifest)
    written = []
    with Predictor(model_dir) as predictor:
        for i, (path, target) in enumerate(zip(paths, targets)):
            image = load_image(path)
            result = predictor.predict(image)[0]
            picture = task.report_picture(result, image, target)
            name = Path(path).stem if isinstance(path, (str, os.PathLike)) else f"test-{i + 1}"  # or an array
            out = model_dir.root / "pictures" / f"{name}.png"
            with atomic.atomic_path(out) as tmp:
                Image.fromarray(picture).save(tmp, format="PNG")
            written.append(out)
    return written


def write_pipeline_report(model_dir: ModelDir, parity_passed: bool, engine_note: str, bench: dict[str, Path],
                 pictures: list[Path] = ()) -> dict[str, Path]:
    """``report.md`` + ``report.json`` in the model directory: metrics, parity, engine, latency, pictures."""
    m = model_dir.manifest
    metric = m.primary_metric
    test = m.metrics["pytorch"]["test"]
    columns = [metric, *(k for k, v in test.items() if k not in (metric, "images") and isinstance(v, (int, float)))]
    lines = [f"# visionrt report: {m.task} / {m.model['arch']}", ""]
    lines += ["## Accuracy (test split)", "", f"| backend | {' | '.join(columns)} | images |",
              "|---|" + "---|" * (len(columns) + 1)]
    for backend, values in m.metrics.items():
        if isinstance(values, dict) and "test" in values:
            cells = " | ".join(f"{values['test'][c]:.4f}" if c in values["test"] else "" for c in columns)
            lines.append(f"| {backend} | {cells} | {values['test'].get('images', values.get('images', ''))} |")
    lines += ["", "## Parity with PyTorch", ""]
    for backend, report in m.parity.items():
        worst = max(report["outputs"], key=lambda o: o["max_abs"])
        lines.append(f"- {backend}: {'PASS' if report['passed'] else 'FAIL'}, max |diff| {worst['max_abs']:.2e}, "
                     f"mean |diff| {worst['mean_abs']:.2e}, smallest passing atol {worst['min_atol']:.2e} "
                     f"(rtol {report['rtol']:g}) over {report['samples']} images")
        if report.get("postprocessed"):  # the task's verdict after post-processing (e.g. detections by IoU)
            lines.append("  - after post-processing: " + ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report["postprocessed"].items()))
    lines += ["", "## Engine", "", f"- {engine_note}", "", "## Latency", ""]
    bench_dir = Path(bench["markdown"]).parent.relative_to(model_dir.root).as_posix()
    bench_text = Path(bench["markdown"]).read_text().split("\n", 1)[1].strip()
    lines += [bench_text.replace("](bench.png)", f"]({bench_dir}/bench.png)"), ""]
    if pictures:
        lines += ["## Pictures (held-out images)", ""]
        lines += [f"![{p.stem}]({p.relative_to(model_dir.root).as_posix()})" for p in pictures] + [""]
    lines += ["## Files", "", "| key | file | bytes | sha256 |", "|---|---|---|---|"]
    lines += [f"| {k} | {f.path} | {f.bytes} | {f.sha256[:12]} |" for k, f in m.files.items()]
    markdown = model_dir.root / "report.md"
    atomic.write_text(markdown, "\n".join(lines) + "\n")
    summary = {"task": m.task, "model": m.model, "metrics": m.metrics, "parity_passed": parity_passed,
               "engine": engine_note, "benchmarks": json.loads(Path(bench["json"]).read_text())}
    data = model_dir.root / "report.json"
    atomic.write_text(data, json.dumps(summary, indent=2, default=str) + "\n")
    return {"markdown": markdown, "json": data, "chart": Path(bench["chart"])}


def run_all(tasks: list[str], out: str | os.PathLike, **options: Any) -> dict[str, Any]:
    """:func:`run_pipeline` for each of ``tasks`` (keyword ``options`` as there), then
    ``<out>/summary.md`` + ``summary.json``: one row per task with its metric on each backend,
    parity, engine and batch-1 latency. A task that fails is reported in its row and the others
    still run; the summary is written either way and the failures are raised at the end."""
    out = Path(out)
    rows, failed = [], []
    for task in tasks:
        log.info("=== %s ===", task)
        try:
            result = run_pipeline(task, out, **options)
        except VisionRTError as err:
            log.error("%s failed: %s", task, err)
            rows.append({"task": task, "error": str(err)})
            failed.append(task)
            continue
        rows.append(summary_row(ModelDir.open(result["model_dir"]), out))
    paths = write_summary(rows, out)
    if failed:
        raise VisionRTError(f"pipeline failed for {', '.join(failed)} (the others ran; see {paths['markdown']})")
    return {k: str(v) for k, v in paths.items()}


def summary_row(model_dir: ModelDir, out: Path) -> dict[str, Any]:
    """One task's headline: metric per backend, parity verdicts, engine, batch-1 latency (model only)."""
    m = model_dir.manifest
    metric = m.primary_metric
    latency = {}
    for key, ms in (m.benchmarks or {}).get("median_ms", {}).items():
        *case, backend, mode, batch = key.split("/")
        if mode == "model" and batch == "b1" and backend not in latency:  # the first (smallest) input size
            latency[backend] = {"ms": ms, "input": case[0] if case else None}
    return {"task": m.task, "model": m.model["arch"], "metric": metric,
            "values": {backend: values["test"][metric] for backend, values in m.metrics.items()
                       if isinstance(values, dict) and "test" in values},
            "parity": {backend: report["passed"] for backend, report in m.parity.items()},
            "engines": sorted(m.engines), "latency_b1": latency,
            "report": (model_dir.root / "report.md").relative_to(out).as_posix()}


def write_summary(rows: list[dict[str, Any]], out: Path) -> dict[str, Path]:
    lines = ["# visionrt: every task", "",
             "| task | model | metric | PyTorch | onnxruntime | parity | engine | onnxruntime b1 (ms) | "
             "PyTorch b1 (ms) | report |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['task']} | | | | | | | | | FAILED: {row['error']} |")
            continue
        values, latency = row["values"], row["latency_b1"]
        ms = {name: f"{entry['ms']:.2f}" + (f" ({entry['input']})" if entry["input"] else "")
              for name, entry in latency.items()}
        lines.append(" | ".join([
            f"| {row['task']}", row["model"], row["metric"], f"{values.get('pytorch', float('nan')):.4f}",
            f"{values.get('onnxruntime-cpu', float('nan')):.4f}",
            ", ".join(f"{b} {'PASS' if ok else 'FAIL'}" for b, ok in row["parity"].items()),
            ", ".join(row["engines"]) or "none (see report)", ms.get("onnxruntime-cpu", ""), ms.get("pytorch", ""),
            f"[report]({row['report']}) |"]))
    markdown, data = out / "summary.md", out / "summary.json"
    atomic.write_text(markdown, "\n".join(lines) + "\n")
    atomic.write_text(data, json.dumps(rows, indent=2) + "\n")
    return {"markdown": markdown, "json": data}
