"""Batch rows of concurrent requests into one engine call, on one worker thread.

Requests arriving within ``wait_s`` of the first waiting one (up to ``max_rows`` rows) run together, so
200 clients cost a few batched forwards instead of 200 sequential ones. The worker owns the models (one
thread: no locking); an exception fails only the requests of its batch, never the worker. A request whose
future is cancelled (its client went away) is dropped before its batch starts, and once running its rows stop
at the next step, so an abandoned long request does not delay the requests queued behind it.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rectify.serving.engine import Engine, RowOutput, RowSpec

log = logging.getLogger(__name__)


@dataclass
class _Job:
    rows: list[RowSpec]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    def __init__(self, engine: Engine, max_rows: int = 64, wait_s: float = 0.005):
        self.engine = engine
        self.max_rows = max_rows
        self.wait_s = wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._carry: _Job | None = None  # the job that did not fit into the last batch
        self.batches = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="rectify-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, rows: list[RowSpec]) -> list[RowOutput]:
        """Run ``rows`` in the next batch and return their outputs (awaits the worker)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(rows, future, loop))
        return await future

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, size = [first], len(first.rows)
        deadline = time.monotonic() + self.wait_s
        while size < self.max_rows:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if size + len(job.rows) > self.max_rows:
                self._carry = job  # too big for this batch: first of the next one
                break
            jobs.append(job)
            size += len(job.rows)
        return jobs, False

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first, self._carry = (self._carry or self._queue.get()), None
            if first is None:
                return
            jobs, stopping = self._collect(first)
            jobs = [j for j in jobs if not j.future.cancelled()]
            if not jobs:
                continue
            try:
                outs = self.engine.run([r for j in jobs for r in j.rows], _cancelled_rows(jobs))
            except Exception as exc:  # noqa: BLE001 - fail this batch's requests, keep serving
                log.exception("batch of %d requests failed", len(jobs))
                for j in jobs:
                    j.loop.call_soon_threadsafe(_set, j.future, None, exc)
                continue
            self.batches += 1
            start = 0
            for j in jobs:
                j.loop.call_soon_threadsafe(_set, j.future, outs[start: start + len(j.rows)], None)
                start += len(j.rows)


def _cancelled_rows(jobs: list[_Job]) -> Callable[[], list[bool]]:
    """Per row of the batch, whether its request was cancelled (read from the worker thread each step)."""
    return lambda: [j.future.cancelled() for j in jobs for _ in j.rows]


def _set(future: asyncio.Future, result: list[RowOutput] | None, exc: BaseException | None) -> None:
    if future.done():  # the client went away
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
