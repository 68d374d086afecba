"""The batcher on its own (no HTTP): deadlines (504 with its message, counted out of the queue),
cancellation freeing the queue slot, merged batches split back per request, a runner's error handed
to every request of its batch, and close() finishing what is queued and ending the threads."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from conftest import require_or_skip

require_or_skip("prometheus_client")

from visionrt.runtime.server.batcher import Batcher, DeadlineExceeded, QueueFull, Rows  # noqa: E402
from visionrt.runtime.server.metrics import ServerMetrics  # noqa: E402


class Runner:
    """``infer(rows) -> {"y": rows * 2}`` that records each batch's size and blocks while ``gate`` is clear."""

    def __init__(self):
        self.gate = threading.Event()
        self.gate.set()
        self.batches: list[int] = []

    def infer(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        self.gate.wait(10)
        self.batches.append(len(rows))
        return {"y": rows * 2}


def rows(value: float, n: int = 1) -> Rows:
    return Rows(np.full((n, 3, 2, 2), value, np.float32))


def sample(metrics: ServerMetrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"model": "m"}) or 0.0


async def started(runner: Runner, max_batch_size: int = 8, max_queue: int = 16):
    metrics = ServerMetrics()
    return Batcher([runner], max_batch_size, 0.05, max_queue, metrics.model("m")), metrics


async def busy(batcher: Batcher, runner: Runner) -> asyncio.Task:
    """Block the single instance on a first item; returns its task."""
    runner.gate.clear()
    first = asyncio.ensure_future(batcher.submit(rows(0), time.perf_counter() + 10))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if not batcher._queue:  # taken by the worker: the instance is busy
            return first
    raise AssertionError("the first item was never taken")


def test_deadline_answers_504_and_leaves_the_queue():
    async def scenario():
        runner = Runner()
        batcher, metrics = await started(runner)
        first = await busy(batcher, runner)
        with pytest.raises(DeadlineExceeded, match=r"no result within the deadline \(2 image\(s\)\)") as caught:
            await batcher.submit(rows(1, 2), time.perf_counter() + 0.05)
        assert "--timeout-s" in caught.value.fix
        assert not batcher._queue and sample(metrics, "visionrt_pending_requests") == 0
        runner.gate.set()
        (outputs, timing), = [await first]
        assert timing.batch_size == 1 and runner.batches == [1]  # the expired item never ran
        await batcher.close()
    asyncio.run(scenario())


def test_deadline_while_its_batch_runs_still_answers_504_and_the_batcher_goes_on():
    async def scenario():
        runner = Runner()
        batcher, _ = await started(runner)
        runner.gate.clear()
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(rows(1), time.perf_counter() + 0.05)
        runner.gate.set()
        outputs, _ = await batcher.submit(rows(3), time.perf_counter() + 10)
        np.testing.assert_array_equal(outputs["y"], rows(6).rows)
        await batcher.close()
    asyncio.run(scenario())


def test_a_past_deadline_expires_at_once():
    async def scenario():
        runner = Runner()
        batcher, _ = await started(runner)
        first = await busy(batcher, runner)
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(batcher.submit(rows(1), time.perf_counter() - 1), 1.0)
        runner.gate.set()
        await first
        await batcher.close()
    asyncio.run(scenario())


def test_cancelling_a_queued_request_frees_its_slot():
    async def scenario():
        runner = Runner()
        batcher, metrics = await started(runner, max_queue=1)
        first = await busy(batcher, runner)
        queued = asyncio.ensure_future(batcher.submit(rows(1), time.perf_counter() + 10))
        await asyncio.sleep(0.01)
        assert len(batcher._queue) == 1 and sample(metrics, "visionrt_pending_requests") == 1
        with pytest.raises(QueueFull):
            await batcher.submit(rows(2), time.perf_counter() + 10)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert not batcher._queue and sample(metrics, "visionrt_pending_requests") == 0
        again = asyncio.ensure_future(batcher.submit(rows(2), time.perf_counter() + 10))  # the slot is free
        runner.gate.set()
        await first
        outputs, _ = await again
        np.testing.assert_array_equal(outputs["y"], rows(4).rows)
        assert runner.batches == [1, 1]  # the cancelled item never ran
        await batcher.close()
    asyncio.run(scenario())


def test_cancelling_a_running_request_lets_its_batch_finish_for_the_others():
    async def scenario():
        runner = Runner()
        batcher, _ = await started(runner)
        first = await busy(batcher, runner)
        a = asyncio.ensure_future(batcher.submit(rows(1), time.perf_counter() + 10))
        b = asyncio.ensure_future(batcher.submit(rows(2), time.perf_counter() + 10))
        await asyncio.sleep(0.01)
        runner.gate.set()
        await first
        await asyncio.sleep(0)  # a and b are taken together now
        a.cancel()
        outputs, timing = await b
        np.testing.assert_array_equal(outputs["y"], rows(4).rows)
        assert a.cancelled()
        await batcher.close()
    asyncio.run(scenario())


def test_items_queued_while_busy_merge_and_split_back():
    async def scenario():
        runner = Runner()
        batcher, metrics = await started(runner, max_batch_size=4)
        first = await busy(batcher, runner)
        deadline = time.perf_counter() + 10
        waiting = [asyncio.ensure_future(batcher.submit(rows(i, n), deadline))
                   for i, n in [(1, 1), (2, 2), (3, 1), (4, 2)]]
        await asyncio.sleep(0.01)
        runner.gate.set()
        await first
        answers = await asyncio.gather(*waiting)
        for (i, n), (outputs, timing) in zip([(1, 1), (2, 2), (3, 1), (4, 2)], answers):
            np.testing.assert_array_equal(outputs["y"], rows(2 * i, n).rows)
        assert runner.batches == [1, 4, 2]
        assert [timing.batch_size for _, timing in answers] == [4, 4, 4, 2]
        assert sample(metrics, "visionrt_queue_seconds_count") == 5  # one observation per item
        assert sample(metrics, "visionrt_batch_size_sum") == 7 and sample(metrics, "visionrt_execution_count_total") == 3
        await batcher.close()
    asyncio.run(scenario())


def test_a_worker_that_comes_free_lets_the_loop_queue_what_its_answers_bring_back():
    """A client that asks again as soon as it is answered: its next request, queued an event-loop
    iteration after the answer, joins the batch of what was already waiting (no queue delay set)."""
    async def scenario():
        runner = Runner()
        batcher = Batcher([runner], 8, 0.0, 16)
        first = await busy(batcher, runner)
        deadline = time.perf_counter() + 10
        waiting = asyncio.ensure_future(batcher.submit(rows(1), deadline))

        async def client():
            await first
            return await batcher.submit(rows(2), deadline)

        again = asyncio.ensure_future(client())
        await asyncio.sleep(0.01)
        runner.gate.set()
        _, (two, _) = await asyncio.gather(waiting, again)
        np.testing.assert_array_equal(two["y"], rows(4).rows)
        assert runner.batches == [1, 2]
        await batcher.close()
    asyncio.run(scenario())


class Labelled:
    """Work of another key than rows: ``run`` answers each label, or fails that item alone on "bad"."""

    key = "labelled"

    def __init__(self, label: str):
        self.label, self.size = label, 1

    @staticmethod
    def run(instance, works):
        instance.infer(np.zeros((len(works), 3, 2, 2), np.float32))  # blocks while the gate is clear
        return [ValueError(f"{w.label} is refused") if w.label == "bad" else w.label.upper() for w in works]


def test_works_merge_by_key_and_an_item_can_fail_alone():
    """Queued rows and labelled work never share an execution; an exception returned for one item
    fails that request only."""
    async def scenario():
        runner = Runner()
        batcher, _ = await started(runner, max_batch_size=8)
        first = await busy(batcher, runner)
        deadline = time.perf_counter() + 10
        waiting = [asyncio.ensure_future(batcher.submit(work, deadline))
                   for work in (Labelled("a"), rows(1), Labelled("bad"), rows(2), Labelled("c"))]
        await asyncio.sleep(0.01)
        runner.gate.set()
        await first
        answers = await asyncio.gather(*waiting, return_exceptions=True)
        assert [answers[0][0], answers[4][0]] == ["A", "C"]
        assert isinstance(answers[2], ValueError) and "bad is refused" in str(answers[2])
        np.testing.assert_array_equal(answers[3][0]["y"], rows(4, 1).rows)
        assert runner.batches == [1, 3, 2]  # the first, then the labelled three, then the two rows
        assert [answers[i][1].batch_size for i in (0, 1, 4)] == [3, 2, 3]
        await batcher.close()
    asyncio.run(scenario())


def test_a_runner_error_reaches_every_request_of_its_batch():
    async def scenario():
        class Broken:
            def infer(self, batch: np.ndarray):
                raise RuntimeError(f"broken on {len(batch)} rows")
        batcher = Batcher([Broken()], 8, 0.05, 16)
        answers = await asyncio.gather(*[batcher.submit(rows(i), time.perf_counter() + 10) for i in range(3)],
                                       return_exceptions=True)
        assert all(isinstance(a, RuntimeError) and "broken on" in str(a) for a in answers)
        await batcher.close()
    asyncio.run(scenario())


def test_close_finishes_queued_work_and_ends_the_threads():
    async def scenario():
        runner = Runner()
        batcher, _ = await started(runner, max_batch_size=1)
        first = await busy(batcher, runner)
        queued = [asyncio.ensure_future(batcher.submit(rows(i), time.perf_counter() + 10)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        runner.gate.set()
        await closing
        assert [a[0]["y"][0, 0, 0, 0] for a in await asyncio.gather(first, *queued)] == [0, 2, 4]
        assert not any(t.name.startswith("visionrt-infer") for t in threading.enumerate())
    asyncio.run(scenario())


def test_close_joins_the_threads_off_the_event_loop():
    """A worker task cancelled while its thread runs a batch: close() waits for that thread without
    blocking the event loop."""
    async def scenario():
        runner = Runner()
        batcher, _ = await started(runner)
        first = await busy(batcher, runner)
        batcher._workers[0].cancel()
        closing = asyncio.ensure_future(batcher.close())
        before = time.perf_counter()
        await asyncio.sleep(0.05)  # runs while the thread is being joined
        assert time.perf_counter() - before < 2 and not closing.done()
        runner.gate.set()
        await closing
        first.cancel()
        assert not any(t.name.startswith("visionrt-infer") for t in threading.enumerate())
    asyncio.run(scenario())
