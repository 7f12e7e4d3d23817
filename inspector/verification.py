"""Runs chain verifiers in small slices on the shared loop, so verifying a million-row
session never stalls the UI.

Each :class:`~engine.diagnostics.chain_verify.ChainVerifier` step is sized to take about
:data:`SLICE_SECONDS`: the runner measures every step and scales the next one (between
:data:`MIN_ROWS` and :data:`MAX_ROWS`), then yields to the loop so Qt can paint and handle
input before the next slice. Verifiers are served round-robin, so a huge session does not
starve a small one. A slice whose progress callback repainted something is followed by a
pause of :data:`REPAINT_PAUSE` instead, so that several sessions finishing one after the
other are painted one at a time, not all in one long turn. When every verifier is done the
task sleeps until :meth:`wake` (a live session grew) or :meth:`add`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.diagnostics.chain_verify import ChainVerifier

__all__ = ["MAX_ROWS", "MIN_ROWS", "REPAINT_PAUSE", "SLICE_SECONDS", "VerificationRunner"]

logger = logging.getLogger(__name__)

#: Target duration of one verification slice (the UI budget is 50 ms; leave room for paint).
SLICE_SECONDS = 0.005
#: Pause before a newly added verifier's first slice: a new lane is being laid out and
#: painted first, and its first verification repaint should not pile onto that.
START_DELAY = 0.15
#: Pause after a slice that repainted (seconds): Qt paints a few ms after an update is asked
#: for, on a timer, so with no pause the next slices' repaints would join the same paint.
REPAINT_PAUSE = 0.02
#: Bounds on rows per slice.
MIN_ROWS = 16
MAX_ROWS = 50_000
FIRST_ROWS = 500


@dataclass(slots=True)
class _Entry:
    verifier: ChainVerifier
    on_progress: Callable[[], bool | None]
    not_before: float
    rows: int = FIRST_ROWS


class VerificationRunner:
    """Owns one asyncio task; :meth:`start` once the loop runs, :meth:`stop` at shutdown."""

    def __init__(
        self,
        slice_seconds: float = SLICE_SECONDS,
        start_delay: float = START_DELAY,
        repaint_pause: float = REPAINT_PAUSE,
    ) -> None:
        self.slice_seconds = slice_seconds
        self.start_delay = start_delay
        self.repaint_pause = repaint_pause
        self._entries: list[_Entry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: the most CPU time a single slice took on the loop's thread so far (seconds; time the
        #: system or the host gave to others while it ran is left out, see :mod:`inspector.lag`)
        self.longest_slice = 0.0
        self.slices = 0

    def add(self, verifier: ChainVerifier, on_progress: Callable[[], bool | None]) -> None:
        """Verify ``verifier``'s session; ``on_progress`` is called after each of its slices
        and returns True when it asked for a repaint."""
        self._entries.append(_Entry(verifier, on_progress, time.monotonic() + self.start_delay))
        self.wake()

    def remove(self, verifier: ChainVerifier) -> None:
        self._entries = [e for e in self._entries if e.verifier is not verifier]

    def clear(self) -> None:
        self._entries.clear()

    def wake(self) -> None:
        """There may be new work (a session grew or was replaced)."""
        self._wake.set()

    @property
    def idle(self) -> bool:
        return all(e.verifier.done for e in self._entries)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kintsugi.verification")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._entries.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            work = [e for e in self._entries if not e.verifier.done]
            now = time.monotonic()
            due = [e for e in work if e.not_before <= now]
            if not due:
                self._wake.clear()
                timeout = min((e.not_before for e in work), default=now + 3600) - now
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes
                # as the event is set (a refresh's wake() just before stop()), and stop()
                # then waits for this task forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
                continue
            for entry in due:
                if entry not in self._entries:
                    continue  # removed while we yielded
                repainted = self._slice(entry)
                await asyncio.sleep(self.repaint_pause if repainted else 0)

    def _slice(self, entry: _Entry) -> bool:
        """One step of ``entry``'s verifier; True when its progress callback repainted."""
        started, worked = time.perf_counter(), time.thread_time()
        try:
            examined = entry.verifier.step(entry.rows)
        except Exception:
            # A failure here is our bug, not damage (damage becomes verifier.failure):
            # log it and stop verifying that session rather than spin on it.
            logger.exception("verifying %s failed", entry.verifier.source.session)
            self.remove(entry.verifier)
            return False
        elapsed = time.perf_counter() - started
        self.slices += 1
        self.longest_slice = max(self.longest_slice, time.thread_time() - worked)
        if examined and elapsed > 0:
            scaled = int(entry.rows * self.slice_seconds / elapsed)
            # grow gently, shrink at once
            entry.rows = max(MIN_ROWS, min(MAX_ROWS, scaled, entry.rows * 3 // 2))
        try:
            return bool(entry.on_progress())
        except Exception:
            logger.exception("verification progress callback failed")
            return False
