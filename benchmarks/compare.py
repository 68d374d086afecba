"""Benchmarks as a CI gate: a new ``bench.json`` against a saved one, point by point.

A point (task, model, backend, precision, mode, batch) fails when its median latency grew by
more than ``max_slowdown`` (1.15: 15 % slower), and an accuracy figure fails when it dropped
by more than its tolerance (the reduced-precision tolerances of ``export/precision.py``;
metrics it does not list: any drop). CI machines differ, so each report also times a fixed
reference workload (:func:`reference_workload`, a 256² GEMM in NumPy and a small conv in
onnxruntime, ~0.2 s) in the same run; ``normalise`` compares latency / that reference.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..runtime.errors import ArtifactError

#: Metrics where lower is better (a rise is the drop in accuracy).
LOWER_IS_BETTER = ("style_loss", "content_loss", "content_style_loss")
_POINT = ("task", "model", "backend", "precision", "mode", "batch")
_ACCURACY = ("task", "model", "backend", "precision")


@dataclasses.dataclass(frozen=True)
class Change:
    """One compared figure: ``ratio`` is new / old latency (normalised if asked), or for accuracy
    ``change`` is new - old; ``failed`` says whether it breaks the gate."""

    point: str
    old: float
    new: float
    ratio: float | None
    failed: bool
    why: str = ""


@dataclasses.dataclass
class Comparison:
    changes: list[Change]
    normalised: bool
    missing: list[str]

    @property
    def failed(self) -> list[Change]:
        return [c for c in self.changes if c.failed]

    def lines(self) -> list[str]:
        unit = "latency / reference" if self.normalised else "median ms"
        out = [f"{'FAIL' if c.failed else 'ok  '} {c.point}: {c.old:.4g} -> {c.new:.4g}"
               + (f" ({unit}, x{c.ratio:.3f})" if c.ratio is not None else "") + (f" {c.why}" if c.why else "")
               for c in self.changes]
        out += [f"gone {point}: in the saved report, not in this one" for point in self.missing]
        return out


def reference_workload(repeats: int = 20) -> dict[str, float]:
    """Median ms of a fixed GEMM (NumPy, 256×256 float32) and a fixed conv (onnxruntime,
    ``[1, 16, 64, 64]`` by 16 3×3 filters), each over ``repeats`` runs, and their sum."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 256, 256), dtype=np.float32)
    gemm = _median_ms(lambda: a @ b, repeats)
    session, feed = _conv_session(rng)
    conv = _median_ms(lambda: session.run(None, feed), repeats)
    return {"gemm_ms": gemm, "conv_ms": conv, "total_ms": gemm + conv}


def _median_ms(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.median(samples))


def _conv_session(rng: np.random.Generator):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "reference",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 64, 64])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, {"x": rng.standard_normal((1, 16, 64, 64), dtype=np.float32)}


def load(path: str | Path) -> dict[str, Any]:
    """A ``bench.json``; :class:`ArtifactError` when it is missing or not one."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ArtifactError(f"cannot read the saved benchmark {path}: {err}",
                            fix="pass the bench.json a previous `visionrt bench` wrote") from err
    if document.get("format") != "visionrt-bench":
        raise ArtifactError(f"{path} is not a visionrt benchmark report", fix="pass a bench.json")
    return document


def compare(old: Mapping[str, Any], new: Mapping[str, Any], max_slowdown: float = 1.15, normalise: bool = False,
            tolerances: Mapping[str, Mapping[str, tuple[float, float]]] | None = None) -> Comparison:
    """Every point and accuracy figure of ``new`` against ``old`` (two bench.json documents).
    ``tolerances``: ``{task: {metric: (atol, rtol)}}`` an accuracy figure may drop by."""
    if tolerances is None:
        from ..runtime.tasks import TASKS, runtime_task

        tolerances = {task: runtime_task(task).precision_tolerance for task in TASKS}
    scale_old = scale_new = 1.0
    if normalise:
        scale_old, scale_new = (_reference_ms(doc) for doc in (old, new))
    old_points = _timed(old["results"])
    changes, missing = [], []
    for key, row in _timed(new["results"]).items():
        before = old_points.pop(key, None)
        if before is None:
            continue
        a, b = before["median_ms"] / scale_old, row["median_ms"] / scale_new
        ratio = b / a
        changes.append(Change(_name(key), a, b, ratio, ratio > max_slowdown,
                              f"slower than x{max_slowdown:g}" if ratio > max_slowdown else ""))
    missing += [_name(key) for key in old_points]
    old_accuracy = _accuracy(old.get("accuracy", []))
    for (identity, metric), value in _accuracy(new.get("accuracy", [])).items():
        if (identity, metric) not in old_accuracy:
            continue
        before = old_accuracy[(identity, metric)]
        atol, rtol = (tolerances.get(identity[0]) or {}).get(metric, (0.0, 0.0))
        drop = (value - before) if metric in LOWER_IS_BETTER else (before - value)
        allowed = atol + rtol * abs(before)
        changes.append(Change(_name(identity) + f" {metric}", before, value, None, drop > allowed + 1e-12,
                              f"dropped by {drop:.4g} > {allowed:.4g}" if drop > allowed + 1e-12 else ""))
    return Comparison(changes, normalise, missing)


def _reference_ms(document: Mapping[str, Any]) -> float:
    reference = (document.get("reference") or {}).get("total_ms")
    if not reference:
        raise ArtifactError("a report has no reference workload timing, so --normalise cannot apply",
                            fix="re-run the saved benchmark with this visionrt, or compare without --normalise")
    return float(reference)


def _timed(results: Iterable[Mapping[str, Any]]) -> dict[tuple, Mapping[str, Any]]:
    return {tuple(r[k] for k in _POINT): r for r in results if r.get("median_ms") is not None}


def _accuracy(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, float]:
    return {(tuple(row.get(k) for k in _ACCURACY), metric): float(value) for row in rows
            for metric, value in row.items() if metric not in _ACCURACY and isinstance(value, (int, float))}


def _name(key: tuple) -> str:
    parts = [str(p) for p in key if p not in (None, "")]
    if len(key) == len(_POINT):
        parts[-1] = f"b{key[-1]}"
    return "/".join(parts)
