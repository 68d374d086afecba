"""``visionrt export-triton``: configs checked against Triton's own schema, the python-backend model
checked in-process and, marked slow, in a real ``tritonserver`` (the one ``nvidia-pytriton`` bundles,
installed into its own venv ``.venv-triton`` because it pins numpy<2)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import require_or_skip, skip_for_missing_extra
from visionrt.export.triton import TritonOptions, export_repository
from visionrt.runtime.errors import InputError
from visionrt.runtime.images import load_image
from visionrt.runtime.manifest import ModelDir
from visionrt.runtime.predictor import Predictor
from visionrt.runtime.tasks import runtime_task

ROOT = Path(__file__).resolve().parents[1]
TRITON_VENV = Path(os.environ.get("VISIONRT_TRITON_VENV", ROOT / ".venv-triton"))
#: What the separate Triton venv holds: the bundled server, and the visionrt runtime's dependencies.
TRITON_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime>=1.17", "pillow>=10")


pb2 = require_or_skip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient[grpc] (Triton's config schema)")


def parse_config(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


def config_dict(path: Path) -> dict:
    """``config.pbtxt`` as the JSON Triton hands a python model (``args["model_config"]``)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(parse_config(path), preserving_proto_field_name=True)


@pytest.fixture(scope="module")
def images(tiny_data) -> list[bytes]:
    paths, _ = runtime_task("classify").heldout(tiny_data, 5)
    return [p.read_bytes() for p in paths]


@pytest.fixture(scope="module")
def repo(tiny_model_dir, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton") / "repo"
    export_repository({"tiny": tiny_model_dir}, repo, TritonOptions(max_batch_size=8, instances=2))
    return repo


def test_every_config_parses_with_tritons_schema(repo, tiny_model_dir):
    manifest = ModelDir.open(tiny_model_dir).manifest
    names = sorted(p.name for p in repo.iterdir())
    assert names == ["tiny", "tiny_ensemble", "tiny_onnx", "tiny_postprocess", "tiny_preprocess"]
    configs = {name: parse_config(repo / name / "config.pbtxt") for name in names}
    for name, config in configs.items():
        assert config.name == name and config.max_batch_size == 8
        assert (repo / name / "1").is_dir()
    onnx = configs["tiny_onnx"]
    assert onnx.backend == "onnxruntime" and (repo / "tiny_onnx" / "1" / "model.onnx").is_file()
    assert [(i.name, list(i.dims)) for i in onnx.input] == [(manifest.input.name, [3, manifest.input.height,
                                                                                     manifest.input.width])]
    assert [(o.name, list(o.dims)) for o in onnx.output] == [(manifest.outputs[0].name, [len(manifest.classes)])]
    assert onnx.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in onnx.instance_group] == [(pb2.ModelInstanceGroup.KIND_CPU, 2)]
    python = configs["tiny"]
    assert python.backend == "python" and python.parameters["mode"].string_value == "predict"
    assert [(t.name, t.data_type) for t in (*python.input, *python.output)] == [("IMAGE", pb2.TYPE_STRING),
                                                                                 ("RESULT", pb2.TYPE_STRING)]
    steps = configs["tiny_ensemble"].ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_preprocess", "tiny_onnx", "tiny_postprocess"]
    assert not configs["tiny_ensemble"].HasField("dynamic_batching")
    # every tensor an ensemble step reads was written by an earlier step or is the ensemble's input
    produced = {"IMAGE"}
    for step in steps:
        assert set(step.input_map.values()) <= produced, step.model_name
        produced |= set(step.output_map.values())
    assert "RESULT" in produced


def test_python_models_carry_a_verified_model_directory(repo):
    copied = ModelDir.open(repo / "tiny" / "1" / "visionrt_model")
    assert copied.path("onnx").is_file()  # sha256 checked against the copied manifest
    for name in ("tiny", "tiny_preprocess", "tiny_postprocess"):
        assert (repo / name / "1" / "model.py").read_text().startswith('"""A Triton Inference Server python-backend')


def test_engines_become_tensorrt_models_and_rtx_engines_are_skipped(tiny_model_dir, tmp_path):
    model_dir = ModelDir.open(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    spec = model_dir.manifest.input
    for key, flavour in (("trt", "tensorrt"), ("rtx", "tensorrt_rtx")):
        (model_dir.root / f"model.{key}.engine").write_bytes(b"engine bytes")
        model_dir.add_file(key, model_dir.root / f"model.{key}.engine")
        model_dir.manifest.engines[key] = {
            "flavour": flavour, "profile": {spec.name: {"min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [4, 3, 32, 32]}},
            "inputs": [{"name": spec.name, "shape": [-1, 3, 32, 32], "dtype": "float32"}],
            "outputs": [{"name": "logits", "shape": [-1, 10], "dtype": "float16"}]}
    model_dir.save()
    export_repository({"m": model_dir.root}, tmp_path / "repo")
    assert not (tmp_path / "repo" / "m_rtx").exists()
    config = parse_config(tmp_path / "repo" / "m_trt" / "config.pbtxt")
    assert config.backend == "tensorrt" and config.max_batch_size == 4  # the profile's max, not 32
    assert list(config.input[0].dims) == [3, 32, 32] and config.output[0].data_type == pb2.TYPE_FP16
    assert [g.kind for g in config.instance_group] == [pb2.ModelInstanceGroup.KIND_GPU]
    assert (tmp_path / "repo" / "m_trt" / "1" / "model.plan").read_bytes() == b"engine bytes"
    assert parse_config(tmp_path / "repo" / "m_onnx" / "config.pbtxt").max_batch_size == 32


def test_existing_models_are_kept_unless_forced(repo, tiny_model_dir):
    before = (repo / "tiny" / "config.pbtxt").read_text()
    with pytest.raises(InputError, match="--force"):
        export_repository({"tiny": tiny_model_dir}, repo)
    assert (repo / "tiny" / "config.pbtxt").read_text() == before
    with pytest.raises(InputError, match="cannot name a Triton model"):
        export_repository({"bad/name": tiny_model_dir}, repo)


def test_cli_writes_the_repository(tiny_model_dir, tmp_path, capsys):
    from visionrt.runtime.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["export-triton", f"cls={tiny_model_dir}", "--repo", str(tmp_path / "r"), "--json",
                              "--max-batch-size", "4", "--onnx-backend", "python"])
    args.func(args)
    printed = json.loads(capsys.readouterr().out)
    assert printed["models"] == ["cls_onnx", "cls", "cls_preprocess", "cls_postprocess", "cls_ensemble"]
    config = parse_config(tmp_path / "r" / "cls_onnx" / "config.pbtxt")
    assert config.backend == "python" and config.parameters["mode"].string_value == "infer"
    with pytest.raises(SystemExit):
        parser.parse_args(["export-triton", str(tiny_model_dir), "--repo", "r", "--max-batch-size", "0"])


# the python-backend model in this process, with a stand-in for Triton's pb_utils ----------------
class _Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


def _fake_pb_utils() -> types.ModuleType:
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = _Tensor
    pb.TritonError = str
    pb.get_input_tensor_by_name = lambda request, name: next(t for t in request.inputs if t.name() == name)
    pb.InferenceResponse = lambda output_tensors=(), error=None: types.SimpleNamespace(
        outputs={t.name(): t.as_numpy() for t in output_tensors}, error=error)
    return pb


def _load(repo: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"triton_{name}", repo / name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config_dict(repo / name / "config.pbtxt"))})
    return model


def _run(model, **inputs: np.ndarray) -> dict:
    (response,) = model.execute([types.SimpleNamespace(inputs=[_Tensor(k, v) for k, v in inputs.items()])])
    assert response.error is None, response.error
    return response.outputs


def test_python_models_equal_predict_in_process(repo, tiny_model_dir, images, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    with Predictor(tiny_model_dir) as predictor:
        expected = [json.loads(json.dumps(r.to_dict())) for r in predictor.predict(images)]
        batch = np.array([[im] for im in images], dtype=np.object_)
        predicted = _run(_load(repo, "tiny"), IMAGE=batch)["RESULT"]
        assert [json.loads(row[0]) for row in predicted] == expected
        pre = _run(_load(repo, "tiny_preprocess"), IMAGE=batch)
        assert pre["ORIGINAL_SIZE"].tolist() == [list(load_image(im).shape[:2]) for im in images]
        np.testing.assert_array_equal(pre[predictor.manifest.input.name], predictor.preprocess(images))
        outputs = predictor.infer(pre[predictor.manifest.input.name])
        post = _run(_load(repo, "tiny_postprocess"), ORIGINAL_SIZE=pre["ORIGINAL_SIZE"], **outputs)["RESULT"]
        assert [json.loads(row[0]) for row in post] == expected
    bad = _load(repo, "tiny").execute([types.SimpleNamespace(inputs=[_Tensor("IMAGE", np.array([[b"no image"]],
                                                                                                  dtype=np.object_))])])
    assert "InputError" in bad[0].error and "not an image" in bad[0].error


# a real tritonserver -----------------------------------------------------------------------------
def _imported(kind: str, root: Path) -> Path:
    """A model directory imported from an ONNX another exporter might write (the models of
    ``tests/test_import_wild.py``): a classifier ending in Softmax, or a YOLOv5 / SSD layout detector."""
    require_or_skip("torch")
    require_or_skip("onnx")
    import torch
    import test_import_wild as wild

    from visionrt.export.import_onnx import import_onnx

    if kind == "softmax":
        path = wild.export(wild.Classifier("softmax"), root / "c.onnx", torch.zeros(1, 3, 32, 32))
        return import_onnx(path, "classify", root / kind, classes=wild.CLASSES, image_size=(32, 32)).root
    names = ("boxes", "scores") if kind == "ssd" else ("predictions",)
    path = wild.export(wild.FixedDetector(wild.candidates(kind)), root / "d.onnx", torch.zeros(1, 3, 64, 64),
                       outputs=names)
    extra = {"postprocess": {"box_format": "yxyx", "box_units": "normalised"}} if kind == "ssd" else {}
    return import_onnx(path, "detect", root / kind, classes=wild.CLASSES, image_size=(64, 64), output_layout=kind,
                       **extra).root


@pytest.mark.parametrize("kind", ["softmax", "yolov5", "ssd"])
def test_python_models_of_an_import_adapt_its_own_outputs_as_predict_does(tmp_path, monkeypatch, kind):
    """NAME_onnx serves the file's own outputs (what Triton's onnxruntime backend can load);
    NAME_postprocess maps them as every runner does: probabilities are not normalised again, a
    foreign detection layout becomes detections; the results equal ``predict``."""
    import onnxruntime as ort
    from PIL import Image

    model_dir = _imported(kind, tmp_path)
    repo = tmp_path / "repo"
    export_repository({"m": model_dir}, repo, TritonOptions(max_batch_size=4, onnx_backend="python"))
    export_repository({"m": model_dir}, tmp_path / "ort", TritonOptions(max_batch_size=4))
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    own = [o.name for o in session.get_outputs()]
    for where in (repo, tmp_path / "ort"):
        served = config_dict(where / "m_onnx" / "config.pbtxt")
        assert [o["name"] for o in served["output"]] == own
        post_inputs = [i["name"] for i in config_dict(where / "m_postprocess" / "config.pbtxt")["input"]]
        assert post_inputs == [*own, "ORIGINAL_SIZE"]
    rng = np.random.default_rng(3)
    encoded = []
    for size in ((40, 50), (72, 48), (64, 64)):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (*size, 3), np.uint8)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    batch = np.array([[im] for im in encoded], dtype=np.object_)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    with Predictor(model_dir) as predictor:
        results = predictor.predict(encoded)
        expected = [json.loads(json.dumps(r.to_dict())) for r in results]
        name = predictor.manifest.input.name
        pre = _run(_load(repo, "m_preprocess"), IMAGE=batch)
        raw = _run(_load(repo, "m_onnx"), **{name: pre[name]})
        for key, value in zip(own, session.run(None, {name: pre[name]})):
            np.testing.assert_array_equal(raw[key], value)
        post = _run(_load(repo, "m_postprocess"), ORIGINAL_SIZE=pre["ORIGINAL_SIZE"], **raw)["RESULT"]
        assert [json.loads(row[0]) for row in post] == expected
        assert [json.loads(row[0]) for row in _run(_load(repo, "m"), IMAGE=batch)["RESULT"]] == expected
    if kind == "softmax":  # the model's own probabilities, once
        assert [r.score for r in results] == pytest.approx(raw["out"].max(1).tolist(), abs=1e-6)
    else:
        assert [len(r.detections) for r in results] == [2, 2, 2]


@pytest.fixture(scope="session")
def triton_venv() -> Path:
    """``.venv-triton`` with nvidia-pytriton and the visionrt runtime, created on first use (needs PyPI)."""
    marker = TRITON_VENV / ".installed"
    wanted = "\n".join(TRITON_REQUIREMENTS)
    if not (marker.is_file() and marker.read_text() == wanted):
        python = TRITON_VENV / "bin" / "python"
        steps = [[sys.executable, "-m", "venv", "--clear", str(TRITON_VENV)],
                 [str(python), "-m", "pip", "install", "--quiet", *TRITON_REQUIREMENTS],
                 [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(ROOT)]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                skip_for_missing_extra(f"cannot set up {TRITON_VENV} ({' '.join(step[2:5])}): "
                                       f"{done.stderr.strip()[-300:]}")
        marker.write_text(wanted)
    return TRITON_VENV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A python model Triton is known to load (it echoes its input): whether the binary can start here
#: at all is checked with it, so a model of ours that fails to load is a failure, not a skip.
PROBE_MODEL = {"config.pbtxt": """name: "probe"
backend: "python"
max_batch_size: 0
input [{ name: "X", data_type: TYPE_FP32, dims: [1] }]
output [{ name: "Y", data_type: TYPE_FP32, dims: [1] }]
""", "1/model.py": """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""}


class TritonExited(Exception):
    """tritonserver exited before it was ready (with ``--load-model``: a model failed to load)."""


@contextlib.contextmanager
def running_tritonserver(triton_venv: Path, repo: Path, models: list[str], workdir: Path):
    """The bundled tritonserver on 127.0.0.1 serving ``models`` of ``repo``: yields ``(client, log)``;
    :class:`TritonExited` with the log when it exits before it is ready."""
    python = triton_venv / "bin" / "python"
    found = subprocess.run([str(python), "-c", "import pathlib, pytriton, sys; "
                            "print(pathlib.Path(pytriton.__file__).parent); print(sys.base_prefix)"],
                           capture_output=True, text=True, check=True).stdout.split()
    package, base_prefix = Path(found[0]), Path(found[1])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    backends = workdir / "backends"
    if not backends.exists():
        shutil.copytree(package / "tritonserver" / "backends", backends)
        shutil.copy(package / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub",
                    backends / "python")
    port = _free_port()
    env = {**os.environ, "PATH": f"{triton_venv / 'bin'}:{os.environ['PATH']}",  # the stub's python
           "LD_LIBRARY_PATH": f"{base_prefix / 'lib'}:{package.parent / 'nvidia_pytriton.libs'}"}
    command = [str(package / "tritonserver" / "bin" / "tritonserver"), "--model-repository", str(repo),
               "--backend-directory", str(backends), "--model-control-mode", "explicit",
               *[f"--load-model={m}" for m in models], "--http-address", "127.0.0.1", "--http-port", str(port),
               "--allow-grpc", "false", "--allow-metrics", "false", "--log-verbose", "0"]
    log = workdir / f"tritonserver-{repo.name}.log"
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise TritonExited(f"tritonserver exited {server.returncode} before it was ready:\n"
                                   f"{log.read_text()[-3000:]}")
            try:
                if client.is_server_ready():
                    break
            except Exception:  # noqa: BLE001: not listening yet
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"tritonserver not ready after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield client, log
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def triton_starts(triton_venv, tmp_path_factory) -> Path:
    """Skips when the bundled tritonserver cannot start here at all, judged with :data:`PROBE_MODEL`;
    returns the folder its backends were copied to."""
    workdir = tmp_path_factory.mktemp("triton")
    repo = workdir / "probe-repo"
    for name, text in PROBE_MODEL.items():
        (repo / "probe" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "probe" / name).write_text(text)
    try:
        with running_tritonserver(triton_venv, repo, ["probe"], workdir):
            pass
    except TritonExited as err:
        pytest.skip(f"tritonserver cannot start here, not even with a trivial python model: {err}")
    return workdir


@pytest.fixture()
def tritonserver(triton_venv, triton_starts, tiny_model_dir, tmp_path):
    """The bundled tritonserver serving the exported python models (``NAME_onnx`` too, as a python
    model: this Triton has no onnxruntime backend); yields ``(client, log)``. A model that fails to
    load (a broken ``config.pbtxt`` or ``model.py`` from ``export-triton``) fails the test with
    Triton's log: the server itself was seen to start (:func:`triton_starts`)."""
    repo = tmp_path / "repo"
    models = export_repository({"tiny": tiny_model_dir}, repo, TritonOptions(max_batch_size=8, threads=1,
                                                                              onnx_backend="python"))
    try:
        with running_tritonserver(triton_venv, repo, list(models), triton_starts) as started:
            yield started
    except TritonExited as err:
        pytest.fail(f"the exported models failed to load (the server starts with a trivial model): {err}",
                    pytrace=False)


@pytest.mark.slow
def test_a_model_that_fails_to_load_is_a_failure_not_a_skip(triton_venv, triton_starts, tmp_path):
    """The check the fixture above relies on: a broken model.py makes tritonserver exit, and that is
    told apart from a server that cannot start."""
    repo = tmp_path / "repo"
    for name, text in PROBE_MODEL.items():
        (repo / "probe" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "probe" / name).write_text(text)
    (repo / "probe" / "1" / "model.py").write_text("this is not python\n")
    with pytest.raises(TritonExited, match="probe"):
        with running_tritonserver(triton_venv, repo, ["probe"], triton_starts):
            pass


def assert_same_results(got, expected, where: str = "result") -> None:
    """Equal structure, labels and indices; floats equal to 1e-12 relative: Triton's venv has numpy
    1.26 (PyTriton pins numpy<2), whose float64 ``exp`` in the softmax may differ in the last bit."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same_results(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_same_results(g, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), where
    else:
        assert got == expected and type(got) is type(expected), where


@pytest.mark.slow
def test_real_tritonserver_gives_the_results_of_predict(tritonserver, tiny_model_dir, images):
    import tritonclient.http as httpclient

    client, log = tritonserver
    with Predictor(tiny_model_dir) as predictor:
        expected = [json.loads(json.dumps(r.to_dict())) for r in predictor.predict(images)]
    for model in ("tiny", "tiny_ensemble"):
        image = httpclient.InferInput("IMAGE", [len(images), 1], "BYTES")
        image.set_data_from_numpy(np.array([[im] for im in images], dtype=np.object_))
        result = client.infer(model, [image], outputs=[httpclient.InferRequestedOutput("RESULT")])
        assert_same_results([json.loads(row[0]) for row in result.as_numpy("RESULT")], expected)
    bad = httpclient.InferInput("IMAGE", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b"not an image"]], dtype=np.object_))
    with pytest.raises(Exception, match="not an image"):
        client.infer("tiny", [bad])
    assert client.is_model_ready("tiny")  # still serving after the bad request
