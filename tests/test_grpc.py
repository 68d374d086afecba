"""`visionrt serve --grpc-port`: the KServe v2 gRPC service through Triton's own client
(``tritonclient.grpc``, unchanged): metadata, config, batched infer bit-equal to the model,
requested outputs, and errors with HTTP's one-line messages."""
from __future__ import annotations

import queue
import socket
import sys

import numpy as np
import pytest

from conftest import require_or_skip  # noqa: E402

require_or_skip("fastapi")
require_or_skip("grpc", reason="needs the grpc extra")
triton_grpc = require_or_skip("tritonclient.grpc")
import httpx  # noqa: E402
from test_server import metric, running, slowed  # noqa: E402

from visionrt.runtime import Predictor  # noqa: E402
from visionrt.runtime.errors import BackendUnavailable  # noqa: E402
from visionrt.runtime.server.cli import grpc_listen_address  # noqa: E402
from visionrt.runtime.server.repository import ModelRepository  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def servers(tiny_model_dir):
    """(HTTP URL, gRPC client) of one server."""
    address = f"127.0.0.1:{free_port()}"
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), max_queue_delay_ms=20,
                 grpc_address=address) as url:
        client = triton_grpc.InferenceServerClient(address)
        yield url, client
        client.close()


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    with Predictor(tiny_model_dir) as p:
        yield p


def tensor(array: np.ndarray, name: str = "images", datatype: str = "FP32"):
    t = triton_grpc.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


def grpc_error(call) -> triton_grpc.InferenceServerException:
    with pytest.raises(triton_grpc.InferenceServerException) as caught:
        call()
    return caught.value


def test_health_metadata_and_config(servers):
    _, client = servers
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_server_metadata().name == "visionrt"
    meta = client.get_model_metadata("tiny", as_json=True)
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": ["-1", "3", "64", "64"]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "10"]}]
    config = client.get_model_config("tiny").config
    assert config.max_batch_size == 32 and list(config.input[0].dims) == [3, 64, 64]
    assert config.dynamic_batching.max_queue_delay_microseconds == 20_000
    assert config.parameters["task"].string_value == "classify"


def test_infer_a_batch_bit_equal_to_the_model(servers, predictor):
    url, client = servers
    before = metric(url, "visionrt_request_success_total", model="tiny")
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    result = client.infer("tiny", [tensor(x)], request_id="r1",
                          outputs=[triton_grpc.InferRequestedOutput("logits")])
    np.testing.assert_array_equal(result.as_numpy("logits"), predictor.infer(x)["logits"])
    assert result.get_response().id == "r1" and result.get_response().raw_output_contents
    assert metric(url, "visionrt_request_success_total", model="tiny") == before + 1


def test_unknown_model_and_version_are_not_found(servers):
    url, client = servers
    x = np.zeros((1, 3, 64, 64), np.float32)
    err = grpc_error(lambda: client.infer("nope", [tensor(x)]))
    assert err.status() == "StatusCode.NOT_FOUND"
    assert err.message() == httpx.get(f"{url}/v2/models/nope").json()["error"]
    assert grpc_error(lambda: client.get_model_metadata("tiny", model_version="2")).status() == "StatusCode.NOT_FOUND"
    assert grpc_error(lambda: client.is_model_ready("nope")).status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("case", ["shape", "datatype", "name", "output"])
def test_bad_input_is_invalid_argument_with_https_message(servers, predictor, case):
    url, client = servers
    x = np.zeros((1, 3, 32, 32) if case == "shape" else (1, 3, 64, 64), np.float32)
    http = require_or_skip("tritonclient.http")
    http_client = http.InferenceServerClient(url.removeprefix("http://"))
    grpc_inputs = [tensor(x.astype(np.float64), datatype="FP64") if case == "datatype" else
                   tensor(x, name="pixels" if case == "name" else "images")]
    http_input = http.InferInput(grpc_inputs[0].name(), list(x.shape), grpc_inputs[0].datatype())
    http_input.set_data_from_numpy(x.astype(np.float64) if case == "datatype" else x)
    outputs = {"grpc": [triton_grpc.InferRequestedOutput("scores")], "http": [http.InferRequestedOutput("scores")]} \
        if case == "output" else {"grpc": None, "http": None}
    err = grpc_error(lambda: client.infer("tiny", grpc_inputs, outputs=outputs["grpc"]))
    with pytest.raises(http.InferenceServerException) as http_err:
        http_client.infer("tiny", [http_input], outputs=outputs["http"])
    http_client.close()
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.message() == http_err.value.message() and "\n" not in err.message()
    test_infer_a_batch_bit_equal_to_the_model(servers, predictor)  # still serving


def test_a_stream_runs_its_requests_together_and_answers_each(tiny_model_dir, predictor):
    """tritonclient.grpc's stream (Triton's ModelStreamInfer): requests sent while the model is busy
    merge into one execution; every answer bit-equal to the model, a bad request answered with HTTP's
    message in its place while the stream goes on, and the stream ends when the client stops it."""
    address = f"127.0.0.1:{free_port()}"
    with running(slowed(ModelRepository.load([f"tiny={tiny_model_dir}"]), 0.3), grpc_address=address) as url:
        client = triton_grpc.InferenceServerClient(address)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        rng = np.random.default_rng(1)
        xs = {f"s{i}": rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for i in range(6)}
        bad = np.zeros((1, 3, 32, 32), np.float32)
        for request_id, x in [*xs.items(), ("bad", bad)]:
            client.async_stream_infer("tiny", [tensor(x)], request_id=request_id)
        got = [answers.get(timeout=60) for _ in range(len(xs) + 1)]
        client.stop_stream()
        client.close()
        errors = [str(error) for result, error in got if error is not None]
        http = httpx.post(f"{url}/v2/models/tiny/infer", json={"inputs": [
            {"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": bad.ravel().tolist()}]})
        assert errors == [http.json()["error"]]
        results = {result.get_response().id: result.as_numpy("logits") for result, error in got if error is None}
        assert sorted(results) == sorted(xs)
        for request_id, x in xs.items():
            np.testing.assert_array_equal(results[request_id], predictor.infer(x)["logits"])
        assert metric(url, "visionrt_execution_count_total", model="tiny") < len(xs)  # merged while busy
        assert metric(url, "visionrt_request_failure_total", model="tiny", reason="bad_input") == 2  # gRPC, HTTP


def test_grpc_port_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'visionrt\[grpc\]'"):
        grpc_listen_address("127.0.0.1", free_port())
    assert grpc_listen_address("127.0.0.1", None) is None
