"""Shared fixtures: a tiny dataset and model (seconds), and one real quick pipeline run (minutes).

Tests that need a GPU or full TensorRT are marked ``gpu`` / ``trt`` and skipped with the
reason when those are absent. Tests that train or build are marked ``slow``; the fast tier
(``pytest -m "not slow"``, ``make test-fast``) fails when an unmarked test takes longer than
:data:`FAST_TEST_LIMIT_S` (set-up of its function fixtures included), or a shared fixture's
set-up longer than :data:`FAST_FIXTURE_LIMIT_S`, naming it. Under ``VISIONRT_REQUIRE_EXTRAS=1``
(``make test``, CI) a missing extra fails instead of skipping (:func:`require_or_skip`).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: TensorRT-RTX (the rtx extra) is installed: engines can be built here, on a CPU.
HAS_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None or importlib.util.find_spec("tensorrt_rtx") is not None


#: Set by the Makefile's test targets (so by CI): the extras ``make setup`` installs are required,
#: and a test that would skip for want of one fails instead. Only "no GPU" and "no full TensorRT"
#: remain reasons to skip.
REQUIRE_EXTRAS = os.environ.get("VISIONRT_REQUIRE_EXTRAS") == "1"


def require_or_skip(module: str, reason: str = "") -> Any:
    """``pytest.importorskip(module)``, except under ``VISIONRT_REQUIRE_EXTRAS=1``: a module that is
    missing or fails to import fails the test (at module level: the file) with the reason."""
    if not REQUIRE_EXTRAS:
        return pytest.importorskip(module, reason=reason or None)
    try:
        return importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - missing, or installed but broken: both fail here
        pytest.fail(f"{module} is required under make test (VISIONRT_REQUIRE_EXTRAS=1) and cannot be imported: "
                    f"{type(err).__name__}: {err}" + (f" ({reason})" if reason else ""), pytrace=False)


def skip_for_missing_extra(reason: str) -> None:
    """``pytest.skip(reason)`` for something ``make test`` installs; under ``VISIONRT_REQUIRE_EXTRAS=1``
    a failure instead."""
    if REQUIRE_EXTRAS:
        pytest.fail(f"required under make test (VISIONRT_REQUIRE_EXTRAS=1): {reason}", pytrace=False)
    pytest.skip(reason)


def needs_extra(installed: bool, reason: str) -> pytest.MarkDecorator:
    """``skipif(not installed)`` for a test of an extra; under ``VISIONRT_REQUIRE_EXTRAS=1`` a missing
    extra fails the test instead (the ``missing_extra`` mark, failed in set-up)."""
    if installed or not REQUIRE_EXTRAS:
        return pytest.mark.skipif(not installed, reason=reason)
    return pytest.mark.missing_extra(reason)


def pytest_configure(config):
    config.addinivalue_line("markers", "missing_extra(reason): an extra make test requires is missing (fails)")
    config.pluginmanager.register(_SharedFixtureClock(), "visionrt-shared-fixture-clock")
    if REQUIRE_EXTRAS and not HAS_RTX:  # tests branch on HAS_RTX (`if HAS_RTX:`): it must hold under make test
        raise pytest.UsageError("TensorRT-RTX (the rtx extra) is required under make test (VISIONRT_REQUIRE_EXTRAS=1): "
                                "pip install -e '.[rtx]'")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _running[0] = item.nodeid
    for mark in item.iter_markers("missing_extra"):
        pytest.fail(f"required under make test (VISIONRT_REQUIRE_EXTRAS=1): {mark.args[0]}", pytrace=False)


def has_gpu() -> tuple[bool, str]:
    from visionrt.runtime.tensorrt_env import find_gpus

    gpus, reason = find_gpus()
    return bool(gpus), reason or ""


def has_full_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


#: Longest an unmarked test may take (seconds): beyond it, it must be marked ``slow``. The set-up of
#: shared (module or session) fixtures is not charged to whichever test happens to come first: it
#: is timed on its own against :data:`FAST_FIXTURE_LIMIT_S`, so the verdict does not depend on order.
FAST_TEST_LIMIT_S = 10.0
#: Longest the set-up of one shared fixture may take in the fast tier (seconds): a training of a
#: few seconds fits; an engine build or a pipeline run belongs to tests marked ``slow``.
FAST_FIXTURE_LIMIT_S = 60.0
_unmarked_seconds: dict[str, float] = {}
_shared_fixture_seconds: dict[str, float] = {}
_charged_to: dict[str, float] = {}  # test -> seconds of shared fixture set-up inside its set-up
_running: list[str] = [""]  # the test being set up


class _SharedFixtureClock:
    """Times the set-up of every module- or session-scoped fixture. A plugin registered at start
    (:func:`pytest_configure`), not a conftest hook: pytest calls a session fixture's set-up hook
    only on plugins that apply to the root directory, which this conftest, in ``tests/``, is not."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        start = time.perf_counter()
        yield
        if fixturedef.scope != "function":
            seconds = time.perf_counter() - start
            name = fixturedef.argname
            _shared_fixture_seconds[name] = _shared_fixture_seconds.get(name, 0.0) + seconds
            _charged_to[_running[0]] = _charged_to.get(_running[0], 0.0) + seconds


def pytest_runtest_logreport(report):
    if "slow" not in report.keywords:
        shared = _charged_to.pop(report.nodeid, 0.0) if report.when == "setup" else 0.0
        _unmarked_seconds[report.nodeid] = _unmarked_seconds.get(report.nodeid, 0.0) + report.duration - shared


def _too_slow(config) -> dict[str, float]:
    """Unmarked tests (``nodeid``) and shared fixtures (``fixture NAME``) over their limits, when
    running the fast tier (a ``-m`` expression excluding slow)."""
    if "not slow" not in (config.option.markexpr or ""):
        return {}
    return {**{node: s for node, s in _unmarked_seconds.items() if s > FAST_TEST_LIMIT_S},
            **{f"fixture {name}": s for name, s in _shared_fixture_seconds.items() if s > FAST_FIXTURE_LIMIT_S}}


def pytest_sessionfinish(session, exitstatus):
    if _too_slow(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    offenders = _too_slow(config)
    if offenders:
        terminalreporter.section("tests too slow for the fast tier", red=True)
        for node, seconds in sorted(offenders.items(), key=lambda kv: -kv[1]):
            advice = (f"over {FAST_FIXTURE_LIMIT_S:g}s: mark the tests that use it slow" if node.startswith("fixture ")
                      else f"over {FAST_TEST_LIMIT_S:g}s: mark it slow")
            terminalreporter.line(f"{seconds:6.1f}s  {node}  ({advice})")


def pytest_collection_modifyitems(config, items):
    gpu, reason = has_gpu()
    skip_gpu = pytest.mark.skip(reason=f"needs an NVIDIA GPU: {reason}")
    skip_trt = pytest.mark.skip(reason="needs full TensorRT (pip install 'visionrt[trt]' with NVIDIA's index)")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)
        if "trt" in item.keywords and not has_full_tensorrt():
            item.add_marker(skip_trt)


def build_rtx_engine(model_dir) -> dict:
    """Build the model directory's TensorRT-RTX engine (on this CPU); check that the manifest
    records it and return its build facts."""
    from visionrt.export.build import build
    from visionrt.runtime.manifest import ModelDir

    result = build(model_dir, flavour="tensorrt_rtx")
    assert result.path.stat().st_size > 10_000
    assert result.key in ModelDir.open(result.path.parent).manifest.engines
    return result.facts


#: Fewer epochs than the quick configuration where the tests' targets hold with a wide margin
#: (classify top-1 0.98 for 0.95, localize mean IoU 0.88 for 0.75, keypoint AP50 0.90 for 0.70
#: after the full quick run, whose best epoch was the 8th of 12), to keep the suite inside its time budget.
TEST_EPOCHS = {"classify": 8, "localize": 5, "keypoints": 8}


def quick_pipeline(task: str, out: Path) -> dict:
    """``visionrt pipeline TASK --out OUT --json`` (quick config, :data:`TEST_EPOCHS`, short
    benchmarks) as a user runs it: ``out``, the printed ``summary``, the ``log`` (stderr) and the
    ``model_dir`` path. Batch 32 is benchmarked only where a report test checks it (classify,
    segment), to save suite time."""
    batches = "1,8,32" if task in ("classify", "segment") else "1,8"
    epochs = ["--epochs", str(TEST_EPOCHS[task])] if task in TEST_EPOCHS else []
    result = run_cli("pipeline", task, "--out", str(out), "--json", "--bench-seconds", "0.1",
                     "--bench-batch-sizes", batches, *epochs)
    summary = json.loads(result.stdout)
    return {"out": out, "summary": summary, "log": result.stderr, "model_dir": Path(summary["model_dir"])}


def fp32_parity(parity: dict) -> dict:
    """The parity reports of the fp32 files (the reduced precisions are judged on their task
    metric against a tolerance instead: ``test_precision_tasks.py``)."""
    return {name: report for name, report in parity.items() if not name.endswith(("-fp16", "-int8"))}


def detection_pipeline_manifest(run: dict, task: str, arch: str, extra_outputs: Sequence[str] = ()):
    """The manifest of a detection-family quick pipeline (``quick_run`` of ``task``), checked to be
    ``task``/``arch`` with the detection outputs followed by ``extra_outputs``."""
    from visionrt.runtime.manifest import ModelDir
    from visionrt.runtime.tasks.detect import DETECTION_OUTPUTS

    m = ModelDir.open(run["model_dir"]).manifest
    assert m.task == task and m.model["arch"] == arch, (m.task, m.model)
    assert [o.name for o in m.outputs] == [*DETECTION_OUTPUTS, *extra_outputs]
    return m


def assert_backends_match_pytorch(manifest, keys: Sequence[str], backends: Sequence[str] | None = None) -> None:
    """Each of ``backends`` (default: every backend measured on the test split, onnxruntime among
    them) within the detection parity tolerance of PyTorch on each metric of ``keys``."""
    from visionrt.runtime.tasks.detect import PARITY_TOLERANCE

    reference = manifest.metrics["pytorch"]["test"]
    measured = [backend for backend, values in manifest.metrics.items()
                if isinstance(values, dict) and "test" in values and backend != "pytorch"]
    assert "onnxruntime-cpu" in measured, f"no onnxruntime metrics to compare: {sorted(manifest.metrics)}"
    for backend in measured if backends is None else backends:
        for key in keys:
            assert abs(manifest.metrics[backend]["test"][key] - reference[key]) <= PARITY_TOLERANCE, (backend, key)


def run_cli(*args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run ``visionrt ARGS`` in a fresh interpreter, as a user would."""
    result = subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", *args], capture_output=True,
                            text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"visionrt {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from visionrt.train.data import build_dataset

    return build_dataset(tmp_path_factory.mktemp("data") / "tiny", splits={"train": 256, "val": 64, "test": 64})


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_data, tmp_path_factory) -> Path:
    """One epoch of a small ResNet, exported to ONNX (accuracy irrelevant)."""
    from visionrt.export.stage import export_and_verify
    from visionrt.train.config import TrainConfig
    from visionrt.train.loop import fit

    out = tmp_path_factory.mktemp("models") / "tiny"
    model_dir = fit(TrainConfig(epochs=1, model_kwargs={"widths": [8, 16, 16], "blocks": 1}), tiny_data, out)
    export_and_verify(model_dir, tiny_data)
    return out


@pytest.fixture(scope="module")
def model(tiny_model_dir, tmp_path_factory) -> Path:
    """A test module's own copy of the tiny model directory (the hostile sweeps: their cases must
    leave it byte-identical, and copy it further to break it). Torch is loaded by then (the tiny
    model's training), so no timed refusal pays for that import."""
    target = tmp_path_factory.mktemp("model") / "model"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """``quick_run(task)``: :func:`quick_pipeline` of ``task``, run once per test session whichever
    test files ask for it (the trained model, its ONNX, engine and reports are shared)."""
    runs: dict[str, dict] = {}

    def get(task: str) -> dict:
        if task not in runs:
            runs[task] = quick_pipeline(task, tmp_path_factory.mktemp(f"{task}-pipeline"))
        return runs[task]
    return get


@pytest.fixture(scope="session")
def pipeline_run(quick_run) -> dict:
    """The quick classification pipeline, run once through the CLI exactly as the README says."""
    return quick_run("classify")
