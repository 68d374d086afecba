"""Every architecture a runtime task module lists (and ``visionrt doctor`` shows) is one the
training side builds, and the plugin ops it declares are the ones its export needs."""
import pytest
import torch

from visionrt.runtime.doctor import diagnose, format_report
from visionrt.runtime.plugins.registry import plugins
from visionrt.runtime.tasks import TASKS, task_module
from visionrt.train import tasks

CLASSES = [str(digit) for digit in range(10)]
#: Keyword arguments a task cannot do without.
REQUIRED_KWARGS = {"superres": {"scale": 2}}


@pytest.mark.parametrize("task", TASKS)
def test_every_listed_architecture_builds(task):
    for arch, ops in task_module(task).MODELS.items():
        assert set(ops) <= set(plugins()), f"{task}/{arch} declares unknown plugin ops {ops}"
        model = tasks.get(task).build_model({"arch": arch, "kwargs": dict(REQUIRED_KWARGS.get(task, {}))}, CLASSES)
        assert isinstance(model, torch.nn.Module)
    with pytest.raises(ValueError, match="unknown"):
        tasks.get(task).build_model({"arch": "no-such-net", "kwargs": dict(REQUIRED_KWARGS.get(task, {}))}, CLASSES)


def test_doctor_lists_every_task_and_what_its_engines_need():
    report = diagnose()
    assert list(report["tasks"]) == list(TASKS)
    assert report["tasks"]["segment"]["deconvnet"]["plugins"] == ["MaxPool2dWithIndices", "MaxUnpool2d"]
    assert report["tasks"]["segment"]["fcn"]["engine"] == "any TensorRT"
    text = format_report(report)
    assert "maskrcnn (plugins EfficientNms, RoiAlign2d)" in text and "yolo_raw," in text


def test_training_configuration_starts_from_the_task_default():
    """``visionrt train`` and ``visionrt pipeline`` both start from the task's quick configuration."""
    segment = tasks.configure("segment", epochs=1)
    assert (segment.task, segment.model, segment.epochs) == ("segment", "fcn", 1)
    assert segment.batch_size == tasks.get("segment").default_config(True).batch_size
    other = tasks.configure("superres", model="srcnn")
    assert other.model == "srcnn" and other.model_kwargs == {}   # the default model's kwargs are not carried over
    assert tasks.configure("detect", quick=False).epochs == tasks.get("detect").default_config(False).epochs
