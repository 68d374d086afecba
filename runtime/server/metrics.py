"""Prometheus metrics of the server, per model (label ``model``), and the same numbers as JSON.

Names (the ``visionrt_`` counterparts of Triton's ``nv_inference_*``):

=========================================  ==========================================================
``visionrt_request_success_total``         requests answered 2xx (Triton: ``nv_inference_request_success``)
``visionrt_request_failure_total``         requests failed, label ``reason``: ``bad_input`` (400),
                                           ``too_large`` (413), ``queue_full`` (503), ``timeout`` (504),
                                           ``disconnected``, ``internal`` (500)
``visionrt_inference_count_total``         images inferred (Triton: ``nv_inference_count``)
``visionrt_execution_count_total``         model executions, i.e. batches (``nv_inference_exec_count``)
``visionrt_pending_requests``              items queued, not yet executing (``nv_inference_pending_request_count``)
``visionrt_queue_seconds``                 histogram: time an item waited in the batcher's queue
``visionrt_compute_seconds``               histogram: time of one model execution (one batch)
``visionrt_request_seconds``               histogram: end-to-end time of a successful request
``visionrt_batch_size``                    histogram: images per execution (merged batches are > 1)
``visionrt_auth_failure_total``            requests refused for want of a valid API key (no ``model``
                                           label), label ``reason``: ``missing``, ``malformed``, ``wrong``
                                           (registered by :mod:`.auth` with ``--api-key-file`` only)
=========================================  ==========================================================

inference count / execution count is the mean batch size.

With ``serve --workers N`` every worker process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode, set up by :mod:`.workers`)
and :meth:`ServerMetrics.collected` sums them, so ``/metrics`` and ``/stats`` show the whole server
whichever worker answers (``visionrt_pending_requests``: the sum over live workers).
"""
from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

_TIME_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
FAILURE_REASONS = ("bad_input", "too_large", "queue_full", "timeout", "disconnected", "internal")


class ServerMetrics:
    """All metrics of one server in their own registry (several servers in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.success = Counter("visionrt_request_success", "Successful requests", ["model"], registry=r)
        self.failure = Counter("visionrt_request_failure", "Failed requests by reason", ["model", "reason"],
                               registry=r)
        self.inferences = Counter("visionrt_inference_count", "Images inferred", ["model"], registry=r)
        self.executions = Counter("visionrt_execution_count", "Model executions (batches)", ["model"], registry=r)
        self.pending = Gauge("visionrt_pending_requests", "Items queued for execution", ["model"], registry=r,
                             multiprocess_mode="livesum")
        self.queue = Histogram("visionrt_queue_seconds", "Time in the batcher's queue", ["model"],
                               buckets=_TIME_BUCKETS, registry=r)
        self.compute = Histogram("visionrt_compute_seconds", "Time of one model execution", ["model"],
                                 buckets=_TIME_BUCKETS, registry=r)
        self.request = Histogram("visionrt_request_seconds", "End-to-end time of successful requests", ["model"],
                                 buckets=_TIME_BUCKETS, registry=r)
        self.batch_size = Histogram("visionrt_batch_size", "Images per model execution", ["model"],
                                    buckets=_BATCH_BUCKETS, registry=r)

    def model(self, name: str) -> "ModelMetrics":
        return ModelMetrics(self, name)

    def collected(self) -> CollectorRegistry:
        """The registry to report: this one, or with ``--workers`` every worker's values summed."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.registry
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def stats(self, name: str) -> dict[str, Any]:
        """``/v2/models/{name}/stats``: the same numbers as ``/metrics``, Triton-shaped where Triton has them
        (durations in ns)."""
        registry = self.collected()

        def value(metric: str, **labels: str) -> float:
            return registry.get_sample_value(metric, {"model": name, **labels}) or 0.0

        def timing(histogram: str) -> dict[str, int]:
            return {"count": int(value(f"{histogram}_count")), "ns": int(value(f"{histogram}_sum") * 1e9)}

        return {"model_stats": [{
            "name": name, "version": "1",
            "inference_count": int(value("visionrt_inference_count_total")),
            "execution_count": int(value("visionrt_execution_count_total")),
            "pending_requests": int(value("visionrt_pending_requests")),
            "inference_stats": {
                "success": timing("visionrt_request_seconds"),
                "fail": {reason: int(value("visionrt_request_failure_total", reason=reason))
                         for reason in FAILURE_REASONS},
                "queue": timing("visionrt_queue_seconds"),
                "compute_infer": timing("visionrt_compute_seconds"),
            },
            "batch_size": {
                "count": int(value("visionrt_batch_size_count")),
                "sum": int(value("visionrt_batch_size_sum")),
                "at_most": {str(b): int(value("visionrt_batch_size_bucket", le=str(float(b))))
                            for b in _BATCH_BUCKETS},
            },
        }]}


class ModelMetrics:
    """The metrics of one model, as the batcher and the routes report them."""

    def __init__(self, metrics: ServerMetrics, name: str):
        self.name = name
        self._success = metrics.success.labels(name)
        self._request = metrics.request.labels(name)
        self._failure = {reason: metrics.failure.labels(name, reason) for reason in FAILURE_REASONS}
        self._inferences = metrics.inferences.labels(name)
        self._executions = metrics.executions.labels(name)
        self._pending = metrics.pending.labels(name)
        self._queue = metrics.queue.labels(name)
        self._compute = metrics.compute.labels(name)
        self._batch_size = metrics.batch_size.labels(name)

    def succeeded(self, seconds: float) -> None:
        self._success.inc()
        self._request.observe(seconds)

    def failed(self, reason: str) -> None:
        self._failure[reason].inc()

    def executed(self, images: int, seconds: float) -> None:
        self._executions.inc()
        self._inferences.inc(images)
        self._batch_size.observe(images)
        self._compute.observe(seconds)

    def dequeued(self, waited_seconds: list[float]) -> None:
        """The items of one execution left the queue, each after ``waited_seconds[i]``."""
        observe = self._queue.observe
        for seconds in waited_seconds:
            observe(seconds)

    def queue_length(self, items: int) -> None:
        self._pending.set(items)
