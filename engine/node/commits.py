"""Background commits (DESIGN §9): a node's write batches committed, in order, by its store's
writer thread, so an fsync never blocks the event loop the node shares.

Rules kept here:

- Batches are numbered as they are handed over (:attr:`BackgroundCommits.submitted_seq`);
  every batch up to :attr:`BackgroundCommits.committed_seq` is on disk. A failed batch holds
  ``committed_seq`` back until a later batch, which carries its retry, commits: no
  acknowledgement ever covers data that is not on disk.
- A failed commit is retried after :data:`COMMIT_RETRY_INITIAL` seconds, doubling up to
  :data:`COMMIT_RETRY_MAX`; a success resets the delay. Each failure is logged and counted,
  except a full disk, which the store logs once. After any failure of the environment (a
  full disk, I/O errors, a lock held elsewhere, a lost connection)
  :attr:`BackgroundCommits.unavailable` holds a
  :class:`~engine.errors.StorageUnavailable` until a commit succeeds again, so the node can
  refuse new writes with it instead of leaving their writers waiting.
- The node learns of each outcome through the callback it gave with the batch (subscribers
  hear of a change only after it committed), and listeners (:meth:`BackgroundCommits.on_commit`)
  after every finished commit.
- A commit on the loop thread (a replace, a tombstone) first :meth:`drains
  <BackgroundCommits.drain>` the queue, so commits happen in the order of the changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from engine.errors import StorageEnvironmentError, StorageUnavailable
from engine.model.header import Header
from engine.storage.interface import SessionWrite, StoreWriter

__all__ = ["COMMIT_RETRY_INITIAL", "COMMIT_RETRY_MAX", "BackgroundCommits", "CommitStatus"]

logger = logging.getLogger(__name__)

#: Seconds before a failed background commit is tried again (doubling, up to the maximum).
COMMIT_RETRY_INITIAL = 0.5
COMMIT_RETRY_MAX = 30.0

#: Called with True once a batch committed, with False when it failed (it will be retried).
Settled = Callable[[bool], None]


class BackgroundCommits:
    """The commit pipeline of one node. ``writer`` None: the node commits on its own thread
    and this only keeps the (then idle) counters and listeners. ``retry`` is called (on the
    loop) when a failed batch is due to be tried again: the node flushes.
    """

    def __init__(self, writer: StoreWriter | None, retry: Callable[[], None]) -> None:
        self._writer = writer
        self._retry_flush = retry
        #: batches handed to the writer, numbered
        self.submitted_seq = 0
        #: every batch up to this one is on disk
        self.committed_seq = 0
        #: background commits that failed (each is retried; the error is logged)
        self.failures = 0
        #: the last batch submitted when a commit failed: only a later one carries the retry
        self._redo_after = 0
        self._in_flight: dict[int, asyncio.Future[Any]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._retry_delay = COMMIT_RETRY_INITIAL
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        #: why writes are refused: the last commit failed for the environment (its error, or
        #: for other than a full disk a StorageUnavailable naming it); None once one commits
        self.unavailable: StorageUnavailable | None = None
        if writer is not None:
            writer.start()

    @property
    def active(self) -> bool:
        """True while batches go to the writer thread."""
        return self._writer is not None and not self._closed

    @property
    def in_flight(self) -> int:
        """Batches handed to the writer and not finished yet."""
        return len(self._in_flight)

    def submit(self, headers: list[Header], writes: list[SessionWrite], settled: Settled) -> None:
        """Hand one batch to the writer (only while :attr:`active`, on the running loop);
        ``settled`` is called on the loop once it committed or failed."""
        assert self._writer is not None
        self.submitted_seq += 1
        seq = self.submitted_seq
        future = self._writer.write(headers, writes)
        self._in_flight[seq] = future
        future.add_done_callback(lambda f: self._done(seq, f, settled))

    def _done(self, seq: int, future: asyncio.Future[Any], settled: Settled) -> None:
        self._in_flight.pop(seq, None)
        error = None if future.cancelled() else future.exception()
        if future.cancelled() or error is not None:
            self.failures += 1
            self._redo_after = self.submitted_seq
            if isinstance(error, StorageUnavailable):
                self.unavailable = error  # the store logged the cause once
                logger.debug("background commit refused (disk full); retrying in %.1f s", self._retry_delay)
            else:
                delay = self._retry_delay
                logger.error("background commit failed; retrying in %.1f s: %s", delay, error or "cancelled")
                if isinstance(error, StorageEnvironmentError):
                    self.unavailable = StorageUnavailable(f"the store cannot commit: {error.detail}")
            settled(False)
            if not self._closed and self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(self._retry_delay, self._retry_now)
                self._retry_delay = min(self._retry_delay * 2, COMMIT_RETRY_MAX)
        else:
            if seq > self._redo_after:
                self.committed_seq = seq
            self.unavailable = None
            self._retry_delay = COMMIT_RETRY_INITIAL
            settled(True)
        for listener in list(self._listeners):
            listener()

    def _retry_now(self) -> None:
        self._retry = None
        self._retry_flush()

    async def settled(self) -> None:
        """Wait until the last batch submitted so far has committed or failed (a failed one
        is retried as a new batch)."""
        last = self._in_flight.get(self.submitted_seq)
        if last is not None:
            await asyncio.wait({last})

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after each background commit finishes; returns an unsubscriber."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def drain(self) -> None:
        """Block until every batch handed over so far has committed (or failed)."""
        if self._writer is not None and not self._closed:
            self._writer.drain_blocking()

    def close(self) -> None:
        """Cancel a pending retry, finish every queued batch and stop the writer."""
        if self._retry is not None:
            self._retry.cancel()
        if self._writer is not None and not self._closed:
            self._writer.close_blocking()
        self._closed = True


class CommitStatus:
    """What a node tells of its background commits (:class:`~engine.node.LocalNode` is one):
    the sync layer's view of what is on disk."""

    _commits: BackgroundCommits

    def flush(self) -> None:
        raise NotImplementedError  # the node's

    @property
    def submitted_seq(self) -> int:
        """Background commits handed to the writer, numbered (0 without background commits)."""
        return self._commits.submitted_seq

    @property
    def committed_seq(self) -> int:
        """Every background commit up to this one is on disk (a failed one holds it back
        until its retry commits)."""
        return self._commits.committed_seq

    @property
    def commit_failures(self) -> int:
        """Background commits that failed (each is retried; the error is logged)."""
        return self._commits.failures

    @property
    def storage_unavailable(self) -> StorageUnavailable | None:
        """The store's error while it refuses writes (its disk is full), else None: a serving
        node then refuses new writes with it and keeps serving reads."""
        return self._commits.unavailable

    @property
    def commits_in_flight(self) -> int:
        """Background commits handed to the writer and not finished yet."""
        return self._commits.in_flight

    async def durable(self) -> None:
        """Wait until every batch flushed so far has committed (at once without background
        commits). A failed commit ends the wait too: it is retried as a new batch."""
        self.flush()
        await self._commits.settled()

    def on_commit(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after each background commit finishes; returns an unsubscriber."""
        return self._commits.on_commit(listener)
