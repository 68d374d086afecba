"""Every stage for one task, composed: data -> train -> export + parity -> build -> bench -> report.

Each stage reads and writes the model directory; this module only sequences them and
says what each wrote where. Needs the ``train`` extra (torch); the engine build needs
``rtx`` or ``trt`` and is skipped with a note when neither is installed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import atomic
from .errors import BackendUnavailable, PluginError
from .manifest import ModelDir



def _say(message: str) -> None:
    """Progress goes to stderr, so stdout carries only the result (JSON with --json)."""
    print(f"[visionrt] {message}", file=sys.stderr, flush=True)


def _progress(label: str):
    last = [-1]

    def report(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent // 10 != last[0] // 10 or done == total:
            last[0] = percent
            print(f"\r[visionrt] {label}: {done}/{total} ({percent}%)", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)
    return report


def build_data(task: str, out: str | os.PathLike, quick: bool = True, seed: int = 0) -> Path:
    from ..train import tasks

    start = time.perf_counter()
    path = tasks.get(task).build_data(out, quick=quick, seed=seed, progress=_progress("generating data"))
    _say(f"data: {path} ({time.perf_counter() - start:.0f}s)")
    return Path(path)


def train_distributed(nproc: int, argv: list[str]) -> int:
    """Re-run ``visionrt train ARGV`` under torchrun with ``nproc`` processes (DDP)."""
    argv = [a for i, a in enumerate(argv) if a != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")
            and not a.startswith("--nproc=")]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "visionrt.runtime.cli", *argv]
    return subprocess.call(command)


def run_pipeline(task: str, out: str | os.PathLike, quick: bool = True, model: str | None = None,
                 seed: int = 0, build: bool = True, bench_seconds: float = 1.0) -> dict[str, Any]:
    """Run every stage; returns the paths written and the headline figures.

    ``bench_seconds``: minimum measuring time per benchmark point."""
    from ..benchmarks.run import bench_model_dir
    from ..export.verify import export_and_verify
    from ..train import tasks
    from ..train.loop import fit

    out = Path(out)
    mode = "quick" if quick else "full"
    data_dir = build_data(task, out / "data", quick=quick, seed=seed)

    _say(f"train: {task} ({mode})")
    config = dataclasses.replace(tasks.get(task).default_config(quick), seed=seed, threads=os.cpu_count() or 1,
                                 **({"model": model} if model else {}))
    model_dir = fit(config, data_dir, out / f"{task}-{config.model}", log=lambda m: _say(f"  {m}"))
    _say(f"train: wrote {model_dir.path('weights', verify=False)}")

    _say("export: ONNX + parity with PyTorch on held-out images")
    parity = export_and_verify(model_dir, data_dir, log=lambda m: _say(f"  {m}"))

    engine_note = "not requested (--no-build)"
    if build:
        engine_note = _build(model_dir)

    _say("bench: latency per backend and batch size")
    bench = bench_model_dir(model_dir, backends=["onnxruntime", "torch", "tensorrt"], batch_sizes=[1, 8, 32],
                            data_dir=data_dir, out_dir=model_dir.root / "bench", min_seconds=bench_seconds)
    report = write_report(ModelDir.open(model_dir.root), parity.passed, engine_note, bench)
    _say(f"report: {report['markdown']}")
    return {"model_dir": str(model_dir.root), "report": str(report["markdown"]),
            **{k: str(v) for k, v in report.items()}}


def _build(model_dir: ModelDir) -> str:
    from ..export.build import build

    _say("build: TensorRT engine")
    try:
        result = build(model_dir)
    except (BackendUnavailable, PluginError) as err:
        _say(f"  build skipped: {err}")
        return f"skipped: {err}"
    f = result.facts
    batches = "/".join(str(shape[0]) for shape in next(iter(f["profile"].values())).values())
    note = (f"{result.path.name}: {f['flavour']} {f['tensorrt_version']}, {f['precision']}, batch min/opt/max "
            f"{batches}, compute capability {', '.join(f['compute_capabilities'])}, "
            f"built in {f['build_seconds']:.1f}s ({f['engine_bytes'] / 1e6:.1f} MB)")
    _say(f"  {note}")
    return note


def write_report(model_dir: ModelDir, parity_passed: bool, engine_note: str, bench: dict[str, Path]) -> dict[str, Path]:
    """``report.md`` + ``report.json`` in the model directory: metrics, parity, engine, latency."""
    m = model_dir.manifest
    metric = m.metrics["metric"]
    lines = [f"# visionrt report: {m.task} / {m.model['arch']}", ""]
    lines += ["## Accuracy (test split)", "", f"| backend | {metric} | images |", "|---|---|---|"]
    for backend, values in m.metrics.items():
        if isinstance(values, dict) and "test" in values:
            lines.append(f"| {backend} | {values['test'][metric]:.4f} | {values['test'].get('images', values.get('images', ''))} |")
    lines += ["", "## Parity with PyTorch", ""]
    for backend, report in m.parity.items():
        worst = max(report["outputs"], key=lambda o: o["max_abs"])
        lines.append(f"- {backend}: {'PASS' if report['passed'] else 'FAIL'}, max |diff| {worst['max_abs']:.2e}, "
                     f"mean |diff| {worst['mean_abs']:.2e}, smallest passing atol {worst['min_atol']:.2e} "
                     f"(rtol {report['rtol']:g}) over {report['samples']} images")
    lines += ["", "## Engine", "", f"- {engine_note}", "", "## Latency", ""]
    bench_dir = Path(bench["markdown"]).parent.relative_to(model_dir.root).as_posix()
    bench_text = Path(bench["markdown"]).read_text().split("\n", 1)[1].strip()
    lines += [bench_text.replace("](bench.png)", f"]({bench_dir}/bench.png)"), "",
              "## Files", "", "| key | file | bytes | sha256 |", "|---|---|---|---|"]
    lines += [f"| {k} | {f.path} | {f.bytes} | {f.sha256[:12]} |" for k, f in m.files.items()]
    markdown = model_dir.root / "report.md"
    atomic.write_text(markdown, "\n".join(lines) + "\n")
    summary = {"task": m.task, "model": m.model, "metrics": m.metrics, "parity_passed": parity_passed,
               "engine": engine_note, "benchmarks": json.loads(Path(bench["json"]).read_text())}
    data = model_dir.root / "report.json"
    atomic.write_text(data, json.dumps(summary, indent=2, default=str) + "\n")
    return {"markdown": markdown, "json": data, "chart": Path(bench["chart"])}
