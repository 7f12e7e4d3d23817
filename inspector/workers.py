"""Worker processes for CPU-heavy engine work: building the demo, loading and verifying
CoValues, computing content (see :mod:`engine.diagnostics.analysis` for why a process and
not a thread: a busy Python thread starves the UI thread of the GIL).

:class:`WorkerPool` starts a process with the ``spawn`` method (a fresh interpreter: the
parent runs Qt threads, which ``fork`` would copy in an undefined state) the first time it
is needed, or ahead of time with :meth:`WorkerPool.warm_up`. Results come back as asyncio
futures on the loop. :meth:`WorkerPool.close` cancels what is queued and, if a job is still
running (a million-row CoValue takes seconds), terminates the process rather than wait.

Passwords: a job that opens a store names its ``location`` (:meth:`WorkerPool.run`). A
PostgreSQL store opened here with a password in its URL is known by its public location,
the password kept in this process (:mod:`engine.storage.postgres.location`); a worker
started with ``spawn`` knows nothing of it. Jobs for such a store run in a process of their
own whose environment holds the password as ``PGPASSWORD``
(:func:`~engine.storage.opener.child_environment`), never on its command line. One process
per password, not one for all: a process holding one store's password in ``PGPASSWORD``
would send it to any other server it connects to without a password of its own. Every other
job (SQLite stores, PostgreSQL stores whose password comes from the user's own
``PGPASSWORD`` or ``.pgpass``, jobs naming no store) runs in the shared process, which has
this process's environment as it is.

``spawn`` starts a process with this process's environment and no way to add to it, and
setting ``os.environ`` here for the moment of a start would hand the password to every
other thread meanwhile (and to what they start or connect to). So a process's variables are
set by its first act, before any job (the executor's ``initializer``): they reach it with
the rest of its start data, through the pipe ``multiprocessing`` opens to it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.diagnostics.analysis import ping
from engine.storage.opener import child_environment, is_postgres_location

__all__ = ["MAX_PROCESSES", "WorkerPool"]

T = TypeVar("T")

#: Most worker processes kept at once: the shared one and one per PostgreSQL password in use
#: (comparing two such stores side by side takes two). Starting one more first stops the
#: least recently used idle one; when every one is busy, the limit is passed until the next
#: start.
MAX_PROCESSES = 4

#: The environment variables a process is started with beyond this process's own, sorted
#: (empty: the shared process).
Environment = tuple[tuple[str, str], ...]


def _set_environment(variables: dict[str, str]) -> None:
    """In a new worker process, before its first job: the variables it was started for."""
    os.environ.update(variables)


def _environment(location: str | None) -> Environment:
    """What a process must have in its environment to open ``location``."""
    if location is None or not is_postgres_location(location):
        return ()
    return tuple(sorted(child_environment(location, {}).items()))


@dataclass(eq=False)
class _Process:
    """One worker process (an executor of ``workers`` processes) and the jobs given to it."""

    executor: ProcessPoolExecutor
    jobs: set[Future[Any]] = field(default_factory=set)
    #: the pool's job count at its last job: the least recently used is stopped first
    last_used: int = 0

    @property
    def busy(self) -> bool:
        return any(not job.done() for job in list(self.jobs))

    def stop(self) -> None:
        """Cancel queued jobs; if one is still running, its result is no longer wanted:
        terminate the process instead of waiting seconds for it (no public API for that)."""
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.busy:
            for process in processes:
                process.terminate()


class WorkerPool:
    """Worker processes: the shared one, and one per PostgreSQL password (see the module).
    ``workers``: processes per executor; ``max_processes``: see :data:`MAX_PROCESSES`."""

    def __init__(self, workers: int = 1, *, max_processes: int = MAX_PROCESSES) -> None:
        self.workers = workers
        self.max_processes = max_processes
        self._processes: dict[Environment, _Process] = {}
        #: jobs submitted so far
        self.jobs = 0

    def _process(self, environment: Environment) -> _Process:
        process = self._processes.get(environment)
        if process is None:
            self._make_room()
            executor = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_set_environment,
                initargs=(dict(environment),),
            )
            process = self._processes[environment] = _Process(executor)
        return process

    def _make_room(self) -> None:
        """Stop idle processes, least recently used first, until one more fits."""
        while len(self._processes) >= self.max_processes:
            idle = [(p.last_used, env) for env, p in self._processes.items() if not p.busy]
            if not idle:
                return
            self._processes.pop(min(idle)[1]).stop()

    def warm_up(self, location: str | None = None) -> None:
        """Start the process for ``location`` (None: the shared one) now, so the first real
        job does not wait for it."""
        self._process(_environment(location)).executor.submit(ping)

    async def run(self, fn: Callable[..., T], *args: Any, location: str | None = None) -> T:
        """``fn(*args)`` in a worker process: the one for the store at ``location`` when the
        job opens one (None: the shared process). ``fn`` must be importable by name and its
        arguments and result picklable. Raises what ``fn`` raised, or
        :class:`BrokenProcessPool` if the process died during the job (the next job gets a
        new process)."""
        environment = _environment(location)
        process = self._process(environment)
        try:
            job = process.executor.submit(fn, *args)
        except BrokenProcessPool:
            # The process died (killed, out of memory): start a fresh one for this job.
            del self._processes[environment]
            process = self._process(environment)
            job = process.executor.submit(fn, *args)
        # Kept until the job itself ends, even if the awaiting task is cancelled meanwhile:
        # close() must know the process is still busy with it.
        process.jobs.add(job)
        job.add_done_callback(process.jobs.discard)
        self.jobs += 1
        process.last_used = self.jobs
        return await asyncio.wrap_future(job)

    @property
    def busy(self) -> bool:
        return any(process.busy for process in list(self._processes.values()))

    def shutdown_now(self) -> None:
        """Stop the processes without a running loop (at interpreter or test-session end)."""
        processes, self._processes = list(self._processes.values()), {}
        for process in processes:
            process.stop()
        for process in processes:
            process.executor.shutdown(wait=True)

    async def close(self) -> None:
        processes, self._processes = list(self._processes.values()), {}
        if not processes:
            return
        for process in processes:
            process.stop()

        # shutdown(wait=True) joins the processes and the pools' manager threads: do that on
        # a short-lived thread and poll, so the loop keeps running meanwhile.
        def join() -> None:
            for process in processes:
                process.executor.shutdown(wait=True)

        joiner = threading.Thread(target=join, name="kintsugi-pool-join")
        joiner.start()
        while joiner.is_alive():
            await asyncio.sleep(0.005)
