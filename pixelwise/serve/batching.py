"""Micro-batching: concurrent requests share forward passes, in one worker thread off the event loop.

Requests are queued with their inference options (any hashable value; the server gives each its
:class:`~pixelwise.engine.inference.InferenceConfig`). One worker thread takes
the oldest request, waits up to ``wait_s`` for more requests **with the same options** (at most
``max_batch`` in all), groups them by image size, and predicts each group in one call of the
``predict`` function it was given (``Segmenter.segment_batch`` in the server: same-size images go
through the model together). The results go back to each request's event loop. The queue is bounded:
:meth:`MicroBatcher.submit` raises :class:`QueueFull` instead of queueing more than ``queue_size``
requests, and a request whose caller gives up (a timeout cancels it) leaves the queue at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MicroBatcher", "QueueFull", "Stopped"]

log = logging.getLogger(__name__)

# Weight of the newest batch in the moving average of batch time (for Retry-After).
_EWMA = 0.2


class QueueFull(Exception):
    """The queue holds ``queue_size`` requests already.

    Args:
        retry_after: seconds after which the queue has probably room again.
    """

    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Stopped(Exception):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass(eq=False)
class _Job:
    image: np.ndarray
    options: Hashable
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future = field(repr=False)


Predict = Callable[[Sequence[np.ndarray], Any], Sequence[Any]]


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class MicroBatcher:
    """A bounded queue of images in front of one worker thread that predicts them in batches.

    Args:
        predict: ``predict(images, options) -> results``, one result per image; called in the
            worker thread with same-size images sharing ``options``.
        max_batch: most images per ``predict`` call.
        wait_s: how long the oldest request waits for others to join its batch.
        queue_size: most requests waiting (not yet taken by the worker).
        on_batch: called in the worker thread as ``on_batch(size, seconds)`` after each call.
    """

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch: int = 8,
        wait_s: float = 0.005,
        queue_size: int = 32,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self._predict = predict
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue_size = queue_size
        self._on_batch = on_batch
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False
        self._busy = 0  # images in the batch being predicted
        self._batch_seconds = 0.0  # moving average of one predict call

    @property
    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch being predicted)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive and taking requests."""
        return self._running and self._thread is not None and self._thread.is_alive()

    def retry_after(self) -> int:
        """Whole seconds (at least 1) until the queue has probably drained."""
        batches = (len(self._queue) + self._busy) / self.max_batch + 1
        return max(1, int(batches * self._batch_seconds + 0.999))

    def start(self) -> None:
        """Start the worker thread."""
        with self._cond:
            if self._running:
                return
            self._running = True
        self._thread = threading.Thread(target=self._work, name="pixelwise-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking requests, fail the queued ones with :class:`Stopped`, and wait up to
        ``timeout`` seconds for the batch being predicted."""
        with self._cond:
            self._running = False
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in dropped:
            self._finish(job, None, Stopped("the server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    async def submit(self, image: np.ndarray, options: Hashable) -> Any:
        """Queue one image and wait for its result.

        Raises:
            QueueFull: ``queue_size`` requests are waiting already.
            Stopped: the batcher is not running.
            Exception: whatever ``predict`` raised for this image's batch.
        """
        loop = asyncio.get_running_loop()
        job = _Job(image, options, loop, loop.create_future())
        with self._cond:
            if not self._running:
                raise Stopped("the model is not ready")
            if len(self._queue) >= self.queue_size:
                raise QueueFull(self.retry_after())
            self._queue.append(job)
            self._cond.notify_all()
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:  # given up (a timeout): leave the queue if still in it
                try:
                    self._queue.remove(job)
                except ValueError:
                    pass
            raise

    def _take(self) -> list[_Job] | None:
        """The next batch: the oldest job and up to ``max_batch - 1`` more with its options,
        waiting up to ``wait_s`` for them. ``None`` when stopped."""
        with self._cond:
            while self._running and not self._queue:
                self._cond.wait()
            if not self._running:
                return None
            batch = [self._queue.popleft()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                for job in [j for j in self._queue if j.options == batch[0].options]:
                    if len(batch) == self.max_batch:
                        break
                    self._queue.remove(job)
                    batch.append(job)
                left = deadline - time.monotonic()
                if len(batch) == self.max_batch or left <= 0 or not self._running:
                    break
                self._cond.wait(left)
            self._busy = len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            groups: dict[tuple[int, ...], list[_Job]] = {}
            for job in batch:
                groups.setdefault(job.image.shape, []).append(job)
            for jobs in groups.values():
                jobs = [j for j in jobs if not j.future.done()]  # cancelled meanwhile
                if jobs:
                    self._run(jobs)
            with self._cond:
                self._busy = 0

    def _run(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        try:
            results = list(self._predict([j.image for j in jobs], jobs[0].options))
            if len(results) != len(jobs):
                raise RuntimeError(f"predict returned {len(results)} results for {len(jobs)}")
        except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
            for job in jobs:
                self._finish(job, None, exc)
        else:
            for job, result in zip(jobs, results, strict=True):
                self._finish(job, result, None)
        seconds = time.perf_counter() - start
        if self._batch_seconds == 0.0:
            self._batch_seconds = seconds
        else:
            self._batch_seconds += _EWMA * (seconds - self._batch_seconds)
        if self._on_batch is not None:
            try:
                self._on_batch(len(jobs), seconds)
            except Exception:  # noqa: BLE001 - metrics must never stop the worker
                log.exception("batch callback failed")

    @staticmethod
    def _finish(job: _Job, result: Any, error: BaseException | None) -> None:
        try:
            job.loop.call_soon_threadsafe(_resolve, job.future, result, error)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass
