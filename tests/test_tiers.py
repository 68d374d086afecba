"""The fast tier's own check: an unmarked test over the time limit fails ``pytest -m "not slow"``."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = '''
import time

import pytest

import conftest

conftest.FAST_TEST_LIMIT_S = 0.2
conftest.FAST_FIXTURE_LIMIT_S = 0.3


def test_sluggish():
    time.sleep(0.4)


@pytest.mark.slow
def test_marked_slow():
    time.sleep(0.4)


def test_quick():
    pass


@pytest.fixture(scope="session")
def shared():
    time.sleep(0.4)


def test_first_user_of_a_shared_fixture(shared):
    pass


def test_second_user_of_a_shared_fixture(shared):
    pass
'''


def run_pytest(directory: Path, *args: str, require_extras: bool = False) -> subprocess.CompletedProcess:
    """pytest in ``directory``, with its temporary files there too (a nested run in the shared
    temporary root would count towards pytest's keep-three cleanup of the outer run's files)."""
    env = {k: v for k, v in os.environ.items() if k != "VISIONRT_REQUIRE_EXTRAS"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--basetemp", str(directory / "basetemp"), *args],
                          cwd=directory, capture_output=True, text=True, timeout=120,
                          env={**env, **({"VISIONRT_REQUIRE_EXTRAS": "1"} if require_extras else {})})


def test_fast_tier_fails_and_names_an_unmarked_slow_test(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    (tmp_path / "test_suite.py").write_text(SUITE)

    fast = run_pytest(tmp_path, "-m", "not slow")
    assert fast.returncode == 1, fast.stdout
    offenders = fast.stdout.split("tests too slow for the fast tier", 1)[1]
    assert "test_suite.py::test_sluggish" in offenders and "mark it slow" in offenders
    assert "test_quick" not in offenders
    # a shared fixture's set-up is not charged to the test that happens to come first: it is timed on its own
    assert "shared_fixture" not in offenders
    assert "fixture shared" in offenders and "mark the tests that use it slow" in offenders

    everything = run_pytest(tmp_path)               # the full suite does not apply the limit
    assert everything.returncode == 0, everything.stdout


MISSING_EXTRA_SUITE = '''
import conftest

nosuch = conftest.require_or_skip("visionrt_no_such_extra", reason="pip install 'visionrt[nosuch]'")


def test_uses_it():
    pass
'''

MISSING_EXTRA_MARK_SUITE = '''
import conftest


@conftest.needs_extra(False, "the nosuch extra is not installed")
def test_marked():
    pass
'''


def test_a_missing_extra_skips_by_default_and_fails_under_make_test(tmp_path):
    """``make test`` sets VISIONRT_REQUIRE_EXTRAS=1: a missing extra is then a failure, not a skip."""
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    (tmp_path / "test_module.py").write_text(MISSING_EXTRA_SUITE)
    (tmp_path / "test_mark.py").write_text(MISSING_EXTRA_MARK_SUITE)
    plain = run_pytest(tmp_path, "-rs")
    assert plain.returncode == 0 and "2 skipped" in plain.stdout, plain.stdout
    assert "visionrt[nosuch]" in plain.stdout and "the nosuch extra is not installed" in plain.stdout
    required = run_pytest(tmp_path, "--continue-on-collection-errors", require_extras=True)
    output = required.stdout + required.stderr  # stderr: where the rtx extra is missing too (a usage error)
    assert required.returncode != 0 and "skipped" not in output, output
    assert output.count("required under make test") >= 2 or "TensorRT-RTX (the rtx extra)" in output, output
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    assert "VISIONRT_REQUIRE_EXTRAS=1" in makefile
