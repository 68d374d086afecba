"""One declarative spec per task (``runtime/tasks/<task>.py``: ``TASK``), read by every entry point:
a bad post-processing option gets the same words from the CLI, the Python API and the server, and
every option a spec declares reaches ``visionrt predict``'s flags and the server's query parsing."""
import types

import numpy as np
import pytest

from conftest import require_or_skip
from visionrt.runtime import cli
from visionrt.runtime.contracts import CONTRACTS, markdown_table
from visionrt.runtime.errors import InputError
from visionrt.runtime.manifest import InputSpec, Manifest, ModelDir
from visionrt.runtime.predictor import Pipeline, Predictor
from visionrt.runtime.server import task_endpoint
from visionrt.runtime.tasks import TASKS, prediction_options, runtime_task
from visionrt.runtime.tasks.base import ImageResult

httpx = require_or_skip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from visionrt.runtime.server.app import ServerSettings, create_app  # noqa: E402
from visionrt.runtime.server.repository import ModelRepository  # noqa: E402

#: ``(option, value as the API takes it, as text)``: bad values for the tiny classifier; the last
#: is good text for an option it does not take.
BAD = [("top_k", 0, "0"), ("top_k", -3, "-3"), ("top_k", 2.5, "2.5"), ("score_threshold", 0.5, "0.5")]


def _message(err: InputError) -> str:
    """The cause, without the fix."""
    return err.args[0]


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    with TestClient(create_app(ModelRepository.load([f"tiny={tiny_model_dir}"]), ServerSettings())) as c:
        yield c


@pytest.mark.parametrize("name, value, text", BAD)
def test_a_bad_option_gets_the_same_words_from_cli_api_and_server(name, value, text, tiny_model_dir, tiny_data,
                                                                  client, capsys):
    image = sorted((tiny_data / "images" / "test").glob("*.png"))[0]
    with Predictor(tiny_model_dir) as predictor, pytest.raises(InputError) as api:
        predictor.predict(image, **{name: value})
    words = _message(api.value)
    assert name in words

    code = cli.main(["predict", str(tiny_model_dir), str(image), f"--{name.replace('_', '-')}={text}"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err

    response = client.post(f"/v1/models/tiny/predict?{name}={text}", content=image.read_bytes())
    assert response.status_code == 400 and words in response.json()["error"]


def _pipeline(task: str, tmp_path) -> Pipeline:
    """A task's pre/post-processing over an in-memory manifest (no model file needed)."""
    manifest = Manifest(task=task, model={"arch": runtime_task(task).default_architecture.name}, classes=["a"],
                        input=InputSpec(height=32, width=32), outputs=[])
    return Pipeline(ModelDir(tmp_path, manifest))


@pytest.mark.parametrize("task", TASKS)
def test_every_option_of_a_spec_reaches_the_cli_flags_and_the_server(task, tmp_path):
    parser = cli.build_parser()
    pipeline = _pipeline(task, tmp_path)
    served = types.SimpleNamespace(predictors=[pipeline])
    for option in runtime_task(task).options.items:
        flag = f"--{option.name.replace('_', '-')}"
        args = parser.parse_args(["predict", "m", "i.png", flag, "1"])
        assert getattr(args, option.name) == option.kind(1), flag
        options, _ = task_endpoint.parse_query({option.name: "1"}, served)
        assert options == {option.name: option.kind(1)}
        with pytest.raises(InputError) as server:
            task_endpoint.parse_query({option.name: "-1"}, served)
        with pytest.raises(InputError) as api:
            pipeline.check_options({option.name: -1})
        assert _message(server.value) == _message(api.value)
        with pytest.raises(SystemExit):
            parser.parse_args(["predict", "m", "i.png", flag, "-1"])
    with pytest.raises(InputError, match=f"{task} predictions take no option nosuch"):
        task_endpoint.parse_query({"nosuch": "1"}, served)


def test_cli_flags_are_the_specs_options_and_nothing_else():
    actions = {a.dest for a in cli.build_parser()._subparsers._group_actions[0].choices["predict"]._actions}
    declared = {o.name for task in TASKS for o in runtime_task(task).options.items}
    assert set(prediction_options()) == declared <= actions


@pytest.mark.parametrize("task", TASKS)
def test_the_spec_is_complete(task):
    spec = runtime_task(task)
    assert CONTRACTS[task] is spec.contract and f"| {task} (" in markdown_table()
    assert all(isinstance(v, tuple) and len(v) == 2 for v in spec.precision_tolerance.values())
    assert spec.precision_tolerance, f"{task} declares no tolerance for fp16/int8"


def test_the_result_kind_is_the_results_type(tmp_path):
    """Tasks with ``image_result`` return :class:`ImageResult` (what ``--save-dir`` and ``output=1`` use)."""
    for task in TASKS:
        spec = runtime_task(task)
        if spec.image_result:
            pipeline = _pipeline(task, tmp_path)
            pipeline.manifest.postprocess.update(scale=2, style="s")
            (result,) = pipeline.postprocess({"image": np.zeros((1, 3, 8, 8), np.float32)}, [(4, 4)])
            assert isinstance(result, ImageResult)
