"""The two lanes inference runs in: dynamic batching for ordinary frames, a heavy lane for the rest.

``Batcher``: concurrent classify requests of the bundle's own crop share one ONNX call. Requests
wait in a bounded queue. A worker takes the first waiting latent, gathers more for at most
``max_delay_s`` or until ``max_batch`` are in hand, and runs the classifier once in a thread (off
the event loop). While a batch runs the next one fills, so under load batches grow by themselves.
Load is shed, never queued for seconds: a full queue (``queue_size`` frames beyond a batch)
raises ``Overloaded`` at once, and a frame that waited longer than ``max_wait_s`` is answered
``Overloaded`` instead of being classified late (the route turns both into 503 + Retry-After). If the worker task ever dies, it is logged,
counted and restarted; ``alive`` feeds readiness.

``HeavyLane``: reconstructions and frames larger than the bundle's crop (whole-image frames, up to
the serving limits) run here, on their own few threads with their own bounded queue, so a client
sending the largest frames the service accepts cannot hold up anyone's 224² frames. After each
heavy job the freed memory goes back to the OS.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

from cloud_service.metrics import Metrics
from shared.tuning import release_memory

log = logging.getLogger("spic.cloud.batcher")
T = TypeVar("T")
R = TypeVar("R")  # what the run function answers per frame


class Overloaded(Exception):
    """No room for this request now; a retry after Retry-After may succeed."""


class Batcher(Generic[R]):
    """``run`` takes the (N, ...) stack of the frames' latents and answers one row per frame."""

    def __init__(
        self,
        run: Callable[[np.ndarray], Sequence[R]],
        max_batch: int,
        max_delay_s: float,
        queue_size: int,
        metrics: Metrics,
        max_wait_s: float = float("inf"),
    ):
        self.run, self.max_batch, self.max_delay_s = run, max_batch, max_delay_s
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        # Room for a batch beyond queue_size: the worker takes its next batch from the queue a
        # moment after the last one is answered, and the service admits queue_size + max_batch
        # classify requests (admission.py), so a frame it admitted never finds the queue full.
        self.queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[R], float]] = asyncio.Queue(
            maxsize=queue_size + max_batch
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spic-infer")
        self.restarts = 0
        self._closing = False
        self._in_hand: list[tuple[np.ndarray, asyncio.Future[R], float]] = []
        self._start()

    def _start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._work())
        self.task.add_done_callback(self._on_exit)

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        if self._closing or task.cancelled():
            return
        exc = task.exception()
        log.error("batch worker died, restarting it: %r", exc, exc_info=exc)
        for _, fut, _ in self._in_hand:  # the frames it held would otherwise wait forever
            if not fut.done():
                fut.set_exception(RuntimeError(f"batch worker died: {exc!r}"))
        self._in_hand = []
        self.metrics.worker_restarts.inc()
        self.restarts += 1
        self._start()

    @property
    def alive(self) -> bool:
        return not self.task.done()

    def check_room(self) -> None:
        """Raise ``Overloaded`` now if the queue is full: cheaper than decoding a frame first."""
        if self.queue.full():
            self.metrics.shed.labels("queue_full").inc()
            raise Overloaded

    async def submit(self, latent: np.ndarray) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((latent, fut, time.perf_counter()))
        except asyncio.QueueFull:
            self.metrics.shed.labels("queue_full").inc()
            raise Overloaded from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return await fut

    async def _gather(self) -> list[tuple[np.ndarray, asyncio.Future[R], float]]:
        batch = [await self.queue.get()]
        deadline = time.perf_counter() + self.max_delay_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    def _admit(
        self, batch: list[tuple[np.ndarray, asyncio.Future[R], float]]
    ) -> list[tuple[np.ndarray, asyncio.Future[R], float]]:
        """Drop waiters that left, shed frames that waited too long; the rest run."""
        start, live = time.perf_counter(), []
        for item in batch:
            _, fut, enqueued = item
            if fut.done():  # the request was cancelled (client gone): no work for it
                continue
            waited = start - enqueued
            self.metrics.queue.observe(waited)
            if waited > self.max_wait_s:
                self.metrics.shed.labels("waited_too_long").inc()
                fut.set_exception(Overloaded())
                continue
            live.append(item)
        return live

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._in_hand = await self._gather()
            batch = self._admit(self._in_hand)
            self.metrics.queue_depth.set(self.queue.qsize())
            if not batch:
                continue
            try:
                t0 = time.perf_counter()
                out = await loop.run_in_executor(
                    self.executor, self.run, np.stack([i[0] for i in batch])
                )
                if len(out) != len(batch):
                    raise RuntimeError(
                        f"classifier answered {len(out)} rows for {len(batch)} frames"
                    )
                self.metrics.inference.observe(time.perf_counter() - t0)
                self.metrics.batch.observe(len(batch))
            except Exception as exc:  # answer every waiter (a 500 each), keep the worker alive
                log.error("classifier failed on a batch of %d: %r", len(batch), exc)
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for row, (_, fut, _) in zip(out, batch, strict=True):
                if not fut.done():
                    fut.set_result(row)

    async def close(self) -> None:
        self._closing = True
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)


class HeavyLane:
    """At most ``workers`` heavy jobs at once and ``queue_size`` waiting; beyond: ``Overloaded``.

    A job counts until its thread finishes, also when the request that asked for it has gone, so
    clients that hang up cannot pile work up behind the bound.
    """

    def __init__(self, workers: int, queue_size: int, metrics: Metrics):
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spic-heavy")
        self.capacity = workers + queue_size
        self.metrics = metrics
        self._pending = 0
        self._lock = threading.Lock()

    def _job(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        finally:
            release_memory()

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
            self.metrics.heavy_pending.set(self._pending)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._pending >= self.capacity:
                self.metrics.shed.labels("heavy_full").inc()
                raise Overloaded
            self._pending += 1
            self.metrics.heavy_pending.set(self._pending)
        future = self.executor.submit(self._job, fn, args)
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
