"""Who may use the server (issue 21, section 1): API keys on every route but health and the page
(missing, malformed, wrong, another length, the right one of a multi-key file), refusals counted
by reason, the comparison over all keys, key rotation (fail closed), public metrics, CORS, the
warning of an exposed server, the one-line start-up errors, HTTPS with a self-signed certificate
through ``tritonclient.http`` against a real ``visionrt serve`` process, the same keys on gRPC,
and ``visionrt loadtest`` with a key."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_extra, require_or_skip

require_or_skip("fastapi")
httpx = require_or_skip("httpx")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from test_server import running  # noqa: E402

from visionrt.benchmarks.loadtest import LoadSettings, run_loadtest  # noqa: E402
from visionrt.runtime import Predictor  # noqa: E402
from visionrt.runtime.errors import InputError  # noqa: E402
from visionrt.runtime.server import auth  # noqa: E402
from visionrt.runtime.server.repository import ModelRepository  # noqa: E402

KEYS = ["first-key-0123456789abcdefXYZ", "second-key-q9P2vW7zL4mN8rT1uK"]
HAS_GRPC = importlib.util.find_spec("grpc") is not None and importlib.util.find_spec("tritonclient.grpc") is not None


def write_keys(path: Path, *keys: str) -> Path:
    """``keys`` one a line, with a comment and blank lines; replaced atomically, as a rotation should be."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# visionrt API keys\n\n" + "".join(f"  {key}\n\n" for key in keys))
    os.replace(tmp, path)
    return path


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def auth_failures(url: str, client=httpx) -> dict[str, float]:
    """``visionrt_auth_failure_total`` by reason (read with a key)."""
    text = client.get(f"{url}/metrics", headers=bearer(KEYS[0])).text
    return {s.labels["reason"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "visionrt_auth_failure_total"}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    return write_keys(tmp_path_factory.mktemp("keys") / "keys.txt", *KEYS)


@pytest.fixture(scope="module")
def image(tiny_data) -> bytes:
    return sorted((tiny_data / "images" / "test").glob("*.png"))[0].read_bytes()


@pytest.fixture(scope="module")
def keyed(tiny_model_dir, key_file):
    """(URL, gRPC address or None) of a server that wants a key (gRPC beside HTTP where installed)."""
    grpc_address = f"127.0.0.1:{free_port()}" if HAS_GRPC else None
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), api_key_file=str(key_file),
                 grpc_address=grpc_address) as url:
        yield url, grpc_address


@pytest.fixture(scope="module")
def client():
    """One connection pool for the many small requests of the route tests."""
    with httpx.Client() as client:
        yield client


def _infer_body() -> dict:
    return {"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * (3 * 64 * 64)}]}


# (method, path, status with a right key)
PROTECTED = [
    ("GET", "/v2", 200), ("GET", "/v2/models/tiny", 200), ("GET", "/v2/models/tiny/versions/1", 200),
    ("GET", "/v2/models/tiny/ready", 200), ("GET", "/v2/models/tiny/config", 200),
    ("GET", "/v2/models/tiny/stats", 200), ("GET", "/v2/models/tiny/versions/1/stats", 200),
    ("POST", "/v2/models/tiny/infer", 200), ("POST", "/v2/models/tiny/versions/1/infer", 200),
    ("GET", "/v1/models", 200), ("POST", "/v1/models/tiny/predict", 200), ("GET", "/metrics", 200),
    ("GET", "/v2/models/nope", 404), ("GET", "/no/such/route", 404),
]
REFUSED = [  # (Authorization header values, reason)
    ([], "missing"),
    (["Basic " + KEYS[0]], "malformed"),
    (["Bearer"], "malformed"),
    ([KEYS[0]], "malformed"),
    (["Bearer " + KEYS[0], "Bearer " + KEYS[1]], "malformed"),  # two headers
    (["Bearer " + KEYS[0][:-1] + "Q"], "wrong"),  # same length, last character differs
    (["Bearer " + KEYS[0][:-1]], "wrong"),  # a prefix of a key: another length
    (["Bearer " + KEYS[0] + KEYS[1]], "wrong"),  # longer than any key
    (["Bearer " + KEYS[0].upper()], "wrong"),
]


def request(client: httpx.Client, url: str, method: str, path: str, image: bytes,
            headers: list[tuple[str, str]]) -> httpx.Response:
    if path.endswith("/infer"):
        return client.post(url + path, json=_infer_body(), headers=headers)
    if path.endswith("/predict"):
        return client.post(url + path, content=image, headers=headers)
    return client.request(method, url + path, headers=headers)


@pytest.mark.parametrize("method, path, status", PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_every_route_wants_a_key(keyed, client, image, method, path, status):
    url, _ = keyed
    before = auth_failures(url, client)
    for values, reason in REFUSED:
        response = request(client, url, method, path, image, [("Authorization", value) for value in values])
        assert response.status_code == 401, (values, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=\"visionrt\"")
        assert ("invalid_token" in response.headers["WWW-Authenticate"]) == (reason == "wrong")
        error = response.json()["error"]
        assert "Authorization: Bearer <key>" in error and KEYS[0][:12] not in error
    after = auth_failures(url, client)
    counted = {reason: after[reason] - before[reason] for reason in auth.FAILURE_REASONS}
    assert counted == {reason: sum(r == reason for _, r in REFUSED) for reason in auth.FAILURE_REASONS}
    for key in KEYS:  # either key of the file; a scheme in any case
        for scheme in ("Bearer", "bearer"):
            response = request(client, url, method, path, image, [("Authorization", f"{scheme} {key}")])
            assert response.status_code == status, response.text
    assert auth_failures(url, client) == after


def test_health_and_the_page_need_no_key(keyed):
    url, _ = keyed
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and 'id="key-form"' in page.text  # the page asks for the key itself
    assert httpx.get(f"{url}/v2/health/live/x").status_code == 401  # only the exact paths are open


def test_the_key_is_compared_with_every_key_in_constant_time(tmp_path, monkeypatch):
    """Fixed-length digests, each compared, whichever key matches (no early exit)."""
    keys = auth.KeyFile(write_keys(tmp_path / "keys.txt", *KEYS, "third-key-" + "z" * 30))
    calls = []

    def compare(a, b):
        calls.append((len(a), len(b)))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", compare)
    for presented, expected in ((KEYS[0], True), (KEYS[1], True), ("x", False), ("y" * 500, False)):
        calls.clear()
        assert keys.matches(presented.encode()) is expected
        assert calls == [(32, 32)] * 3


def test_keys_rotate_without_a_restart_and_an_emptied_file_lets_no_one_in(tiny_model_dir, tmp_path, monkeypatch,
                                                                         caplog):
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    path = write_keys(tmp_path / "keys.txt", KEYS[0])
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), api_key_file=str(path)) as url:
        def status(key: str) -> int:
            return httpx.get(f"{url}/v1/models", headers=bearer(key)).status_code

        assert (status(KEYS[0]), status(KEYS[1])) == (200, 401)
        write_keys(path, KEYS[0], KEYS[1])  # the new key added beside the old one
        assert (status(KEYS[0]), status(KEYS[1])) == (200, 200)
        write_keys(path, KEYS[1])  # the old one retired
        assert (status(KEYS[0]), status(KEYS[1])) == (401, 200)
        with caplog.at_level(logging.WARNING, logger=auth.__name__):
            write_keys(path)  # emptied: fail closed
            assert (status(KEYS[0]), status(KEYS[1])) == (401, 401)
            path.unlink()
            assert status(KEYS[1]) == 401
        assert any("holds no key" in r.getMessage() for r in caplog.records)
        assert any("cannot read" in r.getMessage() for r in caplog.records)
        write_keys(path, KEYS[1])
        assert status(KEYS[1]) == 200
        assert not any(key in caplog.text for key in KEYS)


def test_public_metrics_and_cors(tiny_model_dir, key_file):
    origin = "https://app.example.com"
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), api_key_file=str(key_file),
                 public_metrics=True, cors_origins=(origin,)) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200
        assert httpx.get(f"{url}/v2/models/tiny/stats").json()["model_stats"][0]["name"] == "tiny"
        assert httpx.get(f"{url}/v2/models/tiny/versions/1/stats").status_code == 200
        assert httpx.get(f"{url}/v2/models/tiny").status_code == 401  # the rest still wants the key
        preflight = httpx.options(f"{url}/v1/models", headers={
            "Origin": origin, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200  # a browser's preflight carries no key
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        answer = httpx.get(f"{url}/v1/models", headers={"Origin": origin, **bearer(KEYS[0])})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
        refused = httpx.get(f"{url}/v1/models", headers={"Origin": origin})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin
        other = httpx.get(f"{url}/v1/models", headers={"Origin": "https://evil.example", **bearer(KEYS[0])})
        assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(keyed):
    url, _ = keyed
    answer = httpx.get(f"{url}/v1/models", headers={"Origin": "https://app.example.com", **bearer(KEYS[0])})
    assert answer.status_code == 200
    assert not any(name.startswith("access-control-") for name in answer.headers)
    preflight = httpx.options(f"{url}/v1/models", headers={"Origin": "https://app.example.com",
                                                           "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in preflight.headers


@needs_extra(HAS_GRPC, "needs the grpc extra")
def test_grpc_wants_the_same_keys(keyed):
    import tritonclient.grpc as triton_grpc

    url, address = keyed
    client = triton_grpc.InferenceServerClient(address)
    try:
        assert client.is_server_live() and client.is_server_ready()  # health is open, as on HTTP
        before = auth_failures(url)
        for headers in ({}, {"authorization": "Basic x"}, {"authorization": "Bearer " + KEYS[0][:-1]}):
            with pytest.raises(triton_grpc.InferenceServerException, match="API key|Authorization") as caught:
                client.get_model_metadata("tiny", headers=headers)
            assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        after = auth_failures(url)
        assert {r: after[r] - before[r] for r in auth.FAILURE_REASONS} == {"missing": 1, "malformed": 1, "wrong": 1}
        for key in KEYS:
            assert client.get_model_metadata("tiny", headers={"authorization": f"Bearer {key}"}).name == "tiny"
        x = np.zeros((1, 3, 64, 64), np.float32)
        tensor = triton_grpc.InferInput("images", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("tiny", [tensor], headers={"authorization": f"Bearer {KEYS[1]}"})
        assert result.as_numpy("logits").shape == (1, 10)
    finally:
        client.close()


@needs_extra(HAS_GRPC, "needs the grpc extra")
def test_grpc_is_tls_when_http_is(tiny_model_dir, key_file, certificate):
    import tritonclient.grpc as triton_grpc

    cert, key = certificate
    address = f"127.0.0.1:{free_port()}"
    with running(ModelRepository.load([f"tiny={tiny_model_dir}"]), api_key_file=str(key_file), grpc_address=address,
                 ssl_certfile=str(cert), ssl_keyfile=str(key)):
        client = triton_grpc.InferenceServerClient(address, ssl=True, root_certificates=str(cert))
        plain = triton_grpc.InferenceServerClient(address)
        try:
            assert client.is_server_live()
            assert client.get_model_metadata("tiny", headers={"authorization": f"Bearer {KEYS[0]}"}).name == "tiny"
            with pytest.raises(triton_grpc.InferenceServerException, match="API key"):
                client.get_model_metadata("tiny")
            with pytest.raises(triton_grpc.InferenceServerException):
                plain.is_server_live(client_timeout=5)  # no plaintext gRPC beside TLS
        finally:
            client.close()
            plain.close()


# the command line ------------------------------------------------------------------------------
def serve_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "visionrt.runtime.cli", "serve", *args], capture_output=True,
                          text=True, timeout=120)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (openssl CLI; `cryptography` is not a
    dependency)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    if not __import__("shutil").which("openssl"):
        pytest.skip("needs the openssl command to make a certificate")
    return self_signed(tmp_path_factory.mktemp("tls"))


def test_bad_access_options_are_one_line_errors(tmp_path, certificate):
    """Each refused before any model loads; through the command line: one line, exit status 2."""
    cert, key = certificate
    (tmp_path / "empty.txt").write_text("# no keys yet\n\n")
    (tmp_path / "keys2.txt").write_text(f"{KEYS[0]}\ntiny1\n")
    (tmp_path / "keys3.txt").write_text("two words in one line\n")
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    cases = [  # (api key file, certfile, keyfile, origin), words
        ((tmp_path / "missing.txt", None, None, None), "cannot read the API key file"),
        ((tmp_path / "empty.txt", None, None, None), "holds no key"),
        ((tmp_path, None, None, None), "not a regular file"),
        ((tmp_path / "keys2.txt", None, None, None), "line 2"),
        ((tmp_path / "keys3.txt", None, None, None), "line 1"),
        ((None, tmp_path / "missing.pem", None, None), "No such file"),
        ((None, tmp_path / "garbage.pem", key, None), "not a PEM certificate"),
        ((None, cert, None, None), "no unencrypted private key"),  # the key is not in the certificate file
        ((None, cert, cert, None), "no unencrypted private key"),
        ((None, None, key, None), "without --ssl-certfile"),
        ((None, None, None, "https://app.example.com/path"), "not an origin"),
    ]
    for (keys, certfile, keyfile, origin), words in cases:
        with pytest.raises(InputError, match=words) as caught:
            auth.check_access("127.0.0.1", 8000, keys and str(keys), certfile and str(certfile),
                              keyfile and str(keyfile), [origin] if origin else [])
        assert "tiny1" not in str(caught.value) and "two words" not in str(caught.value)  # never a key's text
    for args, words in ((["--api-key-file", str(tmp_path / "empty.txt")], "holds no key"),
                        (["--ssl-certfile", str(cert), "--ssl-keyfile", str(cert)], "no unencrypted private key")):
        result = serve_cli(str(tmp_path / "no-model"), *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr


def test_check_access_warns_once_for_an_exposed_server_without_a_key(key_file, caplog):
    cases = [("0.0.0.0", None, True), ("::", None, True), ("0.0.0.0", str(key_file), False),
             ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False)]
    for host, keys, warned in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=auth.__name__):
            auth.check_access(host, 8000, keys, None, None, [])
        assert len(caplog.records) == int(warned), (host, caplog.records)
    with pytest.raises(InputError, match="line 3"):
        auth.read_keys(write_keys(key_file.parent / "bad.txt", "ä" * 20))


@contextlib.contextmanager
def serve_process(*args: str):
    """``python -m visionrt.runtime.server ARGS`` until uvicorn says it runs; yields the output lines
    so far (a list that keeps growing); SIGTERM at the end (exit status 0 asserted)."""
    process = subprocess.Popen([sys.executable, "-m", "visionrt.runtime.server", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    arrived: queue.Queue = queue.Queue()

    def read():
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            arrived.put(line)
        arrived.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        while (line := arrived.get(timeout=120)) is not None and "Uvicorn running on" not in line:
            pass
        assert line is not None, "\n".join(lines)
        yield lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, "\n".join(lines)
    finally:
        process.kill()


def test_exposed_server_without_a_key_warns_in_one_line(tiny_model_dir):
    port = free_port("0.0.0.0")
    with serve_process(f"tiny={tiny_model_dir}", "--host", "0.0.0.0", "--port", str(port)) as lines:
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200  # no key: anyone
    warnings = [line for line in lines if "without --api-key-file" in line]
    assert len(warnings) == 1 and f"0.0.0.0:{port}" in warnings[0], lines


def test_https_round_trip_with_tritonclient(tiny_model_dir, tiny_data, key_file, certificate, image):
    """A real ``visionrt serve`` on 0.0.0.0 with keys and TLS (so no warning): tritonclient.http
    over HTTPS, verifying the self-signed certificate; plain HTTP is refused; loadtest with the key
    and the certificate; no key in the log."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    cert, key = certificate
    port = free_port("0.0.0.0")
    with serve_process(f"tiny={tiny_model_dir}", "--host", "0.0.0.0", "--port", str(port), "--access-log",
                       "--api-key-file", str(key_file), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)) as lines:
        assert any(f"https://0.0.0.0:{port}" in line for line in lines), lines
        client = triton.InferenceServerClient(f"127.0.0.1:{port}", ssl=True, ssl_options={"ca_certs": str(cert)})
        try:
            assert client.is_server_live() and client.is_server_ready()
            with pytest.raises(InferenceServerException, match="API key"):
                client.get_model_metadata("tiny")
            with pytest.raises(InferenceServerException, match="not valid"):
                client.get_model_metadata("tiny", headers=bearer(KEYS[0][::-1]))
            assert client.get_model_metadata("tiny", headers=bearer(KEYS[1]))["name"] == "tiny"
            x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
            tensor = triton.InferInput("images", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            result = client.infer("tiny", [tensor], headers=bearer(KEYS[0]))
            with Predictor(tiny_model_dir) as predictor:
                np.testing.assert_array_equal(result.as_numpy("logits"), predictor.infer(x)["logits"])
        finally:
            client.close()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/v2/health/live")  # TLS only
        answer = httpx.post(f"https://127.0.0.1:{port}/v1/models/tiny/predict", content=image,
                            headers=bearer(KEYS[0]), verify=ssl.create_default_context(cafile=str(cert)))
        assert answer.status_code == 200, answer.text
        settings = LoadSettings(f"https://127.0.0.1:{port}", "tiny", concurrency=(1,), duration_s=0.3, warmup_s=0,
                                api_key_file=str(key_file), cacert=str(cert))
        level = run_loadtest(settings, tiny_data / "images" / "test")[0]
        assert level.errors == {} and level.images > 0 and level.server["images"] == level.images
    assert not any("without --api-key-file" in line for line in lines), lines
    assert any("POST /v2/models/tiny/infer" in line for line in lines), lines  # the access log ran
    assert not any(k in line for line in lines for k in KEYS), lines


def test_loadtest_with_a_key(keyed, tiny_data, key_file, tmp_path):
    from visionrt.runtime.cli import build_parser

    url, _ = keyed
    common = ["loadtest", url, "--model", "tiny", "--images", str(tiny_data / "images" / "test"), "--concurrency", "2",
              "--duration", "0.5", "--warmup", "0", "--json"]
    for extra, out in (([], "without"), (["--api-key-file", str(key_file)], "with")):
        args = build_parser().parse_args([*common, *extra, "--out", str(tmp_path / out)])
        args.func(args)
    without = json.loads((tmp_path / "without" / "loadtest.json").read_text())["levels"][0]
    assert set(without["errors"]) == {"401"} and without["images"] == 0
    report = (tmp_path / "with" / "loadtest.json").read_text()
    level = json.loads(report)["levels"][0]
    assert level["errors"] == {} and level["images"] > 0
    assert level["server"]["images"] == level["images"]  # /metrics was scraped with the key
    assert not any(key in report for key in KEYS) and str(key_file) in report
