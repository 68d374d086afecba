"""Latency and throughput harness, written once against the runner interface.

Measured like trtexec: warm-up runs first, then timed runs until both a minimum count and a
minimum duration are reached (capped by a maximum duration), each run timed on its own
with ``time.perf_counter``; the median is the headline, p90/p99 show the tail. Two modes:

- ``model``: ``runner.infer(feed)`` on a ready-made batch (no decode, no pre/post-processing);
- ``end-to-end``: a predictor call that decodes, preprocesses, infers and post-processes.

Throughput is ``batch / median latency``. The harness never imports torch: a PyTorch
reference is just another :class:`~visionrt.runtime.backends.base.Runner` given to it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from visionrt.runtime.backends.base import Runner

MODES = ("model", "end-to-end")


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """How long to warm up and measure each point (a backend at one batch size).

    Warm-up runs until ``warmup`` runs *and* ``warmup_s`` seconds are done; measurement until
    ``iterations`` runs *and* ``min_seconds`` are done. Each phase stops at ``max_seconds``.
    ``threads`` is the intra-op thread count the caller gave every runner; it is recorded
    here for the report, not applied (each runner owns its thread setting).
    """

    warmup: int = 10
    warmup_s: float = 0.2
    iterations: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    threads: int | None = None
    keep_samples: bool = False


@dataclasses.dataclass(frozen=True)
class Timing:
    """Statistics of ``n`` timed runs, in milliseconds; percentiles interpolate linearly."""

    n: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    samples_ms: tuple[float, ...] | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_samples(cls, samples_ms: Iterable[float], keep_samples: bool = False) -> "Timing":
        values = np.asarray(list(samples_ms), dtype=np.float64)
        if values.size == 0:
            raise ValueError("no timed runs to summarise")
        median, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(n=int(values.size), mean_ms=float(values.mean()), median_ms=float(median),
                   p90_ms=float(p90), p99_ms=float(p99), min_ms=float(values.min()),
                   max_ms=float(values.max()),
                   samples_ms=tuple(values.tolist()) if keep_samples else None)


def run_timed(fn: Callable[[], Any], min_runs: int, min_seconds: float, max_seconds: float) -> list[float]:
    """Call ``fn`` until ``min_runs`` runs and ``min_seconds`` have passed, or ``max_seconds`` have.

    Returns the wall time of every run in milliseconds. Runs at least once.
    """
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        before = time.perf_counter()
        fn()
        after = time.perf_counter()
        samples.append((after - before) * 1e3)
        elapsed = after - start
        if elapsed >= max_seconds or (len(samples) >= min_runs and elapsed >= min_seconds):
            return samples


def measure(fn: Callable[[], Any], settings: BenchSettings = BenchSettings()) -> Timing:
    """Warm ``fn`` up, then time it as ``settings`` say."""
    run_timed(fn, settings.warmup, settings.warmup_s, settings.max_seconds)
    samples = run_timed(fn, settings.iterations, settings.min_seconds, settings.max_seconds)
    return Timing.from_samples(samples, settings.keep_samples)


@dataclasses.dataclass(frozen=True)
class Result:
    """One point: a model on a backend and precision at one batch size, in one mode.

    ``timing`` is ``None`` for a point that was skipped; ``notes`` then says why.
    """

    task: str
    model: str
    backend: str
    precision: str
    batch: int
    mode: str
    timing: Timing | None
    notes: str = ""

    @property
    def images_per_s(self) -> float | None:
        """Images per second at the median latency."""
        return None if self.timing is None else self.batch / (self.timing.median_ms / 1e3)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict for JSON: identity, Timing fields (``None`` when skipped), images/s, notes."""
        timing = {f.name: None for f in dataclasses.fields(Timing) if f.name != "samples_ms"}
        if self.timing is not None:
            timing = {k: v for k, v in dataclasses.asdict(self.timing).items()
                      if k != "samples_ms" or v is not None}
        return {"task": self.task, "model": self.model, "backend": self.backend,
                "precision": self.precision, "batch": self.batch, "mode": self.mode,
                **timing, "images_per_s": self.images_per_s, "notes": self.notes}


def fixed_batch(runner: Runner) -> int | None:
    """The batch size a runner is fixed to (axis 0 of its first input), or ``None`` if dynamic."""
    first = runner.inputs[0].shape
    size = first[0] if first else None
    return size if isinstance(size, int) and size > 0 else None


def bench_model(runner: Runner, *, make_feed: Callable[[int], Mapping[str, np.ndarray]],
                task: str, model: str, precision: str = "fp32",
                batch_sizes: Iterable[int] = (1, 8, 32),
                settings: BenchSettings = BenchSettings()) -> list[Result]:
    """Model-only latency of ``runner`` at each batch size; ``make_feed(batch)`` builds the inputs.

    A batch size the runner cannot take (its batch axis is fixed to another size) gives a
    skipped :class:`Result` with a note instead of an error. The runner is activated and
    left active.
    """
    runner.activate()
    fixed = fixed_batch(runner)
    results = []
    for batch in batch_sizes:
        point = dict(task=task, model=model, backend=runner.name, precision=precision,
                     batch=batch, mode="model")
        if fixed is not None and batch != fixed:
            results.append(Result(**point, timing=None,
                                  notes=f"skipped: {runner.name} has a fixed batch size of {fixed}"))
            continue
        feed = make_feed(batch)
        results.append(_timed_result(point, lambda: runner.infer(feed), settings))
    return results


def bench_end_to_end(predict: Callable[[list], Any], *, inputs_for_batch: Callable[[int], list],
                     backend: str, task: str, model: str, precision: str = "fp32",
                     batch_sizes: Iterable[int] = (1, 8, 32),
                     settings: BenchSettings = BenchSettings()) -> list[Result]:
    """End-to-end latency of ``predict(inputs)`` (decode, preprocess, infer, post-process).

    ``inputs_for_batch(batch)`` gives the list handed to ``predict``, typically image paths.
    """
    results = []
    for batch in batch_sizes:
        point = dict(task=task, model=model, backend=backend, precision=precision,
                     batch=batch, mode="end-to-end")
        inputs = inputs_for_batch(batch)
        results.append(_timed_result(point, lambda: predict(inputs), settings))
    return results


def _timed_result(point: dict[str, Any], fn: Callable[[], Any], settings: BenchSettings) -> Result:
    timing = measure(fn, settings)
    capped = timing.n < settings.iterations
    notes = f"stopped at max_seconds={settings.max_seconds:g} after {timing.n} runs" if capped else ""
    return Result(**point, timing=timing, notes=notes)
