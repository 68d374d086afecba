"""Dynamic batching for one model: concurrent requests merged into one model execution.

Each queued item is a :class:`Work`: ``size`` images of work for the model, with a ``key`` saying
which items may share an execution: :class:`Rows` (model input rows ``[n, C, H, W]``, of v2 infer
and gRPC; merged by shape and dtype) or a predict request's encoded images
(:class:`~.task_endpoint.Predict`: decoded, preprocessed, run and post-processed as one batch on the
instance's thread, as ``Predictor.predict`` does in-process, leaving the event loop only HTTP).
``instances`` workers (one predictor each) run side by side, each in its own thread (onnxruntime,
PIL and NumPy release the GIL). A worker that is idle when an item arrives runs it at once; items
that arrive while every worker is busy queue up, and a worker that comes free takes the oldest item
plus the following ones of the same key, up to ``max_batch_size`` images, waiting at most
``max_queue_delay`` (counted from the oldest item's arrival) for more to fill the batch.

A worker that comes free to a queue first lets the event loop catch up (:data:`CATCH_UP_ROUNDS`):
the answers of the batch just done go out and the requests they bring back are read and queued, so
``C`` clients that each wait for their answer make batches of about ``C`` images rather than two
alternating halves (half-size batches cost ~6 % more CPU an image on the quick classifier:
benchmarks/README.md, "Cut 6"). An idle server runs a request at once, without this wait.

The queue is bounded (:class:`QueueFull`, HTTP 503); an item past its deadline leaves the
queue (:class:`DeadlineExceeded`, HTTP 504); :meth:`Batcher.close` finishes what is queued.
Rows of a merged batch are computed exactly as alone where the backend's kernels do not
depend on the batch size (checked for onnxruntime CPU in the tests).

A request costs the loop little: its future is its own (no task, no shield), its deadline one timer
handle (``call_later``), a cancelled request withdraws its item; each instance's thread takes a
batch from a queue and hands the outputs back with one ``call_soon_threadsafe`` (no executor
futures to chain), and the queue wait of a batch's items is reported once per batch.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import queue
import threading
import time
from typing import Any, Hashable, Protocol, Sequence

import numpy as np

from ..errors import InputError, VisionRTError
from .metrics import ModelMetrics

Outputs = dict[str, np.ndarray]

#: Event-loop iterations a worker that comes free to a non-empty queue yields before it takes its batch
#: (fewer once the batch is full): one to send the answers of the batch just done, one to read the
#: requests those bring back, one for their handlers to queue them.
CATCH_UP_ROUNDS = 3


class QueueFull(VisionRTError):
    """The model's queue is full (HTTP 503 with Retry-After)."""


class DeadlineExceeded(VisionRTError):
    """A request outlived its deadline (HTTP 504)."""


class ShuttingDown(VisionRTError):
    """The server is stopping and takes no new work (HTTP 503)."""


class Work(Protocol):
    """What one request asks of the model: ``size`` images; items of one ``key`` may share an
    execution, which ``type(work).run(instance, works)`` computes on an instance's thread: per work
    its result, or the exception that fails that request alone (an exception raised fails them all)."""

    key: Hashable
    size: int

    @staticmethod
    def run(instance: Any, works: Sequence["Work"]) -> list[Any]: ...


class Rows:
    """Model input rows ``[n, C, H, W]`` (v2 infer, gRPC): merged by shape and dtype into one
    ``instance.infer`` call, whose outputs are split back per item."""

    __slots__ = ("rows", "key", "size")

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.key = (Rows, rows.shape[1:], rows.dtype)
        self.size = len(rows)

    @staticmethod
    def run(instance: Any, works: Sequence["Rows"]) -> list[Outputs]:
        if len(works) == 1:
            return [instance.infer(works[0].rows)]
        outputs = instance.infer(np.concatenate([work.rows for work in works]))
        split, start = [], 0
        for work in works:
            split.append({name: value[start:start + work.size] for name, value in outputs.items()})
            start += work.size
        return split


class _Item:
    """One submitted work, its future (the submitter's own) and its arrival time."""

    __slots__ = ("work", "future", "arrived")

    def __init__(self, work: Work, future: asyncio.Future, arrived: float):
        self.work = work
        self.future = future
        self.arrived = arrived  # time.perf_counter() seconds


@dataclasses.dataclass(frozen=True)
class Timing:
    """Where one item's time went, in seconds: waiting in the queue and its batch's execution."""

    queue: float
    compute: float
    batch_size: int


def _settle(future: asyncio.Future, results: list | None, error: BaseException | None) -> None:
    if future.done():  # the waiting worker was cancelled
        return
    if error is None:
        future.set_result(results)
    else:
        future.set_exception(error)


class _Instance:
    """One model instance on its own thread: ``await instance(works)`` (works of one key) is one
    queue put there and one loop wake-up back."""

    def __init__(self, instance: Any, loop: asyncio.AbstractEventLoop, name: str):
        self._instance = instance
        self._loop = loop
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def __call__(self, works: list[Work]) -> asyncio.Future:
        future = self._loop.create_future()
        self._jobs.put((works, future))
        return future

    def stop(self) -> None:
        """End the thread once its current job is done."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            works, future = job
            try:
                results, error = type(works[0]).run(self._instance, works), None
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                results, error = None, err
            self._loop.call_soon_threadsafe(_settle, future, results, error)


class Batcher:
    """Merges work for ``instances`` (what a :class:`Work` runs on: a predictor, with ``infer(rows)
    -> outputs``; one thread each)."""

    def __init__(self, instances: list[Any], max_batch_size: int,
                 max_queue_delay_s: float, max_queue: int, metrics: ModelMetrics | None = None):
        self.instances = instances
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._instances = [_Instance(instance, self._loop, f"visionrt-infer-{i}")
                           for i, instance in enumerate(instances)]
        self._workers = [self._loop.create_task(self._work(instance)) for instance in self._instances]

    async def submit(self, work: Work, deadline: float) -> tuple[Any, Timing]:
        """``work``'s result (for :class:`Rows`: the outputs, each output's first axis with one entry a
        row) and the timing; ``deadline`` is a ``time.perf_counter()`` instant."""
        if self._closing:
            raise ShuttingDown("the server is shutting down", fix="retry on another replica")
        if work.size > self.max_batch_size:
            raise InputError(f"a batch of {work.size} exceeds this model's max batch size {self.max_batch_size}",
                             fix="split the batch")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the queue holds {len(self._queue)} requests, its limit", fix="retry later")
        item = _Item(work, self._loop.create_future(), time.perf_counter())
        self._queue.append(item)
        self._queue_changed()
        self._arrived.set()
        timer = self._loop.call_later(max(deadline - item.arrived, 0.0), self._expire, item)
        try:
            return await item.future
        except asyncio.CancelledError:
            self._withdraw(item)
            if item.future.done() and not item.future.cancelled():
                item.future.exception()  # answered just before the cancellation: nobody reads it now
            raise
        finally:
            timer.cancel()

    async def close(self) -> None:
        """Stop taking work, finish every queued item, stop the workers. Their threads are joined off
        the event loop: one may still be running a batch whose worker task was cancelled."""
        self._closing = True
        self._arrived.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(instance.stop) for instance in self._instances))

    # internals ---------------------------------------------------------------------------
    def _expire(self, item: _Item) -> None:
        """``item``'s deadline passed: it leaves the queue (if still there) and its request gets a 504."""
        if item.future.done():
            return
        self._withdraw(item)
        item.future.set_exception(DeadlineExceeded(f"no result within the deadline ({item.work.size} image(s))",
                                                   fix="retry later, or raise --timeout-s"))

    def _withdraw(self, item: _Item) -> None:
        """Free ``item``'s slot if it is still queued (a batch already running finishes anyway)."""
        try:
            self._queue.remove(item)
        except ValueError:
            return
        self._queue_changed()

    def _queue_changed(self) -> None:
        if self.metrics:
            self.metrics.queue_length(len(self._queue))

    async def _work(self, run: _Instance) -> None:
        while True:
            was_idle = not self._queue
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            if not was_idle:  # items queued while busy: give the batch a chance to fill
                await self._catch_up(self._queue[0])
                if self._queue:
                    await self._fill(self._queue[0])
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await run([item.work for item in batch])
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            compute = time.perf_counter() - started
            size = sum(item.work.size for item in batch)
            if self.metrics:
                self.metrics.executed(size, compute)
            for item, result in zip(batch, results):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result((result, Timing(started - item.arrived, compute, size)))

    async def _catch_up(self, oldest: _Item) -> None:
        """Yield :data:`CATCH_UP_ROUNDS` event-loop iterations, unless a batch of ``oldest``'s key is full."""
        for _ in range(CATCH_UP_ROUNDS):
            if self._closing or self._size_like(oldest) >= self.max_batch_size:
                return
            await asyncio.sleep(0)

    async def _fill(self, oldest: _Item) -> None:
        """Wait until a full batch of ``oldest``'s shape is queued or its queue delay has passed."""
        while not self._closing and self._size_like(oldest) < self.max_batch_size:
            remaining = oldest.arrived + self.max_queue_delay_s - time.perf_counter()
            if remaining <= 0 or oldest not in self._queue:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _size_like(self, oldest: _Item) -> int:
        return sum(item.work.size for item in self._queue if item.work.key == oldest.work.key)

    def _take(self) -> list[_Item]:
        """Remove and return the oldest item and the next ones of its key, up to ``max_batch_size`` images."""
        if not self._queue:
            return []
        key = self._queue[0].work.key
        batch, rest, size = [], [], 0
        for item in self._queue:
            if item.work.key == key and size + item.work.size <= self.max_batch_size:
                batch.append(item)
                size += item.work.size
            else:
                rest.append(item)
        self._queue.clear()
        self._queue.extend(rest)
        self._queue_changed()
        if self.metrics:
            now = time.perf_counter()
            self.metrics.dequeued([now - item.arrived for item in batch])
        return batch
