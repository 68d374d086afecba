"""The hot routes' fast path (runtime/server/hot_routes.py): which requests skip the framework, that
they get the same answers as through it (bodies byte for byte, the same errors, the key check and
its counted refusals, the body limit, the request metrics), and that a client leaving while its
request waits for the model is noticed and counted."""
from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

from conftest import require_or_skip

require_or_skip("fastapi")
httpx = require_or_skip("httpx")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from test_server import metric, running, slowed  # noqa: E402
from test_server_auth import KEYS, auth_failures, bearer, write_keys  # noqa: E402

from visionrt.runtime.server import hot_routes  # noqa: E402
from visionrt.runtime.server.repository import ModelRepository  # noqa: E402

ORIGIN = "https://page.example"
#: headers that must agree between the two paths (CORS adds its own through the framework)
COMPARED = ("content-type", "content-length", "www-authenticate", "retry-after", "inference-header-content-length",
            "connection")


def _scope(method: str, path: str, headers=(), root_path: str = "") -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": list(headers)}


def test_only_hot_posts_take_the_fast_path():
    predict, infer = object(), object()
    routes = [("/v1/models/{m}/predict", predict), ("/v2/models/{m}/infer", infer),
              ("/v2/models/{m}/versions/{v}/infer", infer)]
    fast = hot_routes.FastPath(routes, None, 1024, cors=False)
    scope = _scope("POST", "/v2/models/tiny/versions/1/infer")
    assert fast.match(scope) is infer and scope["path_params"] == {"m": "tiny", "v": "1"}
    scope = _scope("POST", "/v1/models/tiny/predict", [(b"origin", ORIGIN.encode())])
    assert fast.match(scope) is predict and scope["path_params"] == {"m": "tiny"}  # CORS off: Origin changes nothing
    for scope in (_scope("GET", "/v1/models/tiny/predict"), _scope("POST", "/v1/models/tiny/predict/"),
                  _scope("POST", "/v1/models/a/b/predict"), _scope("POST", "/v2/models/tiny/ready"),
                  _scope("POST", "/v1/models/tiny/predict", root_path="/api"),
                  {**_scope("POST", "/v1/models/tiny/predict"), "type": "websocket"}):
        assert fast.match(scope) is None, scope
    with_cors = hot_routes.FastPath(routes, None, 1024, cors=True)
    assert with_cors.match(_scope("POST", "/v1/models/tiny/predict")) is predict
    assert with_cors.match(_scope("POST", "/v1/models/tiny/predict", [(b"origin", ORIGIN.encode())])) is None


@pytest.fixture(scope="module")
def images(tiny_data) -> list[bytes]:
    return [p.read_bytes() for p in sorted((tiny_data / "images" / "test").glob("*.png"))[:2]]


def _binary_infer(rows: int) -> tuple[bytes, dict]:
    x = np.random.default_rng(rows).standard_normal((rows, 3, 64, 64)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def _requests(images: list[bytes]) -> list[tuple[str, str, dict]]:
    """(name, path, httpx.post keyword arguments) of answers and failures of both hot routes; ``chunks``:
    that many 512 KiB chunks, sent chunked."""
    key = bearer(KEYS[0])
    binary, binary_headers = _binary_infer(2)
    tensor = {"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.5] * (3 * 64 * 64)}
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
    return [
        ("predict", "/v1/models/tiny/predict?top_k=3", {"content": images[0], "headers": key}),
        ("predict, a form", "/v1/models/tiny/predict", {"files": files, "headers": key}),
        ("predict, drawn", "/v1/models/tiny/predict?draw=1", {"content": images[0], "headers": key}),
        ("predict, bad option", "/v1/models/tiny/predict?top_k=0", {"content": images[0], "headers": key}),
        ("predict, empty", "/v1/models/tiny/predict", {"content": b"", "headers": key}),
        ("predict, not an image", "/v1/models/tiny/predict", {"content": b"GIF89a nope", "headers": key}),
        ("predict, unknown model", "/v1/models/nope/predict", {"content": images[0], "headers": key}),
        ("predict, no key", "/v1/models/tiny/predict", {"content": images[0]}),
        ("predict, wrong key", "/v1/models/tiny/predict", {"content": images[0], "headers": bearer(KEYS[0] + "x")}),
        ("predict, declared too large", "/v1/models/tiny/predict", {"content": b"\0" * (2**20 + 1), "headers": key}),
        ("predict, streamed too large", "/v1/models/tiny/predict", {"chunks": 3, "headers": key}),
        ("infer, binary", "/v2/models/tiny/infer", {"content": binary, "headers": {**key, **binary_headers}}),
        ("infer, JSON", "/v2/models/tiny/versions/1/infer", {"json": {"inputs": [tensor]}, "headers": key}),
        ("infer, malformed", "/v2/models/tiny/infer", {"content": b'{"inputs": [}', "headers": key}),
        ("infer, version 7", "/v2/models/tiny/versions/7/infer", {"json": {"inputs": [tensor]}, "headers": key}),
        ("infer, malformed key", "/v2/models/tiny/infer", {"json": {"inputs": [tensor]},
                                                            "headers": {"Authorization": KEYS[0]}}),
    ]


def _post(client: httpx.Client, url: str, kwargs: dict) -> httpx.Response:
    if "chunks" in kwargs:
        chunks = [b"\0" * 2**19] * kwargs["chunks"]
        kwargs = {**{k: v for k, v in kwargs.items() if k != "chunks"}, "content": iter(chunks)}
    return client.post(url, **kwargs)


def _bad_input(url: str) -> float:
    """``visionrt_request_failure_total{reason="bad_input"}`` of the model (read with a key)."""
    text = httpx.get(f"{url}/metrics", headers=bearer(KEYS[0])).text
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == "visionrt_request_failure_total" and s.labels == {"model": "tiny", "reason": "bad_input"})


def _comparable(response: httpx.Response) -> tuple:
    content, headers = response.content, {name: response.headers.get(name) for name in COMPARED}
    if response.headers.get("content-type") == "application/json" and response.status_code == 200 \
            and b'"timing_ms"' in content:  # predict's timings (and so its length) differ from run to run
        content = response.json()
        del content["timing_ms"], headers["content-length"]
    return response.status_code, content, headers


def test_fast_path_and_framework_answer_alike(tiny_model_dir, images, tmp_path, monkeypatch):
    """Each request twice: without ``Origin`` (the fast path, counted) and with it (CORS on: the
    framework's middleware and router); the answers and the metrics they move agree."""
    answered = []
    answer = hot_routes.FastPath.answer

    async def counted(self, endpoint, scope, receive, send):
        answered.append(scope["path"])
        await answer(self, endpoint, scope, receive, send)

    monkeypatch.setattr(hot_routes.FastPath, "answer", counted)
    key_file = write_keys(tmp_path / "keys.txt", *KEYS)
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), max_body_mb=1, api_key_file=str(key_file),
                 cors_origins=(ORIGIN,)) as url, httpx.Client() as client:
        failures = {}
        for name, path, kwargs in _requests(images):
            before = auth_failures(url), _bad_input(url)
            count = len(answered)
            fast = _post(client, url + path, kwargs)
            assert len(answered) == count + 1, f"{name}: not answered by the fast path"
            framework = _post(client, url + path, {**kwargs, "headers": {**kwargs.get("headers", {}), "Origin": ORIGIN}})
            assert len(answered) == count + 1, f"{name}: the request with an Origin took the fast path"
            assert framework.headers.get("access-control-allow-origin") == ORIGIN, name
            assert _comparable(fast) == _comparable(framework), name
            failures[name] = fast.status_code
            after = auth_failures(url), _bad_input(url)
            if "key" in name:  # each refusal counted once per path, by its reason
                moved = {reason: after[0][reason] - before[0][reason] for reason in after[0]}
                assert sorted(v for v in moved.values() if v) == [2.0], (name, moved)
            elif fast.status_code == 400:
                assert after[1] - before[1] == 2.0, name
    assert failures == {
        "predict": 200, "predict, a form": 200, "predict, drawn": 200, "predict, bad option": 400,
        "predict, empty": 400, "predict, not an image": 400, "predict, unknown model": 404, "predict, no key": 401,
        "predict, wrong key": 401, "predict, declared too large": 413, "predict, streamed too large": 413,
        "infer, binary": 200, "infer, JSON": 200, "infer, malformed": 400, "infer, version 7": 404,
        "infer, malformed key": 401}


@pytest.mark.slow  # waits out a slowed model (~4 s)
def test_a_client_leaving_while_its_request_waits_is_counted(tiny_model_dir, images):
    """A full request whose client goes away while the model runs (longer than the watch's delay):
    ``disconnected`` counted while the execution still runs, and the server goes on serving."""
    with running(slowed(ModelRepository.load([f"tiny={tiny_model_dir}"]), 2.0)) as url:
        before = metric(url, "visionrt_request_failure_total", model="tiny", reason="disconnected")
        host, port = url.removeprefix("http://").split(":")
        started = time.monotonic()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(images[0]) + images[0])
            time.sleep(hot_routes.DISCONNECT_POLL_S + 0.1)
        while metric(url, "visionrt_request_failure_total", model="tiny", reason="disconnected") == before:
            assert time.monotonic() - started < 10, "the disconnect was never counted"
            time.sleep(0.05)
        assert time.monotonic() - started < 2.0  # noticed before the execution ended
        assert httpx.post(f"{url}/v1/models/tiny/predict", content=images[0], timeout=30).status_code == 200
