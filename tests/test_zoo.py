"""The zoo (``visionrt zoo``): every registered architecture has a row with a target, rows are
selected by name, and a finished pipeline becomes a judged row of ``zoo.md``. The zoo's full
run trains every architecture (hours) and is a make target, not a test."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from visionrt.benchmarks.zoo import ZOO, Entry, select, write_zoo, zoo_row
from visionrt.runtime.errors import InputError
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.tasks import TASKS, architectures, runtime_task


def test_every_architecture_of_every_task_has_a_zoo_row_judged_on_a_metric_of_its_task():
    covered = {(entry.task, entry.model) for entry in ZOO}
    assert covered == {(task, arch) for task in TASKS for arch in architectures(task)}
    assert len({entry.key for entry in ZOO}) == len(ZOO)
    for entry in ZOO:
        assert entry.target > 0, entry.key


def test_rows_are_chosen_by_key_or_task_and_an_unknown_name_is_refused_with_the_choices():
    assert [e.key for e in select(["detect/ssd", "style"])] == ["detect/ssd", "style/transform"]
    assert {e.dataset for e in select(["superres"])} == {"x2", "x3"}
    with pytest.raises(InputError, match="no zoo entry detect/vgg.*detect/yolo"):
        select(["detect/vgg"])


def test_an_unknown_row_name_exits_2_before_anything_runs(tmp_path):
    result = run_cli("zoo", "--out", str(tmp_path / "zoo"), "--only", "classify/vgg", check=False)
    assert result.returncode == 2 and "no zoo entry classify/vgg" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "zoo").exists()


@pytest.mark.slow
def test_a_finished_pipeline_becomes_a_judged_row(pipeline_run, tmp_path):
    model_dir = ModelDir.open(pipeline_run["model_dir"])
    out = model_dir.root.parent
    top1 = model_dir.manifest.metrics["pytorch"]["test"]["top1"]
    passing = zoo_row(Entry("classify", "resnet", "top1", 0.95), model_dir, out)
    failing = zoo_row(Entry("classify", "resnet", "top1", top1 + 0.01), model_dir, out)
    assert passing["passed"] and not failing["passed"] and passing["value"] == top1
    assert passing["parity"]["onnxruntime-cpu"] is True and passing["train_seconds"] > 0
    assert passing["onnxruntime_b1_ms"] > 0 and passing["report"].endswith("report.md")
    broken = {"key": "detect/ssd", "task": "detect", "metric": "map50", "target": 0.8, "error": "boom",
              "pipeline_seconds": 1.0}
    paths = write_zoo(tmp_path, [{**passing, "pipeline_seconds": 9.0}, broken])
    table = paths["markdown"].read_text()
    assert "1 of 2 rows PASS" in table and "| classify | resnet | top1 |" in table and "FAILED: boom" in table
    assert json.loads(paths["json"].read_text())["rows"][1]["error"] == "boom"
