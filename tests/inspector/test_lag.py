"""The loop-lag monitor (inspector.lag) and the loop module."""

from __future__ import annotations

import asyncio
import time

from pytestqt.qtbot import QtBot

from inspector.lag import STALL_THRESHOLD, LoopLagMonitor
from tests.inspector.conftest import run, wait_for


def working(seconds: float) -> None:
    """Run on the CPU for ``seconds`` of this thread's own time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_an_idle_loop_has_little_lag_and_a_blocking_callback_is_a_stall(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot
) -> None:
    monitor = LoopLagMonitor(interval=0.005)
    samples: list[float] = []
    monitor.on_sample = samples.append
    monitor.start()
    wait_for(qtbot, lambda: monitor.samples >= 10)
    assert monitor.max_busy < STALL_THRESHOLD
    monitor.reset()
    assert (monitor.samples, monitor.max_lag, monitor.max_busy, monitor.recent()) == (0, 0.0, 0.0, [])
    loop.call_soon(working, 0.12)
    wait_for(qtbot, lambda: monitor.stalls >= 1)
    assert monitor.max_lag >= 0.1 and max(samples) >= 0.1 and monitor.last >= 0
    assert max(monitor.recent(1000)) == monitor.max_lag
    run(qtbot, monitor.stop())
    assert not monitor.running
    run(qtbot, monitor.stop())  # idempotent


def test_the_busy_part_of_a_delay_is_what_the_loop_s_thread_worked(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot
) -> None:
    """A callback that works for 0.12 s is a stall the loop's own work explains; one that
    waits as long without working (as the loop does while the machine runs others) is not."""
    monitor = LoopLagMonitor(interval=0.005)
    monitor.start()
    try:
        wait_for(qtbot, lambda: monitor.samples >= 3)
        monitor.reset()
        loop.call_soon(time.sleep, 0.12)
        wait_for(qtbot, lambda: monitor.stalls >= 1)
        assert monitor.max_lag >= 0.1 and monitor.max_busy < STALL_THRESHOLD, (monitor.max_lag, monitor.max_busy)
        monitor.reset()
        loop.call_soon(working, 0.12)
        wait_for(qtbot, lambda: monitor.stalls >= 1)
        assert monitor.max_busy >= 0.1 and monitor.max_lag >= monitor.max_busy
    finally:
        run(qtbot, monitor.stop())


def test_a_reset_counts_only_the_rest_of_a_stall_under_way(loop: asyncio.AbstractEventLoop, qtbot: QtBot) -> None:
    monitor = LoopLagMonitor(interval=0.01)
    monitor.start()
    done: list[bool] = []

    def stall_across_a_reset() -> None:
        time.sleep(0.15)  # a stall before the reset: not measured after it
        monitor.reset()
        time.sleep(0.03)
        done.append(True)

    try:
        wait_for(qtbot, lambda: monitor.samples >= 3)
        loop.call_soon(stall_across_a_reset)
        wait_for(qtbot, lambda: bool(done) and monitor.samples >= 1)
        assert 0.025 <= monitor.max_lag < 0.1, monitor.recent()
    finally:
        run(qtbot, monitor.stop())
