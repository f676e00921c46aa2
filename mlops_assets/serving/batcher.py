"""Request batching: concurrent requests coalesced into one model call.

One HistGradientBoosting ``predict_proba`` costs about a millisecond whatever the row count up to a few hundred
rows, so throughput comes from predicting many requests at once, not from a faster single call.

Requests are queued on the event loop; one worker task takes everything that is waiting (up to ``max_rows``),
runs the batch (on the loop itself by default, or in a single worker thread) and resolves each request's future
with its slice of the result. While a batch is computing, the next one accumulates (in the sockets' buffers or the
queue), so under load batches form without any waiting. ``max_wait`` adds a short wait for stragglers, but only when
other clients are in flight (the previous batch held several requests, or some queued while it ran), and only
until they are all here: a lone client never waits, and returning clients do not wait out the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One request's work: ``payload`` is what the batch function needs; ``n`` its row count."""

    payload: Any
    n: int
    future: asyncio.Future[Any] = field(repr=False)


class MicroBatcher:
    """Coalesces :class:`Job` s into calls of ``process(jobs) -> results`` (one result or exception per job)."""

    def __init__(
        self,
        process: Callable[[Sequence[Job]], Sequence[Any]],
        *,
        max_rows: int = 1024,
        max_wait: float = 0.001,
        thread_initializer: Callable[[], None] | None = None,
        inline: bool = False,
    ):
        self.process = process
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self.inline = inline
        self._initializer = thread_initializer
        self._executor = (
            None
            if inline
            else ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="predict", initializer=thread_initializer
            )
        )
        self._last_jobs = 0  # requests in the previous batch
        self._backlog = 0  # requests queued when it was answered

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        if self.inline and self._initializer is not None:
            self._initializer()  # the batches run in this (the event loop's) thread
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # the cancellation we asked for
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, payload: Any, n: int) -> Any:
        """Queue a job and wait for its result (or its exception)."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit before start()")
        job = Job(payload, n, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            first = await q.get()
            batch, rows = [first], first.n
            while rows < self.max_rows and not q.empty():
                job = q.get_nowait()
                batch.append(job)
                rows += job.n
            # Wait for the clients in flight: those the previous batch answered (closed-loop clients come back
            # right after their answer) and those that queued while it ran; without the latter, two groups of
            # clients settle into alternate batches, each waiting out the other's model call.
            target = self._last_jobs + self._backlog
            if self.max_wait > 0 and target > 1 and rows < self.max_rows:
                deadline = loop.time() + self.max_wait
                while rows < self.max_rows and len(batch) < target:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(q.get(), left)
                    except TimeoutError:
                        break
                    batch.append(job)
                    rows += job.n
            self._last_jobs = len(batch)
            try:
                if self._executor is None:
                    results = self.process(batch)
                else:
                    results = await loop.run_in_executor(self._executor, self.process, batch)
            except Exception as err:  # the whole batch failed: every request gets the error
                results = [err] * len(batch)
            for job, res in zip(batch, results, strict=True):
                if job.future.done():  # the client went away
                    continue
                if isinstance(res, BaseException):
                    job.future.set_exception(res)
                else:
                    job.future.set_result(res)
            # Let the answers go out before the next batch is formed (its wait is for their clients), then
            # count who queued meanwhile.
            await asyncio.sleep(0)
            self._backlog = q.qsize()
