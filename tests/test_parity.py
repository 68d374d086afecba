"""The parity checker is generic over runners and fails when outputs or task metrics differ."""
from __future__ import annotations

import numpy as np
import pytest

from visionrt.export.parity import check_parity, compare_arrays
from visionrt.runtime.backends.base import Runner, TensorSpec


class ArrayRunner(Runner):
    """A runner whose output is ``fn(input)``."""

    def __init__(self, name, fn):
        super().__init__()
        self.name, self.fn = name, fn

    inputs = property(lambda self: [TensorSpec("x", ("batch", 4), "float32")])
    outputs = property(lambda self: [TensorSpec("y", ("batch", 4), "float32")])

    def _activate(self):
        pass

    def _infer(self, feed):
        return {"y": self.fn(feed["x"])}


def feeds():
    rng = np.random.default_rng(0)
    return [{"x": rng.normal(size=(8, 4)).astype(np.float32)} for _ in range(3)]


def test_min_atol_is_the_smallest_passing_tolerance():
    ref = np.array([1.0, -2.0, 10.0])
    cand = ref + np.array([0.01, 0.0, 0.02])
    out = compare_arrays("y", ref, cand, atol=0.0, rtol=0.001)
    assert out.max_abs == pytest.approx(0.02)
    assert out.min_atol == pytest.approx(0.01)  # 0.01 - 0.001*1 vs 0.02 - 0.001*10 → both 0.009/0.01
    assert not out.passed
    assert np.allclose(cand, ref, atol=out.min_atol, rtol=0.001)


def test_identical_runners_pass():
    report = check_parity(ArrayRunner("a", np.tanh), ArrayRunner("b", np.tanh), feeds())
    assert report.passed and report.samples == 24 and report.outputs[0].max_abs == 0


def test_perturbed_runner_fails_per_output_and_task():
    metric = lambda out: {"argmax0": float(np.mean(out["y"].argmax(1) == 0))}  # noqa: E731
    report = check_parity(ArrayRunner("a", lambda x: x), ArrayRunner("b", lambda x: x[:, ::-1].copy()), feeds(),
                          task_metric=metric)
    assert not report.passed
    assert report.outputs[0].max_abs > 0.1
    assert "FAIL" in report.summary()


def test_shape_mismatch_fails():
    report = check_parity(ArrayRunner("a", lambda x: x), ArrayRunner("b", lambda x: x[:, :2]), feeds())
    assert not report.passed and report.outputs[0].max_abs == np.inf
