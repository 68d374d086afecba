"""The fast tier's own check: an unmarked test over the time limit fails ``pytest -m "not slow"``."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SUITE = '''
import time

import pytest

import conftest

conftest.FAST_TEST_LIMIT_S = 0.2


def test_sluggish():
    time.sleep(0.4)


@pytest.mark.slow
def test_marked_slow():
    time.sleep(0.4)


def test_quick():
    pass
'''


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in ``directory``, with its temporary files there too (a nested run in the shared
    temporary root would count towards pytest's keep-three cleanup of the outer run's files)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--basetemp", str(directory / "basetemp"), *args],
                          cwd=directory, capture_output=True, text=True, timeout=120)


def test_fast_tier_fails_and_names_an_unmarked_slow_test(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    (tmp_path / "test_suite.py").write_text(SUITE)

    fast = run_pytest(tmp_path, "-m", "not slow")
    assert fast.returncode == 1, fast.stdout
    offenders = fast.stdout.split("tests too slow for the fast tier", 1)[1]
    assert "test_suite.py::test_sluggish" in offenders and "mark it slow" in offenders
    assert "test_quick" not in offenders

    everything = run_pytest(tmp_path)               # the full suite does not apply the limit
    assert everything.returncode == 0, everything.stdout
