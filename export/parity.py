"""Parity between two runners (any backends), per output and at task level.

Per output: max and mean absolute error, max relative error and the smallest ``atol`` that
would pass at the given ``rtol`` (``|cand - ref| <= atol + rtol * |ref|`` element-wise, as
numpy.allclose). At task level: the task's metric computed from each runner's outputs,
which must agree within ``metric_tolerance``: one absolute tolerance for every metric, or per
metric an ``(atol, rtol)`` pair (``|cand - ref| <= atol + rtol * |ref|``; unlisted metrics: exact).

Outputs whose sizes differ from sample to sample (models for images of any size, run one
image at a time) are compared as the concatenation of all their values.

Where outputs may legitimately differ element by element (detections after NMS: a score
difference of 1e-7 can reorder two detections), a task compares them after post-processing
(``postprocessed``, e.g. detections matched by IoU); that verdict replaces the per-output one,
whose figures are still reported.

Reduced precisions (``judge_outputs=False``) are judged on the task metric alone, against the task
spec's ``precision_tolerance``: int8 moves scores by more than fp32 parity allows (an SSD's matched
detection scores by ~0.1 where parity allows 0.01) while its mAP stays within tolerance. Their
per-output and post-processed figures are recorded as figures; the post-processed record then has
no ``passed`` of its own, nor an unjudged metric a ``tolerance``, so the report holds one verdict.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..runtime.backends.base import Runner
from ..runtime.tasks.base import MetricTolerance

TaskMetric = Callable[[dict[str, np.ndarray]], dict[str, float]]
#: ``(reference outputs, candidate outputs) -> {..., "passed": bool}``
PostprocessedParity = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict]


@dataclasses.dataclass
class OutputParity:
    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    max_rel: float
    min_atol: float
    passed: bool


@dataclasses.dataclass
class ParityReport:
    reference: str
    candidate: str
    atol: float
    rtol: float
    samples: int
    outputs: list[OutputParity]
    task: dict[str, dict[str, float]]
    passed: bool
    postprocessed: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        worst = max(self.outputs, key=lambda o: o.max_abs)
        metrics = ", ".join(f"{k} {v['reference']:.4f} vs {v['candidate']:.4f}" for k, v in self.task.items())
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict} {self.candidate} vs {self.reference} on {self.samples} samples: "
                f"max |diff| {worst.max_abs:.2e} ({worst.name}), min atol {worst.min_atol:.2e} at rtol "
                f"{self.rtol:g}" + (f"; {metrics}" if metrics else "")
                + (f"; after post-processing {_brief(self.postprocessed)}" if self.postprocessed else ""))


def compare_arrays(name: str, reference: np.ndarray | Sequence[np.ndarray],
                   candidate: np.ndarray | Sequence[np.ndarray], atol: float, rtol: float) -> OutputParity:
    """Compare one output; a list of per-sample arrays (sizes differ) is compared value by value
    and reported with shape ``[samples, -1]``."""
    if not isinstance(reference, np.ndarray) or not isinstance(candidate, np.ndarray):
        if [r.shape for r in reference] != [c.shape for c in candidate]:
            return OutputParity(name, [len(candidate), -1], np.inf, np.inf, np.inf, np.inf, False)
        flat = compare_arrays(name, np.concatenate([r.ravel() for r in reference]),
                              np.concatenate([c.ravel() for c in candidate]), atol, rtol)
        return dataclasses.replace(flat, shape=[len(reference), -1])
    if reference.shape != candidate.shape:
        return OutputParity(name, list(candidate.shape), np.inf, np.inf, np.inf, np.inf, False)
    ref = reference.astype(np.float64)
    diff = np.abs(candidate.astype(np.float64) - ref)
    if diff.size == 0:
        return OutputParity(name, list(ref.shape), 0.0, 0.0, 0.0, 0.0, True)
    min_atol = float(np.max(np.maximum(diff - rtol * np.abs(ref), 0.0)))
    return OutputParity(
        name=name, shape=list(ref.shape), max_abs=float(diff.max()), mean_abs=float(diff.mean()),
        max_rel=float(np.max(diff / np.maximum(np.abs(ref), 1e-12))), min_atol=min_atol,
        passed=bool(min_atol <= atol))


def concat_outputs(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Each output's batches joined along axis 0, or a list of its samples where sizes differ."""
    joined = {}
    for name in batches[0]:
        parts = [b[name] for b in batches]
        same = len({p.shape[1:] for p in parts}) == 1
        joined[name] = np.concatenate(parts) if same else [sample for p in parts for sample in p]
    return joined


def check_parity(reference: Runner, candidate: Runner, feeds: Iterable[Mapping[str, np.ndarray]],
                 atol: float = 1e-4, rtol: float = 1e-3, task_metric: TaskMetric | None = None,
                 metric_tolerance: MetricTolerance = 0.0,
                 postprocessed: PostprocessedParity | None = None, judge_outputs: bool = True) -> ParityReport:
    """Run both runners on every feed and compare; outputs are matched by name. With
    ``postprocessed``, its ``passed`` stands for the outputs' (see the module doc). With
    ``judge_outputs=False`` (reduced precisions) the verdict is only the metrics that
    ``metric_tolerance`` (a mapping) lists; per-output and post-processed figures are reported
    (the latter without its ``passed``; metrics not judged without a ``tolerance``)."""
    ref_batches, cand_batches, samples = [], [], 0
    for feed in feeds:
        ref_batches.append(reference.infer(feed))
        cand_batches.append(candidate.infer(feed))
        samples += len(next(iter(feed.values())))
    ref, cand = concat_outputs(ref_batches), concat_outputs(cand_batches)
    outputs = [compare_arrays(name, ref[name], cand[name], atol, rtol) if name in cand
               else OutputParity(name, [], np.inf, np.inf, np.inf, np.inf, False) for name in ref]
    task: dict[str, dict[str, float]] = {}
    if task_metric is not None:
        ref_metric, cand_metric = task_metric(ref), task_metric(cand)
        task = {key: {"reference": ref_metric[key], "candidate": cand_metric[key],
                      "difference": abs(ref_metric[key] - cand_metric[key]),
                      "tolerance": _allowed(metric_tolerance, key, ref_metric[key])} for key in ref_metric}
    post = (postprocessed(ref, cand) if postprocessed is not None else None) or {}
    if judge_outputs:
        outputs_agree = post["passed"] if post else all(o.passed for o in outputs)
    else:  # the figures stay; the fp32 criterion's verdict is not this report's (see the module doc)
        outputs_agree, post = True, {k: v for k, v in post.items() if k != "passed"}
    judged = {k: t for k, t in task.items() if judge_outputs or k in metric_tolerance}
    for figures in (t for k, t in task.items() if k not in judged):  # reported, not judged: no tolerance
        del figures["tolerance"]
    passed = outputs_agree and all(t["difference"] <= t["tolerance"] for t in judged.values())
    return ParityReport(reference.name, candidate.name, atol, rtol, samples, outputs, task, passed, post)


def _brief(facts: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in facts.items())


def _allowed(tolerance: MetricTolerance, key: str, reference: float) -> float:
    if not isinstance(tolerance, Mapping):
        return float(tolerance)
    atol, rtol = tolerance.get(key, (0.0, 0.0))
    return atol + rtol * abs(reference)
