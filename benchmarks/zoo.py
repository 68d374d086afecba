"""The zoo: every architecture of every task through every stage at its quick configuration,
judged against its target, one row each in ``<out>/zoo.md`` (+ ``zoo.json``).

A row: the architecture's test metric (PyTorch) and its target, PASS/FAIL, parity per backend,
the reduced precisions' verdicts, the engines built, onnxruntime's batch-1 latency and the
training time. Rows are written as they finish, and a run with ``only`` keeps the rows of the
other entries from the earlier ``zoo.json``, so a failed or retuned architecture is rerun alone.
Needs the ``train`` extra; about two hours on two CPU cores (README).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..runtime import atomic
from ..runtime.errors import InputError, VisionRTError
from ..runtime.manifest import ModelDir

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One architecture (or a variant of one) and its target on the task's built-in test split:
    ``metric >= target``. ``overrides``: TrainConfig fields beside its quick configuration;
    ``dataset``: a sibling of the built-in dataset (superres ``x3``)."""
    task: str
    model: str
    metric: str
    target: float
    variant: str = ""
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str | None = None

    @property
    def key(self) -> str:
        """``task/model[-variant]``: the row's name, its model directory's and ``only``'s."""
        return f"{self.task}/{self.model}" + (f"-{self.variant}" if self.variant else "")


def _entries() -> list[Entry]:
    rows = [Entry("classify", arch, "top1", 0.95) for arch in ("resnet", "inception", "densenet")]
    rows += [Entry("localize", "resnet", "mean_iou", 0.75, "smooth_l1"),
             Entry("localize", "resnet", "mean_iou", 0.75, "l2", {"model_kwargs": {"box_loss": "l2"}})]
    rows += [Entry("segment", arch, "miou", 0.70) for arch in ("fcn", "unet", "deeplab", "deconvnet")]
    rows += [Entry("pose", arch, "pck@0.2", 0.80) for arch in ("deeppose", "integral")]
    rows += [Entry("detect", arch, "map50", 0.85 if arch == "fasterrcnn" else 0.80)
             for arch in ("yolo", "yolo_raw", "fasterrcnn", "ssd", "ssd_raw")]
    rows += [Entry("instance", "maskrcnn", "mask_map50", 0.70),
             Entry("keypoints", "keypoint_rcnn", "keypoint_ap50", 0.70)]
    for scale in (2, 3):
        rows += [Entry("superres", arch, "psnr_gain", gain, f"x{scale}", dataset=f"x{scale}")
                 for arch, gain in (("vdsr", 1.0), ("fsrcnn", 0.7), ("srcnn", 0.5))]
    rows.append(Entry("style", "transform", "style_reduction", 5.0))
    return rows


#: Every row of the zoo, in the order it runs (tests check every registered architecture is here).
ZOO: tuple[Entry, ...] = tuple(_entries())


def select(only: Sequence[str] | None) -> list[Entry]:
    """The entries named in ``only`` (keys, or a task for all of its rows); all without it."""
    if not only:
        return list(ZOO)
    unknown = [name for name in only if not any(name in (e.key, e.task) for e in ZOO)]
    if unknown:
        raise InputError(f"no zoo entry {', '.join(unknown)}",
                         fix=f"name a task or one of {', '.join(e.key for e in ZOO)}")
    return [e for e in ZOO if e.key in only or e.task in only]


def run_zoo(out: str | os.PathLike, only: Sequence[str] | None = None, **options: Any) -> dict[str, Any]:
    """:func:`~.pipeline.run_pipeline` for each selected entry (``options`` as there), its row
    written to ``<out>/zoo.md`` as soon as it ends; an entry that fails gets a FAILED row and the
    others still run. Returns the paths written and ``missed``: the keys of the rows (these and
    the earlier ones kept) that failed or missed their target."""
    from .pipeline import run_pipeline

    out = Path(out)
    entries = select(only)
    rows = {row["key"]: row for row in _earlier_rows(out) if row["key"] not in {e.key for e in entries}}
    for entry in entries:
        log.info("=== zoo: %s ===", entry.key)
        start = time.perf_counter()
        try:
            result = run_pipeline(entry.task, out, model=entry.model, overrides=entry.overrides,
                                  dataset=entry.dataset, name=entry.key.replace("/", "-"), **options)
            row = zoo_row(entry, ModelDir.open(result["model_dir"]), out)
        except VisionRTError as err:
            log.error("%s failed: %s", entry.key, err)
            row = {"key": entry.key, "task": entry.task, "metric": entry.metric, "target": entry.target,
                   "error": str(err)}
        row["pipeline_seconds"] = round(time.perf_counter() - start, 1)
        rows[row["key"]] = row
        paths = write_zoo(out, [rows[e.key] for e in ZOO if e.key in rows])
    return {**{k: str(v) for k, v in paths.items()},
            "missed": [key for key, row in rows.items() if not row.get("passed")]}


def _earlier_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "zoo.json"
    try:
        return json.loads(path.read_text())["rows"] if path.exists() else []
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"cannot read the earlier zoo rows in {path}: {err}", fix="move the file away") from None


def zoo_row(entry: Entry, model_dir: ModelDir, out: Path) -> dict[str, Any]:
    """The row of a finished pipeline: metric vs target and the stages' verdicts and figures
    (``parity`` per backend and file; the table shows the fp32 files', the precisions judge the rest)."""
    m = model_dir.manifest
    test = m.metrics["pytorch"]["test"]
    if entry.metric not in test:
        raise VisionRTError(f"{entry.key}: the test metrics hold no '{entry.metric}' ({', '.join(test)})")
    train = next((h for h in reversed(m.history) if h.get("stage") == "train"), {})
    latency = {key: ms for key, ms in (m.benchmarks or {}).get("median_ms", {}).items()
               if key.split("/")[-3:] == ["onnxruntime-cpu", "model", "b1"]}
    return {"key": entry.key, "task": entry.task, "metric": entry.metric, "target": entry.target,
            "value": test[entry.metric], "passed": test[entry.metric] >= entry.target,
            "parity": {backend: report["passed"] for backend, report in m.parity.items()},
            "precisions": {p: m.precisions[p].get("passed") for p in ("fp16", "int8") if p in (m.precisions or {})},
            "engines": sorted(m.engines), "onnxruntime_b1_ms": next(iter(latency.values()), None),
            "train_seconds": train.get("seconds"), "epochs": len(train.get("epochs", [])),
            "report": (model_dir.root / "report.md").relative_to(out).as_posix()}


def write_zoo(out: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """``zoo.md`` (the table) and ``zoo.json`` (the rows) in ``out``."""
    passed = sum(bool(row.get("passed")) for row in rows)
    lines = ["# visionrt zoo: every architecture at its target", "",
             f"{passed} of {len(rows)} rows PASS (quick configuration, built-in data, test split).", "",
             "| task | architecture | metric | value | target | verdict | parity | fp16 / int8 | engines | "
             "onnxruntime b1 (ms) | training (s) | pipeline (s) |", "|---|---|---|---:|---:|---|---|---|---|---:|---:|---:|"]
    for row in rows:
        head = f"| {row['task']} | {row['key'].split('/', 1)[1]} | {row['metric']} |"
        if "error" in row:
            lines.append(f"{head} | ≥ {row['target']:g} | FAILED: {row['error']} | | | | | | {row['pipeline_seconds']} |")
            continue
        verdicts = " / ".join({True: "PASS", False: "FAIL", None: "-"}[row["precisions"].get(p)]
                              for p in ("fp16", "int8"))
        ms = row["onnxruntime_b1_ms"]
        lines.append(" ".join([
            head, f"{row['value']:.4g} | ≥ {row['target']:g} | {'PASS' if row['passed'] else 'FAIL'} |",
            ", ".join(f"{b} {'PASS' if ok else 'FAIL'}" for b, ok in row["parity"].items()
                      if not b.endswith(("-fp16", "-int8", "-tensorrt-layout"))) + " |",
            f"{verdicts} | {', '.join(row['engines']) or 'none'} | {'' if ms is None else f'{ms:.2f}'} |",
            f"{row['train_seconds']} | {row['pipeline_seconds']} |"]))
    lines += ["", "Each row's report: `<out>/<task>-<architecture>/report.md`."]
    markdown, data = out / "zoo.md", out / "zoo.json"
    atomic.write_text(markdown, "\n".join(lines) + "\n")
    atomic.write_text(data, json.dumps({"rows": rows}, indent=2) + "\n")
    return {"markdown": markdown, "json": data}
