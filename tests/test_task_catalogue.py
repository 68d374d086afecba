"""The task registry and the architecture catalogue: every registered task has both halves, every
architecture the catalogue lists (and ``visionrt doctor`` shows) is one the training side builds,
with the plugin ops its export needs; the CLI's choices and the defaults come from it."""
import pytest
import torch

from visionrt.runtime.doctor import diagnose, format_report
from visionrt.runtime.errors import InputError
from visionrt.runtime.plugins.registry import plugins
from visionrt.runtime.tasks import TASKS, architectures, require_architecture, runtime_task
from visionrt.runtime.tasks.base import RuntimeTask
from visionrt.train import tasks
from visionrt.train.tasks.architectures import build_model, model_builders, register_model
from visionrt.train.tasks.base import TrainTask

CLASSES = [str(digit) for digit in range(10)]
#: Keyword arguments a task cannot do without.
REQUIRED_KWARGS = {"superres": {"scale": 2}}


@pytest.mark.parametrize("task", TASKS)
def test_every_registered_task_has_both_halves(task):
    runtime = runtime_task(task)
    assert isinstance(runtime, RuntimeTask) and runtime.name == task
    training = tasks.get(task)
    assert issubclass(training.Task, TrainTask) and training.Task.name == task
    for name in ("build_data", "default_config"):
        assert callable(getattr(training, name)), f"train/tasks/{task}.py lacks {name}"
    assert model_builders(task), f"train/tasks/{task}.py registers no architecture"


@pytest.mark.parametrize("task", TASKS)
def test_every_listed_architecture_builds(task):
    for arch, entry in architectures(task).items():
        assert set(entry.plugin_ops) <= set(plugins()), f"{task}/{arch} declares unknown plugin ops {entry.plugin_ops}"
        model = build_model(task, {"arch": arch, "kwargs": dict(REQUIRED_KWARGS.get(task, {}))}, CLASSES)
        assert isinstance(model, torch.nn.Module)
    with pytest.raises(ValueError, match="unknown"):
        build_model(task, {"arch": "no-such-net", "kwargs": dict(REQUIRED_KWARGS.get(task, {}))}, CLASSES)


@pytest.mark.parametrize("task", TASKS)
def test_one_default_architecture_and_it_is_what_training_starts_from(task):
    defaults = [a.name for a in runtime_task(task).architectures if a.default]
    assert len(defaults) == 1
    assert tasks.get(task).default_config(True).model == defaults[0] == next(iter(architectures(task)))


@pytest.mark.parametrize("task", TASKS)
def test_the_training_sides_registry_holds_exactly_the_catalogues_architectures(task):
    """Every architecture the runtime catalogue lists has one registered builder, and no builder more."""
    assert set(model_builders(task)) == set(architectures(task))


def test_registering_an_architecture_the_catalogue_lacks_or_twice_is_refused():
    def builder(kwargs, classes, postprocess):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="not in the runtime catalogue"):
        register_model("classify", "vgg")(builder)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("classify", next(iter(model_builders("classify"))))(builder)


def test_an_unknown_model_is_one_error_naming_the_choices():
    with pytest.raises(InputError, match=r"unknown segment model 'nosuch' \(choose from fcn, unet, deeplab, deconvnet\)"):
        tasks.configure("segment", model="nosuch")
    with pytest.raises(InputError, match="choose from yolo, yolo_raw, fasterrcnn"):
        require_architecture("detect", "maskrcnn")


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
