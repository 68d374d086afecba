"""`visionrt serve`: the KServe v2 protocol (through tritonclient), the task endpoint, dynamic
batching (bit-equal to Predictor.predict), metrics, and every bad input of issue 10 section 6,
each followed by a request that must still succeed."""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

from conftest import require_or_skip

require_or_skip("fastapi")
uvicorn = require_or_skip("uvicorn")
httpx = require_or_skip("httpx")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from visionrt.runtime import Predictor  # noqa: E402
from visionrt.runtime.server.app import ServerSettings, create_app  # noqa: E402
from visionrt.runtime.server.repository import ModelRepository  # noqa: E402


# helpers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def running(repository: ModelRepository, **settings):
    """Serve ``repository`` in-process (uvicorn on a thread) on a free 127.0.0.1 port; yields the URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(repository, ServerSettings(**settings)), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started:
                break
            time.sleep(0.025)
        assert server.started, "the server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def wait_for_pending(url: str, count: int, timeout_s: float = 20.0) -> None:
    """Block until the server's metrics show ``count`` requests queued (not yet executing)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics").text
        if re.search(rf'^visionrt_pending_requests{{model="tiny"}} {count}(\.0)?$', metrics, re.M):
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} requests never queued within {timeout_s} s")


def slowed(repository: ModelRepository, seconds: float) -> ModelRepository:
    """Make every execution of the (only) model take at least ``seconds`` longer."""
    for predictor in next(iter(repository)).predictors:
        infer = predictor.infer
        predictor.infer = lambda batch, infer=infer: (time.sleep(seconds), infer(batch))[1]
    return repository


@pytest.fixture(scope="module")
def images(tiny_data) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tiny_data / "images" / "test").glob("*.png"))[:16]]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    with Predictor(tiny_model_dir) as p:
        yield p


@pytest.fixture(scope="module")
def url(tiny_model_dir):
    """One server for the protocol and bad-input tests (merges for up to 20 ms)."""
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), max_queue_delay_ms=20, max_body_mb=1) as url:
        yield url


def still_serving(url: str, image: bytes, predictor: Predictor) -> None:
    response = httpx.post(f"{url}/v1/models/tiny/predict", content=image)
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [r.to_dict() for r in predictor.predict(image)]


def metric(url: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    raise KeyError(name)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error, error


# protocol --------------------------------------------------------------------------------
def test_health_and_metadata(url):
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/tiny/ready").status_code == 200
    assert httpx.get(f"{url}/v2").json()["extensions"][0] == "binary_tensor_data"
    meta = httpx.get(f"{url}/v2/models/tiny").json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert httpx.get(f"{url}/v2/models/tiny/versions/1").json() == meta
    assert httpx.get(f"{url}/v2/models/tiny/config").json()["input"][0]["dims"] == [3, 64, 64]


def test_tritonclient_json_and_binary(url, predictor):
    triton = require_or_skip("tritonclient.http")
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
    assert client.get_model_metadata("tiny")["inputs"][0]["shape"] == [-1, 3, 64, 64]
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    expected = predictor.infer(x)["logits"]
    for binary in (True, False):
        tensor = triton.InferInput("images", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = client.infer("tiny", [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)])
        np.testing.assert_array_equal(result.as_numpy("logits"), expected)
        assert result.get_response()["outputs"][0].get("parameters", {}).get("binary_data_size") == \
            (expected.nbytes if binary else None)
    with pytest.raises(triton.InferenceServerException, match="shape"):
        bad = triton.InferInput("images", [1, 3, 32, 32], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
        client.infer("tiny", [bad])
    client.close()


def test_binary_extension_by_hand(url, predictor):
    """The raw wire format: JSON header + tensor bytes, Inference-Header-Content-Length both ways."""
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "images", "shape": [2, 3, 64, 64], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    response = httpx.post(f"{url}/v2/models/tiny/infer", content=header + x.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    size = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:size])
    assert meta["outputs"][0]["shape"] == [2, 10]
    logits = np.frombuffer(response.content[size:], np.float32).reshape(2, 10)
    np.testing.assert_array_equal(logits, predictor.infer(x)["logits"])


def test_predict_endpoint(url, images, predictor):
    response = httpx.post(f"{url}/v1/models/tiny/predict?top_k=2", content=images[0])
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [r.to_dict() for r in predictor.predict(images[0], top_k=2)]
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images[:3])]
    many = httpx.post(f"{url}/v1/models/tiny/predict?draw=1", files=files).json()
    assert [{k: v for k, v in r.items() if k != "drawn_png"} for r in many["results"]] == \
        [r.to_dict() for r in predictor.predict(images[:3])]
    assert all(r["drawn_png"] for r in many["results"])
    assert many["timing_ms"]["batch_sizes"] == [3, 3, 3]  # one request's images run as one batch
    drawn = httpx.post(f"{url}/v1/models/tiny/predict?draw=1", content=images[0])
    assert drawn.headers["content-type"] == "image/png" and drawn.content.startswith(b"\x89PNG")


def test_request_of_more_images_than_the_batch_runs_in_chunks(tiny_model_dir, images, predictor):
    """Five images at a max batch of 2: works of 2, 2 and 1 images, run as executions of those sizes,
    and answers equal to Predictor.predict."""
    from visionrt.runtime.server.task_endpoint import works

    repository = ModelRepository.load([f"tiny={tiny_model_dir}"], max_batch_size=2)
    with running(repository) as url:  # the server closes the repository when it stops
        files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images[:5])]
        answer = httpx.post(f"{url}/v1/models/tiny/predict", files=files).json()
    assert [work.blobs for work in works(images[:5], {}, False, None, 2)] == [images[:2], images[2:4], images[4:5]]
    assert answer["results"] == [r.to_dict() for r in predictor.predict(images[:5])]
    assert answer["timing_ms"]["batch_sizes"] == [2, 2, 2, 2, 1]


def test_a_batch_of_predict_requests_equals_predict_and_bad_images_fail_alone(predictor, images):
    """Predict.run (what the model's thread does with a batch of predict requests): each request's
    results equal Predictor.predict with its own options; an undecodable image fails its own request;
    when the batch's execution fails, each request runs alone and only the one at fault fails."""
    from visionrt.runtime.errors import InputError
    from visionrt.runtime.server.task_endpoint import Predict

    works = [Predict(images[0:1], {}, False), Predict([b"not an image"], {}, False),
             Predict(images[1:3], {"top_k": 2}, False), Predict(images[3:4], {}, True)]
    answers = Predict.run(predictor, works)
    assert isinstance(answers[1], InputError) and "not an image" in str(answers[1])
    for work, answer in zip(works[0:1] + works[2:], answers[0:1] + answers[2:]):
        assert [r.to_dict() for r in answer.results] == \
            [r.to_dict() for r in predictor.predict(list(work.blobs), **work.options)]
    assert answers[3].images[0].shape == (64, 64, 3) and answers[0].compute_s > 0

    class FailsOnRow:
        """The predictor, but its execution fails on any batch holding the first image's row."""

        def __init__(self, inner, poisoned):
            self.inner, self.poisoned = inner, poisoned

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def infer(self, batch):
            if any(np.array_equal(row, self.poisoned) for row in batch):
                raise InputError("this row breaks the model")
            return self.inner.infer(batch)

    breaking = FailsOnRow(predictor, predictor.preprocess(images[0:1])[0])
    works = [Predict(images[1:2], {}, False), Predict(images[0:1], {}, False), Predict(images[2:3], {}, False)]
    answers = Predict.run(breaking, works)
    assert isinstance(answers[1], InputError) and "breaks the model" in str(answers[1])
    assert [answers[i].results[0].to_dict() for i in (0, 2)] == \
        [r.to_dict() for r in predictor.predict([images[1], images[2]])]


def test_a_bad_image_among_merged_requests_fails_alone(tiny_model_dir, images, predictor):
    """Concurrent requests merged into shared executions, one of them not an image: that one gets
    its 400, every other request the results Predictor.predict gives for its image."""
    repository = slowed(ModelRepository.load([f"tiny={tiny_model_dir}"]), 0.05)
    bodies = [*images[:7], b"this is text, not pixels", *images[7:12]]
    with running(repository, max_queue_delay_ms=20) as url:
        with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(lambda body: httpx.post(f"{url}/v1/models/tiny/predict", content=body,
                                                            timeout=30), bodies))
    assert_error(answers[7], 400, "not an image")
    good = [(body, answer.json()) for body, answer in zip(bodies, answers) if body != bodies[7]]
    for body, answer in good:
        assert answer["results"] == [r.to_dict() for r in predictor.predict(body)]
    assert max(size for _, answer in good for size in answer["timing_ms"]["batch_sizes"]) > 1


def test_jpegs_small_and_large_answer_as_predict_does(url, predictor):
    """A JPEG body decoded on the model's thread (small) and one decoded in the pool (over 64 KiB),
    both reduced as Predictor.predict reduces them: the same results; drawn on the full-size image."""
    from PIL import Image
    from skimage import data as photos

    photo = Image.fromarray(photos.astronaut())
    for size in ((320, 320), (1024, 1024)):
        buffer = io.BytesIO()
        photo.resize(size).save(buffer, format="JPEG", quality=90)
        jpeg = buffer.getvalue()
        assert (len(jpeg) > 64 * 1024) == (size[0] == 1024)
        answer = httpx.post(f"{url}/v1/models/tiny/predict", content=jpeg).json()
        assert answer["results"] == [r.to_dict() for r in predictor.predict(jpeg)]
        drawn = httpx.post(f"{url}/v1/models/tiny/predict?draw=1", content=jpeg)
        assert Image.open(io.BytesIO(drawn.content)).width == size[0]  # full size (a caption strip below)


def test_a_small_png_of_many_pixels_is_decoded_beside_the_model(url, predictor, monkeypatch):
    """A plain 2000x1000 PNG of a few KB decodes in the pool (on the model's thread it would hold up
    its batch); a 64 px one with its batch on the model's thread. Both answer as Predictor.predict."""
    from PIL import Image

    from visionrt.runtime.server import task_endpoint

    threads = []
    decode = task_endpoint.decode
    monkeypatch.setattr(task_endpoint, "decode",
                        lambda *args: (threads.append(threading.current_thread().name), decode(*args))[1])
    for size, thread in (((2000, 1000), "visionrt-prepost"), ((64, 64), "visionrt-infer")):
        buffer = io.BytesIO()
        Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
        png = buffer.getvalue()
        assert len(png) < 64 * 1024 and task_endpoint.large_png([png]) == (size[0] == 2000)
        threads.clear()
        answer = httpx.post(f"{url}/v1/models/tiny/predict", content=png).json()
        assert answer["results"] == [r.to_dict() for r in predictor.predict(png)]
        assert len(threads) == 1 and threads[0].startswith(thread), threads
        if size[0] == 2000:
            big = png
    assert not task_endpoint.large_png([big[:20], b"GIF89a" + big[6:], b""])  # cut short, not a PNG, empty


def test_page_is_served(url):
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<input type=\"file\"" in page.text
    assert httpx.get(f"{url}/v1/models").json()["models"][0]["name"] == "tiny"


# batching ---------------------------------------------------------------------------------
def test_concurrent_requests_equal_sequential_predict_and_merge(tiny_model_dir, images, predictor):
    """16 clients at once: each answer bit-equal to Predictor.predict on that image alone, and the
    batcher merged them (batch size histogram: executions of more than one image)."""
    repository = slowed(ModelRepository.load([f"tiny={tiny_model_dir}"]), 0.05)
    with running(repository, max_queue_delay_ms=20) as url:
        def ask(image):
            return httpx.post(f"{url}/v1/models/tiny/predict", content=image, timeout=30).json()

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, images))
        for image, answer in zip(images, answers):
            assert answer["results"] == [r.to_dict() for r in predictor.predict(image)]
        assert max(size for a in answers for size in a["timing_ms"]["batch_sizes"]) > 1
        count = metric(url, "visionrt_batch_size_count", model="tiny")
        assert metric(url, "visionrt_batch_size_sum", model="tiny") == len(images) > count
        assert metric(url, "visionrt_batch_size_bucket", model="tiny", le="1.0") < count
        assert metric(url, "visionrt_request_success_total", model="tiny") == len(images)
        stats = httpx.get(f"{url}/v2/models/tiny/stats").json()["model_stats"][0]
        assert stats["inference_count"] == len(images) and stats["execution_count"] == count


def test_tritonclient_concurrent_infer_bit_equal(tiny_model_dir, predictor):
    """Raw tensors through tritonclient's async_infer (16 in flight): every row equals the
    model run on that row alone (the batched onnxruntime CPU kernels are bit-exact here)."""
    triton = require_or_skip("tritonclient.http")
    x = np.random.default_rng(2).standard_normal((16, 1, 3, 64, 64)).astype(np.float32)
    repository = slowed(ModelRepository.load([f"tiny={tiny_model_dir}"]), 0.05)
    with running(repository, max_queue_delay_ms=20) as url:
        client = triton.InferenceServerClient(url.removeprefix("http://"), concurrency=16)
        pending = []
        for row in x:
            tensor = triton.InferInput("images", list(row.shape), "FP32")
            tensor.set_data_from_numpy(row)
            pending.append(client.async_infer("tiny", [tensor]))
        results = [p.get_result().as_numpy("logits") for p in pending]
        client.close()
        assert metric(url, "visionrt_execution_count_total", model="tiny") < len(x)
    for row, result in zip(x, results):
        np.testing.assert_array_equal(result, predictor.infer(row)["logits"])


def test_burst_larger_than_queue_gets_503_and_the_rest_succeed(tiny_model_dir, images, predictor):
    repository = slowed(ModelRepository.load([f"tiny={tiny_model_dir}"], max_batch_size=1), 0.3)
    with running(repository, max_queue=2) as url:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda im: httpx.post(f"{url}/v1/models/tiny/predict", content=im,
                                                            timeout=30), images[:8]))
        refused = [r for r in responses if r.status_code == 503]
        served = [(im, r) for im, r in zip(images, responses) if r.status_code == 200]
        assert refused and served and len(refused) + len(served) == 8
        assert all(r.headers["Retry-After"] == "1" and "queue" in r.json()["error"] for r in refused)
        for image, response in served:
            assert response.json()["results"] == [r.to_dict() for r in predictor.predict(image)]
        assert metric(url, "visionrt_request_failure_total", model="tiny", reason="queue_full") == len(refused)
        still_serving(url, images[0], predictor)


def test_deadline_gives_504_and_frees_the_slot(tiny_model_dir, images, predictor):
    repository = slowed(ModelRepository.load([f"tiny={tiny_model_dir}"], max_batch_size=1), 0.5)
    with running(repository, timeout_s=0.2, max_queue=4) as url:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda im: httpx.post(f"{url}/v1/models/tiny/predict", content=im,
                                                            timeout=30), images[:3]))
        for response in responses:
            assert_error(response, 504, "deadline")
        assert metric(url, "visionrt_pending_requests", model="tiny") == 0  # the queued ones left the queue
        assert metric(url, "visionrt_request_failure_total", model="tiny", reason="timeout") == 3
        assert metric(url, "visionrt_execution_count_total", model="tiny") < 3  # withdrawn before running


def test_queued_work_finishes_on_shutdown(tiny_model_dir, images, predictor):
    # 0.5 s an execution: the window in which two requests queue stays wide on a loaded machine
    repository = slowed(ModelRepository.load([f"tiny={tiny_model_dir}"], max_batch_size=1), 0.5)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        with running(repository) as url:
            futures = [pool.submit(httpx.post, f"{url}/v1/models/tiny/predict", content=im, timeout=30)
                       for im in images[:3]]
            wait_for_pending(url, 2)  # all three arrived: one runs, two queue; then the server is told to stop
        assert [f.result().status_code for f in futures] == [200, 200, 200]


# bad input (each followed by a request that must succeed) ---------------------------------
def test_non_image_body(url, images, predictor):
    assert_error(httpx.post(f"{url}/v1/models/tiny/predict", content=b"this is text, not pixels"),
                 400, "not an image")
    assert_error(httpx.post(f"{url}/v1/models/tiny/predict", content=b""), 400, "empty")
    still_serving(url, images[0], predictor)


def test_truncated_png_and_jpeg(url, images, predictor):
    from PIL import Image

    jpeg = io.BytesIO()
    Image.open(io.BytesIO(images[0])).save(jpeg, format="JPEG")
    for data in (images[0], jpeg.getvalue()):
        assert_error(httpx.post(f"{url}/v1/models/tiny/predict", content=data[: len(data) // 2]),
                     400, "truncated")
    still_serving(url, images[0], predictor)


def png_header_only(width: int, height: int) -> bytes:
    """A small PNG file declaring ``width × height`` gray pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


def test_decompression_bomb(url, images, predictor):
    response = httpx.post(f"{url}/v1/models/tiny/predict", content=png_header_only(9000, 8000))
    assert_error(response, 400, "pixels")
    still_serving(url, images[0], predictor)


def test_body_over_the_limit(url, images, predictor):
    big = b"\0" * (2 * 2**20)  # the module's server takes at most 1 MiB
    assert_error(httpx.post(f"{url}/v1/models/tiny/predict", content=big), 413, "MiB")
    streamed = httpx.post(f"{url}/v1/models/tiny/predict", content=iter([big[:2**19]] * 4))  # chunked
    assert_error(streamed, 413, "MiB")
    still_serving(url, images[0], predictor)


@pytest.mark.parametrize("change, words", [
    ({"name": "pixels"}, ["takes one input 'images'"]),
    ({"datatype": "FP16"}, ["must be FP32", "FP16"]),
    ({"datatype": "COMPLEX"}, ["datatype"]),
    ({"shape": [1, 3, 64]}, ["shape"]),
    ({"shape": [1, 3, 64, 63]}, ["values for shape"]),
    ({"shape": [0, 3, 64, 64], "data": []}, ["batch of 0"]),
    ({"data": ["a"] * (3 * 64 * 64)}, ["not FP32"]),
])
def test_wrong_tensor(url, images, predictor, change, words):
    tensor = {"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * (3 * 64 * 64)}
    assert_error(httpx.post(f"{url}/v2/models/tiny/infer", json={"inputs": [{**tensor, **change}]}), 400, *words)
    still_serving(url, images[0], predictor)


def test_malformed_requests(url, images, predictor):
    assert_error(httpx.post(f"{url}/v2/models/tiny/infer", content=b'{"inputs": [}'), 400, "not valid JSON")
    assert_error(httpx.post(f"{url}/v2/models/tiny/infer", json={"outputs": []}), 400, "inputs")
    assert_error(httpx.post(f"{url}/v2/models/tiny/infer", content=b'{"inputs": []}',
                            headers={"Inference-Header-Content-Length": "999"}), 400, "does not fit")
    still_serving(url, images[0], predictor)


def test_json_headers_parse_as_the_standard_library_does():
    """orjson first, the standard library for what only it reads: the same header either way."""
    from visionrt.runtime.errors import InputError
    from visionrt.runtime.server import protocol

    values = [0.5, float("nan"), float("inf"), -float("inf"), 1e-300, 2 ** 70, 3]
    body = json.dumps({"id": "é", "inputs": [{"name": "t", "datatype": "FP64", "shape": [7], "data": values}],
                       "parameters": {"binary_data_output": True}}).encode()
    parsed = protocol.parse_infer_request(body, None)
    np.testing.assert_array_equal(parsed.inputs["t"], np.array(values, np.float64))
    assert parsed.id == "é" and parsed.binary_by_default
    plain = json.dumps({"inputs": [{"name": "t", "datatype": "INT64", "shape": [2], "data": [1, -2]}]}).encode()
    assert protocol.parse_infer_request(plain, None).inputs["t"].tolist() == [1, -2]
    for bad in (b'{"inputs": [}', b"\xff{}", b""):
        with pytest.raises(InputError, match="not valid JSON"):
            protocol.parse_infer_request(bad + b" ", None)


def test_unknown_model(url, images, predictor):
    assert_error(httpx.post(f"{url}/v1/models/nope/predict", content=images[0]), 404, "nope", "tiny")
    assert_error(httpx.get(f"{url}/v2/models/nope"), 404, "nope")
    assert_error(httpx.get(f"{url}/v2/models/tiny/versions/7"), 404, "version")
    assert_error(httpx.get(f"{url}/v2/models/..%2F..%2Fetc/ready"), 404)
    still_serving(url, images[0], predictor)


@pytest.mark.parametrize("query, words", [
    ("score_threshold=0.5", ["score_threshold", "top_k"]),
    ("top_k=0", ["top_k", "at least 1"]),
    ("top_k=many", ["top_k", "integer"]),
    ("format=gif", ["format"]),
])
def test_bad_options(url, images, predictor, query, words):
    assert_error(httpx.post(f"{url}/v1/models/tiny/predict?{query}", content=images[0]), 400, *words)
    still_serving(url, images[0], predictor)


def test_client_disconnects_mid_request(url, images, predictor):
    before = metric(url, "visionrt_request_failure_total", model="tiny", reason="disconnected")
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                     + images[0][:1000])
    for _ in range(100):
        if metric(url, "visionrt_request_failure_total", model="tiny", reason="disconnected") > before:
            break
        time.sleep(0.05)
    assert metric(url, "visionrt_request_failure_total", model="tiny", reason="disconnected") == before + 1
    still_serving(url, images[0], predictor)


def test_repository_refuses_bad_entries(tiny_model_dir, tmp_path):
    from visionrt.runtime.errors import ArtifactError, InputError

    with pytest.raises(InputError, match="two models"):
        ModelRepository.load([f"a={tiny_model_dir}", f"a={tiny_model_dir}"])
    with pytest.raises(InputError, match="URL"):
        ModelRepository.load([f"a/b={tiny_model_dir}"])
    with pytest.raises(ArtifactError, match="does not exist"):
        ModelRepository.load([str(tmp_path / "missing")])


def test_serve_command_stops_gracefully_on_sigterm(tiny_model_dir, images, predictor):
    """`python -m visionrt.runtime.server` serves, and SIGTERM ends it with status 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "visionrt.runtime.server", f"tiny={tiny_model_dir}",
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.1)
        still_serving(url, images[0], predictor)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.stdout.read().decode()
    finally:
        process.kill()


@pytest.mark.parametrize("kind", ["FP32", "FP16", "INT64", "INT32", "UINT8", "BOOL", "BYTES"])
@pytest.mark.parametrize("binary", [True, False])
def test_protocol_round_trips_every_datatype(kind, binary):
    """A response written by the server parses back, as a request, to the same tensor."""
    from visionrt.runtime.server import protocol

    array = (np.array([[b"cat", b""], [b"\xff\x00", b"dog"]], dtype=object) if kind == "BYTES"
             else (np.arange(4).reshape(2, 2) % 2).astype(protocol.DATATYPES[kind]))
    asked = protocol.InferRequest(None, {}, {}, {"t": binary}, False)
    body, headers = protocol.encode_infer_response("m", asked, {"t": array})
    json_size = int(headers.get(protocol.HEADER_LENGTH, len(body)))
    header, tensor_bytes = json.loads(body[:json_size]), body[json_size:]
    assert header["outputs"][0]["datatype"] == kind
    assert bool(tensor_bytes) == binary
    if kind == "BYTES" and not binary:
        return  # JSON carries BYTES as text: b"\xff\x00" cannot survive, which is why binary exists
    header["inputs"] = header.pop("outputs")
    again = json.dumps(header).encode()
    parsed = protocol.parse_infer_request(again + tensor_bytes, str(len(again)))
    assert parsed.datatypes["t"] == kind
    assert parsed.inputs["t"].dtype == array.dtype and parsed.inputs["t"].tolist() == array.tolist()
