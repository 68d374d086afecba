"""`visionrt serve --workers N`: processes sharing one port (both serve), metrics summed across
them, SIGTERM drains every worker (requests in flight finish), every worker asks for the API key,
thread defaults, a bad model directory stops before any worker starts."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import require_or_skip  # noqa: E402

require_or_skip("fastapi")
httpx = require_or_skip("httpx")
from test_server import metric  # noqa: E402

from visionrt.runtime.server import workers  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def partial_request(port: int, image: bytes) -> socket.socket:
    """A connection holding a predict request whose body is half sent."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(image)}\r\n\r\n").encode()
    sock.sendall(head + image[:len(image) // 2])
    return sock


def finish(sock: socket.socket, image: bytes) -> tuple[int, str]:
    """Send the rest of the body; the response's status and ``X-Visionrt-Worker``."""
    sock.sendall(image[len(image) // 2:])
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    sock.close()
    return int(head[0].split()[1]), headers.get("x-visionrt-worker")


@contextlib.contextmanager
def two_workers(model_dir, tmp_path, *options: str):
    """``visionrt serve tiny=MODEL --workers 2 OPTIONS`` on a free port (temporary files in
    ``tmp_path``), once ready: ``(process, port)``; killed at the end if still running."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "visionrt.runtime.server", f"tiny={model_dir}",
                                "--port", str(port), "--workers", "2", *options], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert len(list(tmp_path.glob("visionrt-metrics-*"))) <= 1
        for _ in range(600):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.1)
        yield process, port
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def test_two_workers_share_the_port_sum_metrics_and_drain_on_sigterm(tiny_model_dir, tiny_data, tmp_path):
    image = sorted((tiny_data / "images" / "test").glob("*.png"))[0].read_bytes()
    with two_workers(tiny_model_dir, tmp_path) as (process, port):
        url = f"http://127.0.0.1:{port}"
        # both workers answer: fresh connections until each pid was seen (the kernel spreads them)
        pids, sent = set(), 0
        while len(pids) < 2 and sent < 400:
            with httpx.Client() as client:
                response = client.post(f"{url}/v1/models/tiny/predict", content=image)
            assert response.status_code == 200, response.text
            pids.add(response.headers["x-visionrt-worker"])
            sent += 1
        assert len(pids) == 2, f"one worker answered all {sent} requests"
        # whichever worker answers /metrics and /stats counts every worker's requests
        for _ in range(4):
            with httpx.Client() as client:
                assert metric(url, "visionrt_request_success_total", model="tiny") == sent
                stats = client.get(f"{url}/v2/models/tiny/stats").json()["model_stats"][0]
                assert stats["inference_count"] == sent
        # requests in flight on many connections (so on both workers), then SIGTERM to the parent
        held = [partial_request(port, image) for _ in range(16)]
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        answers = [finish(sock, image) for sock in held]
        assert [status for status, _ in answers] == [200] * len(held)
        assert {pid for _, pid in answers} == pids
        assert process.wait(60) == 0, process.stdout.read().decode()[-3000:]
        assert not list(tmp_path.glob("visionrt-metrics-*"))  # the metrics folder is removed


def test_every_worker_asks_for_the_key(tiny_model_dir, tiny_data, tmp_path):
    """``--workers 2 --api-key-file``: each worker answers 401 without the key (to predict and to
    /metrics) and serves with it."""
    image = sorted((tiny_data / "images" / "test").glob("*.png"))[0].read_bytes()
    key = "workers-test-key-" + "k" * 20
    (tmp_path / "keys.txt").write_text(key + "\n")
    with two_workers(tiny_model_dir, tmp_path, "--api-key-file", str(tmp_path / "keys.txt")) as (process, port):
        url = f"http://127.0.0.1:{port}"
        refused, served, sent = set(), set(), 0
        while (len(refused) < 2 or len(served) < 2) and sent < 400:
            with httpx.Client() as client:  # a fresh connection each time: the kernel spreads them
                without = client.post(f"{url}/v1/models/tiny/predict", content=image)
            with httpx.Client(headers={"authorization": f"Bearer {key}"}) as client:
                with_key = client.post(f"{url}/v1/models/tiny/predict", content=image)
                assert client.get(f"{url}/metrics").status_code == 200
            assert without.status_code == 401 and without.headers["www-authenticate"].startswith("Bearer")
            assert with_key.status_code == 200, with_key.text
            refused.add(without.headers["x-visionrt-worker"])
            served.add(with_key.headers["x-visionrt-worker"])
            sent += 1
        assert len(refused) == 2 and refused == served, f"{sent} pairs of requests: {refused} / {served}"
        assert httpx.get(f"{url}/metrics").status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stdout.read().decode()[-3000:]


def test_a_bad_model_directory_fails_before_any_worker(tmp_path):
    result = subprocess.run([sys.executable, "-m", "visionrt.runtime.server", str(tmp_path / "missing"),
                             "--port", str(free_port()), "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "does not exist" in result.stderr
    assert "worker" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_default_threads_keep_workers_times_threads_within_the_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert workers.default_threads(4, 1) == 4
    assert workers.default_threads(4, 2) == 2
    assert workers.default_threads(32, 1) == 1
