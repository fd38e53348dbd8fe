"""Dynamic batching: concurrent classify requests share one ONNX call.

Requests wait in a bounded queue. A worker takes the first waiting latent, then gathers more for
at most ``max_delay_s`` or until ``max_batch`` are in hand, runs the classifier once in a thread
(off the event loop), and answers each request. While a batch runs the next one fills, so under
load batches grow by themselves. A full queue raises ``Overloaded`` at once: the route answers 503
with Retry-After instead of letting requests pile up and memory grow.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cloud_service.metrics import Metrics


class Overloaded(Exception):
    pass


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        max_batch: int,
        max_delay_s: float,
        queue_size: int,
        metrics: Metrics,
        workers: int = 1,
    ):
        self.run, self.max_batch, self.max_delay_s = run, max_batch, max_delay_s
        self.metrics = metrics
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spic-infer")
        self.tasks = [asyncio.get_running_loop().create_task(self._work()) for _ in range(workers)]

    async def submit(self, latent: np.ndarray) -> np.ndarray:
        fut = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((latent, fut, time.perf_counter()))
        except asyncio.QueueFull:
            raise Overloaded from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return await fut

    async def _gather(self) -> list:
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

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            self.metrics.queue_depth.set(self.queue.qsize())
            start = time.perf_counter()
            by_shape = defaultdict(list)  # whole-image frames of other sizes cannot share a tensor
            for item in batch:
                by_shape[item[0].shape].append(item)
            for items in by_shape.values():
                for _, _, enqueued in items:
                    self.metrics.queue.observe(start - enqueued)
                try:
                    t0 = time.perf_counter()
                    out = await loop.run_in_executor(
                        self.executor, self.run, np.stack([i[0] for i in items])
                    )
                    self.metrics.inference.observe(time.perf_counter() - t0)
                    self.metrics.batch.observe(len(items))
                except Exception as exc:  # answer every waiter, keep the worker alive
                    for _, fut, _ in items:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for row, (_, fut, _) in zip(out, items, strict=True):
                    if not fut.done():
                        fut.set_result(row)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.executor.shutdown(wait=False, cancel_futures=True)
