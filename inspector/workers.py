"""A worker process for CPU-heavy engine work: building the demo, loading and verifying
CoValues, computing content (see :mod:`engine.diagnostics.analysis` for why a process and
not a thread: a busy Python thread starves the UI thread of the GIL).

:class:`WorkerPool` starts one process with the ``spawn`` method (a fresh interpreter: the
parent runs Qt threads, which ``fork`` would copy in an undefined state) the first time it
is needed, or ahead of time with :meth:`WorkerPool.warm_up`. Results come back as asyncio
futures on the loop. :meth:`WorkerPool.close` cancels what is queued and, if a job is still
running (a million-row CoValue takes seconds), terminates the process rather than wait.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from engine.diagnostics.analysis import ping

__all__ = ["WorkerPool"]

T = TypeVar("T")


class WorkerPool:
    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._jobs: set[Future[Any]] = set()
        self.jobs = 0

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    def warm_up(self) -> None:
        """Start the process now, so the first real job does not wait for it."""
        self._pool().submit(ping)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the worker process. ``fn`` must be importable by name and its
        arguments and result picklable. Raises what ``fn`` raised, or
        :class:`BrokenProcessPool` if the process died during the job (the next job gets a
        new process)."""
        try:
            job = self._pool().submit(fn, *args)
        except BrokenProcessPool:
            # The process died (killed, out of memory): start a fresh one for this job.
            self._executor = None
            job = self._pool().submit(fn, *args)
        # Kept until the job itself ends, even if the awaiting task is cancelled meanwhile:
        # close() must know the process is still busy with it.
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        self.jobs += 1
        return await asyncio.wrap_future(job)

    @property
    def busy(self) -> bool:
        return any(not job.done() for job in list(self._jobs))

    def shutdown_now(self) -> None:
        """Stop the process without a running loop (at interpreter or test-session end)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            self._stop(executor)
            executor.shutdown(wait=True)

    def _stop(self, executor: ProcessPoolExecutor) -> None:
        """Cancel queued jobs; if one is still running, its result is no longer wanted:
        terminate the process instead of waiting seconds for it (no public API for that)."""
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        if self.busy:
            for process in processes:
                process.terminate()

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        self._stop(executor)
        # shutdown(wait=True) joins the process and the pool's manager thread: do that on a
        # short-lived thread and poll, so the loop keeps running meanwhile.
        joiner = threading.Thread(target=executor.shutdown, kwargs={"wait": True}, name="kintsugi-pool-join")
        joiner.start()
        while joiner.is_alive():
            await asyncio.sleep(0.005)
