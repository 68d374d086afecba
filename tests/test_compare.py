"""``bench --compare``: a slower point or an accuracy drop fails the gate, an unchanged run passes."""
from __future__ import annotations

import copy

import pytest

from visionrt.benchmarks.compare import compare, load, reference_workload
from visionrt.runtime.errors import ArtifactError


def _report(ms: dict[tuple[str, int], float], top1: float = 0.9, reference_ms: float = 1.0) -> dict:
    results = [{"task": "classify", "model": "resnet", "backend": "onnxruntime-cpu", "precision": precision,
                "mode": "model", "batch": batch, "median_ms": value} for (precision, batch), value in ms.items()]
    return {"format": "visionrt-bench", "results": results, "reference": {"total_ms": reference_ms},
            "accuracy": [{"task": "classify", "backend": "onnxruntime-cpu", "precision": "fp32", "top1": top1}]}


def test_unchanged_report_passes():
    old = _report({("fp32", 1): 2.0, ("fp32", 8): 9.0})
    result = compare(old, copy.deepcopy(old))
    assert not result.failed and len(result.changes) == 3


def test_slowdown_beyond_the_limit_fails():
    old, new = _report({("fp32", 1): 2.0, ("fp32", 8): 9.0}), _report({("fp32", 1): 2.4, ("fp32", 8): 9.1})
    failed = compare(old, new).failed
    assert [c.point for c in failed] == ["classify/resnet/onnxruntime-cpu/fp32/model/b1"]
    assert not compare(old, new, max_slowdown=1.25).failed


def test_normalise_forgives_a_slower_machine():
    old = _report({("fp32", 1): 2.0}, reference_ms=1.0)
    new = _report({("fp32", 1): 3.0}, reference_ms=1.5)  # everything 1.5x slower, the model too
    assert compare(old, new).failed
    assert not compare(old, new, normalise=True).failed


def test_accuracy_drop_beyond_tolerance_fails():
    old = _report({("fp32", 1): 2.0}, top1=0.90)
    assert not compare(old, _report({("fp32", 1): 2.0}, top1=0.897)).failed  # 0.3 point: within 0.5
    failed = compare(old, _report({("fp32", 1): 2.0}, top1=0.88)).failed
    assert len(failed) == 1 and "top1" in failed[0].point


def test_int8_report_compared_against_fp32_run_is_caught():
    """The saved report is the fast int8 run; the new one, fp32, is the same points made slower."""
    int8 = _report({("int8", 1): 1.0, ("int8", 8): 4.0})
    fp32_as_if_int8 = _report({("int8", 1): 2.0, ("int8", 8): 8.5})
    assert len(compare(int8, fp32_as_if_int8).failed) == 2


def test_reference_workload_is_timed():
    figures = reference_workload(repeats=3)
    assert figures["gemm_ms"] > 0 and figures["conv_ms"] > 0
    assert figures["total_ms"] == pytest.approx(figures["gemm_ms"] + figures["conv_ms"])


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text('{"format": "something"}')
    with pytest.raises(ArtifactError, match="not a visionrt benchmark"):
        load(path)
    with pytest.raises(ArtifactError, match="cannot read"):
        load(tmp_path / "missing.json")


@pytest.mark.slow
def test_bench_compare_sets_the_exit_code_through_the_cli(tiny_model_dir, tmp_path, capsys):
    """``visionrt bench --compare SAVED``: exit 0 when the gate passes, 1 (with the FAIL lines on
    stderr) when a point is slower than the saved report allows."""
    import json
    import shutil

    from test_hostile import run_main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    argv = ["bench", str(model), "--backends", "onnxruntime", "--batch-sizes", "1", "--seconds", "0.05",
            "--out", str(tmp_path / "bench")]
    code, _, err = run_main(argv, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    measured = [r for r in report["results"] if r.get("median_ms")]
    assert measured, report["results"]
    fast = copy.deepcopy(report)
    for row in fast["results"]:
        if row.get("median_ms"):
            row["median_ms"] /= 1000  # a saved run 1000x faster: today's run must fail the gate
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    (tmp_path / "same.json").write_text(json.dumps(report))

    code, _, err = run_main([*argv, "--compare", str(tmp_path / "fast.json")], capsys)
    assert code == 1, err
    assert "FAIL" in err and "onnxruntime" in err
    code, _, err = run_main([*argv, "--compare", str(tmp_path / "same.json"), "--max-slowdown", "1000"], capsys)
    assert code == 0, err
    assert "FAIL" not in err and "ok" in err
