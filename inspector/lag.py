"""Loop-lag monitor: how late the shared event loop runs a callback that is due.

The inspector's UI and an embedded engine share one loop, so anything that runs long
(a slow slot, a big model reset, a verification step that overran) delays everything else.
:class:`LoopLagMonitor` sleeps ``interval`` seconds again and again and records how much
later than asked it woke up: that delay is the stall the user would have felt. The status
bar shows recent values.

Part of a delay may not be the inspector's doing: on a busy machine the loop's thread waits,
runnable, while the system runs other processes, and in a virtual machine while the host
runs other guests. :attr:`LoopLagMonitor.max_busy` keeps the part the loop's thread spent
working: its CPU time over the sample, which leaves out the time the system or the host gave
to others, and the work of the process's other threads. That is the measure of the work
done on the loop per turn that tests hold to the budget. It leaves out time the loop waits
as well: on I/O (the inspector reads stores on the loop by small windows only, and commits
happen on writer threads) and on the interpreter lock (the heavy analysis runs in worker
processes: see :mod:`inspector.workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

__all__ = ["DEFAULT_INTERVAL", "STALL_THRESHOLD", "LoopLagMonitor"]

#: Seconds between samples.
DEFAULT_INTERVAL = 0.02
#: A delay above this (seconds) counts as a stall (DESIGN §11: the UI never stalls > 50 ms).
STALL_THRESHOLD = 0.05
#: Samples kept for :meth:`recent`.
KEEP_SAMPLES = 500


class LoopLagMonitor:
    """Samples scheduling delay on the running loop. Start with :meth:`start` once the loop
    runs; stop with :meth:`stop` (awaits the task, so nothing is left behind)."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        on_sample: Callable[[float], None] | None = None,
    ) -> None:
        self.interval = interval
        self.on_sample = on_sample
        self.max_lag = 0.0
        #: the longest part of a delay the loop's thread spent working (see the module)
        self.max_busy = 0.0
        self.samples = 0
        self.stalls = 0
        self._recent: deque[float] = deque(maxlen=KEEP_SAMPLES)
        self._task: asyncio.Task[None] | None = None
        self._reset_at = float("-inf")  # loop time of the last reset

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kintsugi.loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def reset(self) -> None:
        """Forget what was measured so far (e.g. after start-up, which may stall). A stall
        under way counts only from now: the sample in flight is measured from the reset."""
        self.max_lag = self.max_busy = 0.0
        self.samples = self.stalls = 0
        self._recent.clear()
        if self._task is not None:
            self._reset_at = self._task.get_loop().time()

    def recent(self, n: int = 50) -> list[float]:
        """The last ``n`` delays in seconds, oldest first."""
        return list(self._recent)[-n:]

    @property
    def last(self) -> float:
        return self._recent[-1] if self._recent else 0.0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            worked = time.thread_time()
            await asyncio.sleep(self.interval)
            # Late since it was due, or since the last reset if that came after.
            lag = max(0.0, loop.time() - max(due, self._reset_at))
            self._recent.append(lag)
            self.samples += 1
            self.max_lag = max(self.max_lag, lag)
            # No more of the delay than the thread worked meanwhile: the rest it waited.
            self.max_busy = max(self.max_busy, min(lag, time.thread_time() - worked))
            if lag > STALL_THRESHOLD:
                self.stalls += 1
            if self.on_sample is not None:
                self.on_sample(lag)
