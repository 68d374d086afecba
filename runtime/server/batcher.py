"""Dynamic batching for one model: concurrent requests merged into one model execution.

Each queued item is a batch of rows ``[n, C, H, W]`` (one image is ``n = 1``). ``instances``
workers (one session each) run side by side, each in its own thread (onnxruntime releases
the GIL). A worker that is idle when an item arrives runs it at once; items that arrive while
every worker is busy queue up, and a worker that comes free takes the oldest item plus the
following ones of the same shape and dtype, up to ``max_batch_size`` rows, waiting at most
``max_queue_delay`` (counted from the oldest item's arrival) for more to fill the batch.

The queue is bounded (:class:`QueueFull`, HTTP 503); an item past its deadline leaves the
queue (:class:`DeadlineExceeded`, HTTP 504); :meth:`Batcher.close` finishes what is queued.
Rows of a merged batch are computed exactly as alone where the backend's kernels do not
depend on the batch size (checked for onnxruntime CPU in the tests).
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from ..errors import InputError, VisionRTError
from .metrics import ModelMetrics

Outputs = dict[str, np.ndarray]


class QueueFull(VisionRTError):
    """The model's queue is full (HTTP 503 with Retry-After)."""


class DeadlineExceeded(VisionRTError):
    """A request outlived its deadline (HTTP 504)."""


class ShuttingDown(VisionRTError):
    """The server is stopping and takes no new work (HTTP 503)."""


@dataclasses.dataclass(eq=False)
class _Item:
    rows: np.ndarray
    future: asyncio.Future
    arrived: float  # time.perf_counter() seconds

    @property
    def key(self) -> tuple:
        return self.rows.shape[1:], self.rows.dtype


@dataclasses.dataclass(frozen=True)
class Timing:
    """Where one item's time went, in seconds: waiting in the queue and its batch's execution."""

    queue: float
    compute: float
    batch_size: int


class Batcher:
    """Merges items for ``runners`` (one ``infer(rows) -> outputs`` callable per instance)."""

    def __init__(self, runners: list[Callable[[np.ndarray], Outputs]], max_batch_size: int,
                 max_queue_delay_s: float, max_queue: int, metrics: ModelMetrics | None = None):
        self.runners = runners
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: collections.deque[_Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._closing = False
        self._pool = ThreadPoolExecutor(max_workers=len(runners), thread_name_prefix="visionrt-infer")
        self._workers = [asyncio.get_running_loop().create_task(self._work(run)) for run in runners]

    async def submit(self, rows: np.ndarray, deadline: float) -> tuple[Outputs, Timing]:
        """The outputs for ``rows`` (each output's first axis has ``len(rows)`` entries) and the timing;
        ``deadline`` is a ``time.perf_counter()`` instant."""
        if self._closing:
            raise ShuttingDown("the server is shutting down", fix="retry on another replica")
        if len(rows) > self.max_batch_size:
            raise InputError(f"a batch of {len(rows)} exceeds this model's max batch size {self.max_batch_size}",
                             fix="split the batch")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the queue holds {len(self._queue)} requests, its limit", fix="retry later")
        item = _Item(rows, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.append(item)
        self._queue_changed()
        self._arrived.set()
        try:
            return await asyncio.wait_for(asyncio.shield(item.future), max(deadline - time.perf_counter(), 0.0))
        except asyncio.TimeoutError:
            self._withdraw(item)
            raise DeadlineExceeded(f"no result within the deadline ({len(rows)} image(s))",
                                   fix="retry later, or raise --timeout-s") from None
        except asyncio.CancelledError:
            self._withdraw(item)
            raise

    async def close(self) -> None:
        """Stop taking work, finish every queued item, stop the workers."""
        self._closing = True
        self._arrived.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._pool.shutdown(wait=True)

    # internals ---------------------------------------------------------------------------
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

    async def _work(self, run: Callable[[np.ndarray], Outputs]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            was_idle = not self._queue
            while not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            if not was_idle:  # items queued while busy: give the batch a chance to fill
                await self._fill(self._queue[0])
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([item.rows for item in batch])
            try:
                outputs = await loop.run_in_executor(self._pool, run, rows)
            except Exception as err:  # noqa: BLE001 - handed to every waiting request
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            compute = time.perf_counter() - started
            if self.metrics:
                self.metrics.executed(len(rows), compute)
            start = 0
            for item in batch:
                n = len(item.rows)
                if not item.future.done():
                    item.future.set_result(({name: value[start:start + n] for name, value in outputs.items()},
                                            Timing(started - item.arrived, compute, len(rows))))
                start += n

    async def _fill(self, oldest: _Item) -> None:
        """Wait until a full batch of ``oldest``'s shape is queued or its queue delay has passed."""
        while not self._closing and self._rows_like(oldest) < self.max_batch_size:
            remaining = oldest.arrived + self.max_queue_delay_s - time.perf_counter()
            if remaining <= 0 or oldest not in self._queue:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _rows_like(self, oldest: _Item) -> int:
        return sum(len(item.rows) for item in self._queue if item.key == oldest.key)

    def _take(self) -> list[_Item]:
        """Remove and return the oldest item and the next ones of its shape, up to ``max_batch_size`` rows."""
        if not self._queue:
            return []
        first = self._queue[0]
        batch, rows = [], 0
        for item in list(self._queue):
            if item.key == first.key and rows + len(item.rows) <= self.max_batch_size:
                batch.append(item)
                rows += len(item.rows)
                self._queue.remove(item)
        self._queue_changed()
        now = time.perf_counter()
        if self.metrics:
            for item in batch:
                self.metrics.dequeued(now - item.arrived)
        return batch
