"""Drive an HTTP server with ``wrk`` (a C load generator; Debian's package, ``make wrk``), one
request body over and over, optionally pinned to given cores (``taskset``).

A Lua script sets the method, body and headers and prints wrk's summary as one JSON line; wrk's
own CPU time is read from the children's ``getrusage``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from visionrt.runtime.errors import BackendUnavailable, VisionRTError

from .loadtest import Payload

_MARK = "VISIONRT-WRK "
SCRIPT = """
local f = assert(io.open(os.getenv("VISIONRT_WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
for line in string.gmatch(os.getenv("VISIONRT_WRK_HEADERS") or "", "[^\\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end
done = function(summary, latency, requests)
  io.write(string.format('%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,'
    .. '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\\n', "MARK", summary.requests,
    summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
""".replace("MARK", _MARK)


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """One wrk run: requests answered, seconds, latency (ms), errors by kind (``status``: non-2xx),
    and wrk's own CPU seconds."""

    requests: int
    seconds: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    client_cpu_s: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def pinned(cores: str | None) -> list[str]:
    """The ``taskset -c CORES`` prefix of a command (nothing when ``cores`` is None)."""
    return ["taskset", "-c", cores] if cores else []


def wrk_executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BackendUnavailable("wrk is not installed", fix="make wrk (apt-get install wrk)")
    return found


def run_wrk(url: str, payload: Payload, connections: int, seconds: float, cores: str | None = None) -> WrkResult:
    """POST ``payload`` to ``url`` over ``connections`` keep-alive connections (one wrk thread) for ``seconds``."""
    exe = wrk_executable()
    with tempfile.TemporaryDirectory(prefix="visionrt-wrk-") as tmp:
        body, script = Path(tmp) / "body", Path(tmp) / "post.lua"
        body.write_bytes(payload.body)
        script.write_text(SCRIPT)
        env = {**os.environ, "VISIONRT_WRK_BODY": str(body),
               "VISIONRT_WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in payload.headers.items())}
        command = [*pinned(cores), exe, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s",
                   "-s", str(script), url]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith(_MARK)]
    if done.returncode != 0 or not lines:
        raise VisionRTError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
    summary: dict[str, Any] = json.loads(lines[-1][len(_MARK):])
    return WrkResult(requests=summary["requests"] - summary["status"], seconds=summary["duration_us"] / 1e6,
                     latency_ms={k: summary[f"{k}_us"] / 1e3 for k in ("p50", "p90", "p99", "mean")},
                     errors={k: summary[k] for k in ("connect", "read", "write", "status", "timeout") if summary[k]},
                     client_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))


def command_line(cores: str | None, connections: int, seconds: float, url: str) -> str:
    """The wrk command :func:`run_wrk` runs, for a report."""
    return " ".join([*pinned(cores), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", "post.lua", url])
