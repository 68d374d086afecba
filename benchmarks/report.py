"""Benchmark reports: ``bench.json``, ``bench.md`` and ``bench.png`` from harness results.

Like Ultralytics' benchmark table: one table per task with every backend and precision,
latency and throughput beside the accuracy measured for that backend and precision, and
the speed of each backend relative to a baseline (usually the PyTorch reference).
Accuracy rows are plain dicts, ``{"backend": ..., "precision": ..., "top1": 0.97}``,
optionally narrowed with ``"task"`` and ``"model"``; every other key is a metric column.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from visionrt.runtime import atomic

from .harness import MODES, BenchSettings, Result
from .machine import describe_machine

FORMAT = "visionrt-bench"
FORMAT_VERSION = 1
_IDENTITY = ("task", "model", "backend", "precision")
_NO_VALUE = "—"


@dataclasses.dataclass(frozen=True)
class ReportPaths:
    """The files written; ``png`` is ``None`` when the chart was skipped (no matplotlib)."""

    json: Path
    markdown: Path
    png: Path | None


def write_report(results: Sequence[Result], out_dir: str | os.PathLike, *,
                 accuracy: Iterable[Mapping[str, Any]] = (), baseline: str | None = None,
                 settings: BenchSettings | None = None,
                 machine: Mapping[str, Any] | None = None,
                 reference: Mapping[str, float] | None = None) -> ReportPaths:
    """Write ``bench.json``, ``bench.md`` and ``bench.png`` into ``out_dir``, each atomically.

    ``baseline`` is the backend the speed ratios divide by (default: the first backend in
    ``results``); ``machine`` defaults to :func:`describe_machine`. ``reference``: the fixed
    reference workload timed in the same run (``compare.reference_workload``), which
    ``bench --compare --normalise`` divides latencies by.
    """
    out = Path(out_dir)
    accuracy = [dict(row) for row in accuracy]
    machine = describe_machine() if machine is None else dict(machine)
    baseline = baseline or (results[0].backend if results else None)

    png: Path | None = out / "bench.png"
    try:
        write_chart(results, png, title=_machine_line(machine, settings))
        chart = f"![latency and throughput per batch size]({png.name})"
    except ImportError:
        png = None
        chart = ("> Chart skipped: matplotlib is not installed "
                 "(`pip install matplotlib`, or the `train` extra).")

    document = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": None if settings is None else dataclasses.asdict(settings),
        "baseline": baseline,
        "reference": None if reference is None else dict(reference),
        "results": [r.to_dict() for r in results],
        "accuracy": accuracy,
    }
    json_path, md_path = out / "bench.json", out / "bench.md"
    atomic.write_text(json_path, json.dumps(document, indent=2) + "\n")
    atomic.write_text(md_path, markdown(results, accuracy=accuracy, baseline=baseline,
                                        settings=settings, machine=machine, chart=chart))
    return ReportPaths(json=json_path, markdown=md_path, png=png)


# Markdown ------------------------------------------------------------------------------

def markdown(results: Sequence[Result], *, accuracy: Sequence[Mapping[str, Any]] = (),
             baseline: str | None = None, settings: BenchSettings | None = None,
             machine: Mapping[str, Any] | None = None, chart: str = "") -> str:
    """The Markdown report: method, then per task a table and the speed ratios vs ``baseline``."""
    lines = ["# Benchmark", ""]
    if machine:
        lines += [f"Machine: {_machine_line(machine, settings)}  ", f"Software: {_software_line(machine)}", ""]
    lines += [_method_line(settings), ""]
    for task in _unique(r.task for r in results):
        rows = _ordered([r for r in results if r.task == task])
        lines += [f"## {task}", "", *_table(rows, accuracy), ""]
        ratios = _ratio_lines(rows, baseline)
        if ratios:
            lines += [f"Median latency relative to {baseline} (below 1 is faster):", "", *ratios, ""]
        per_precision = _precision_ratio_lines(rows)
        if per_precision:
            lines += ["Median latency relative to fp32 on the same backend (below 1 is faster):", "",
                      *per_precision, ""]
    if chart:
        lines += [chart, ""]
    return "\n".join(lines)


def _table(rows: Sequence[Result], accuracy: Sequence[Mapping[str, Any]]) -> list[str]:
    metrics = _unique(key for r in rows for row in _accuracy_rows(r, accuracy)
                      for key in row if key not in _IDENTITY)
    header = ["model", "backend", "precision", "mode", "batch", "median ms", "p90 ms", "p99 ms",
              "images/s", *metrics, "notes"]
    right = {"batch", "median ms", "p90 ms", "p99 ms", "images/s", *metrics}
    lines = [_cells(header), _cells("---:" if h in right else "---" for h in header)]
    for r in rows:
        t = r.timing
        found = {k: v for row in _accuracy_rows(r, accuracy) for k, v in row.items()}
        lines.append(_cells([
            r.model, r.backend, r.precision, r.mode, r.batch,
            *(_number(getattr(t, f) if t else None) for f in ("median_ms", "p90_ms", "p99_ms")),
            _number(r.images_per_s), *(_number(found.get(m)) for m in metrics), r.notes]))
    return lines


def _ratio_lines(rows: Sequence[Result], baseline: str | None) -> list[str]:
    """One bullet per series: its median latency / the baseline's, at each batch size both have.

    The baseline is the first precision of ``baseline`` measured for the same model and mode.
    """
    reference: dict[tuple, Result] = {}
    for r in rows:
        if r.backend == baseline and r.timing is not None:
            reference.setdefault((r.model, r.mode, r.batch), r)
    ratios: dict[tuple, list[str]] = {}
    for r in rows:
        base = reference.get((r.model, r.mode, r.batch))
        if r.timing is None or base is None or (r.backend, r.precision) == (base.backend, base.precision):
            continue
        key = (r.backend, r.precision, base.precision, r.model, r.mode)
        ratios.setdefault(key, []).append(
            f"batch {r.batch} = {_number(r.timing.median_ms / base.timing.median_ms, 2)}")
    return [f"- {backend} {precision} / {baseline} {base_precision} ({model}, {mode}): {', '.join(values)}"
            for (backend, precision, base_precision, model, mode), values in ratios.items()]


def _precision_ratio_lines(rows: Sequence[Result]) -> list[str]:
    """One bullet per reduced-precision series: its median latency / the same backend's fp32."""
    fp32 = {(r.backend, r.model, r.mode, r.batch): r for r in rows if r.precision == "fp32" and r.timing}
    ratios: dict[tuple, list[str]] = {}
    for r in rows:
        base = fp32.get((r.backend, r.model, r.mode, r.batch))
        if r.precision != "fp32" and r.timing is not None and base is not None:
            ratios.setdefault((r.backend, r.precision, r.model, r.mode), []).append(
                f"batch {r.batch} = {_number(r.timing.median_ms / base.timing.median_ms, 2)}")
    return [f"- {backend} {precision} / fp32 ({model}, {mode}): {', '.join(values)}"
            for (backend, precision, model, mode), values in ratios.items()]


def _accuracy_rows(result: Result, accuracy: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Accuracy rows for the result's backend and precision (and task and model, where given)."""
    return [row for row in accuracy
            if all(row.get(key, getattr(result, key)) == getattr(result, key) for key in _IDENTITY)]


def _method_line(settings: BenchSettings | None) -> str:
    text = ("Latency is wall time per batch in ms (median, p90, p99); images/s = batch / median. "
            "*model*: inference on a prepared batch; *end-to-end*: decode, preprocess, infer, post-process.")
    if settings is None:
        return text
    s = settings
    return (f"{text} Each point: warm-up of at least {s.warmup} runs and {s.warmup_s:g} s, then at "
            f"least {s.iterations} runs and {s.min_seconds:g} s (at most {s.max_seconds:g} s).")


def _machine_line(machine: Mapping[str, Any], settings: BenchSettings | None) -> str:
    cpus = f"{machine.get('usable_cpus')} of {machine.get('cpu_count')} CPUs usable"
    if machine.get("cpu_quota"):
        cpus += f", quota {machine['cpu_quota']:g}"
    parts = [str(machine.get("cpu", "unknown CPU")), cpus]
    if settings is not None and settings.threads:
        parts.append(f"{settings.threads} threads")
    parts.append(", ".join(g["name"] for g in machine.get("gpus") or []) or "no GPU")
    return " · ".join(parts)


def _software_line(machine: Mapping[str, Any]) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in (machine.get("packages") or {}).items())
    return " · ".join(p for p in (machine.get("os"), f"Python {machine.get('python')}", packages) if p)


def _ordered(rows: Sequence[Result]) -> list[Result]:
    """Model-only before end-to-end; backends in the order they were measured; batch ascending."""
    models = _unique(r.model for r in rows)
    series = _unique((r.backend, r.precision) for r in rows)
    return sorted(rows, key=lambda r: (models.index(r.model), MODES.index(r.mode),
                                       series.index((r.backend, r.precision)), r.batch))


def _number(value: Any, digits: int = 3) -> str:
    """``digits`` significant digits, never in exponent notation; ``—`` for no value."""
    if value is None:
        return _NO_VALUE
    if not isinstance(value, float):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def _cells(values: Iterable[Any]) -> str:
    return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


# Chart ---------------------------------------------------------------------------------

def write_chart(results: Sequence[Result], path: str | os.PathLike, title: str = "") -> None:
    """Per task, median latency (whisker up to p90) and images/s against batch size, as a PNG.

    One colour per backend and precision; model-only solid, end-to-end dashed. Raises
    ImportError without matplotlib, which is not part of the base runtime.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    timed = [r for r in results if r.timing is not None]
    tasks = _unique(r.task for r in timed)
    figure = Figure(figsize=(12, 4 * max(1, len(tasks))), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(1, len(tasks)), 2, squeeze=False)
    if title:
        figure.suptitle(title, fontsize=10)
    colours = {key: f"C{i % 10}" for i, key in enumerate(_unique((r.model, r.backend, r.precision) for r in timed))}
    for task, (latency_ax, throughput_ax) in zip(tasks, axes):
        _plot_task(latency_ax, throughput_ax, task, [r for r in timed if r.task == task], colours)
    with atomic.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def _plot_task(latency_ax, throughput_ax, task: str, rows: Sequence[Result], colours: Mapping[tuple, str]) -> None:
    """One line per (model, backend, precision, mode) in both panels of one task."""
    series: dict[tuple, list[Result]] = {}
    for r in sorted(rows, key=lambda r: r.batch):
        series.setdefault((r.model, r.backend, r.precision, r.mode), []).append(r)
    several_models = len(_unique(r.model for r in rows)) > 1
    for (model, backend, precision, mode), line in series.items():
        label = f"{backend} {precision}, {mode}"
        style = dict(color=colours[(model, backend, precision)], marker="o",
                     linestyle="-" if mode == "model" else "--",
                     label=f"{model} {label}" if several_models else label)
        batches = [r.batch for r in line]
        medians = [r.timing.median_ms for r in line]
        tails = [r.timing.p90_ms - r.timing.median_ms for r in line]
        latency_ax.errorbar(batches, medians, yerr=[[0.0] * len(line), tails], capsize=3, **style)
        throughput_ax.plot(batches, [r.images_per_s for r in line], **style)

    batch_sizes = sorted({r.batch for r in rows})
    for ax in (latency_ax, throughput_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.grid(True, alpha=0.3)
    latencies = [v for r in rows for v in (r.timing.median_ms, r.timing.p90_ms)]
    if min(latencies) > 0 and max(latencies) / min(latencies) > 10:
        latency_ax.set_yscale("log")
    latency_ax.set_title(f"{task}: latency per batch (median, whisker to p90)")
    latency_ax.set_ylabel("ms")
    latency_ax.legend(fontsize=8)
    throughput_ax.set_title(f"{task}: throughput")
    throughput_ax.set_ylabel("images/s")
    throughput_ax.set_ylim(0, 1.1 * max(r.images_per_s for r in rows))
