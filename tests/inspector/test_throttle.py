"""The named change throttle (inspector.throttle) and periodic refresh (inspector.periodic)."""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable

import pytest
from pytestqt.qtbot import QtBot

from inspector.periodic import Periodic
from inspector.throttle import Throttle
from tests.inspector.conftest import ms, wait_for


def test_a_burst_is_delivered_once_merged_per_key(qtbot: QtBot) -> None:
    batches: list[dict[Hashable, set[str]]] = []
    throttle = Throttle("test", batches.append, interval_ms=30)
    started = time.monotonic()
    for i in range(1000):
        throttle.push(f"co_{i % 3}", "local" if i % 2 else "remote")
    assert throttle.active and throttle.pending == 3 and not batches
    wait_for(qtbot, lambda: bool(batches))
    elapsed = time.monotonic() - started
    assert batches == [{"co_0": {"local", "remote"}, "co_1": {"local", "remote"}, "co_2": {"local", "remote"}}]
    assert elapsed >= 0.025 and throttle.deliveries == 1 and throttle.pushes == 1000
    assert not throttle.active and throttle.objectName() == "kintsugi.throttle.test"


def test_pushes_during_delivery_wait_for_the_next_interval(qtbot: QtBot) -> None:
    batches: list[set[Hashable]] = []
    throttle = Throttle("test", lambda b: batches.append(set(b)), interval_ms=10)
    with qtbot.waitSignal(throttle.flushed, timeout=ms(1)):
        throttle.push("a")
    throttle.push("b")
    throttle.push("c")
    wait_for(qtbot, lambda: len(batches) == 2)
    assert batches == [{"a"}, {"b", "c"}]


def test_flush_now_and_stop(qtbot: QtBot) -> None:
    batches: list[dict[Hashable, set[str]]] = []
    throttle = Throttle("test", batches.append, interval_ms=10_000)
    throttle.push("a", "local")
    throttle.flush()
    assert batches == [{"a": {"local"}}] and not throttle.active
    throttle.push("b")
    throttle.stop()
    assert not throttle.active and throttle.pending == 0
    throttle.flush()
    assert len(batches) == 1


def test_a_failing_callback_is_logged_not_raised(qtbot: QtBot, caplog: pytest.LogCaptureFixture) -> None:
    def boom(_batch: object) -> None:
        raise ValueError("boom")

    throttle = Throttle("boom", boom, interval_ms=1)
    with caplog.at_level(logging.ERROR, logger="inspector.throttle"):
        throttle.push("a")
        throttle.flush()
    assert "throttle boom: callback failed" in caplog.text


def test_a_periodic_refresh_ticks_until_stopped(qtbot: QtBot, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    periodic = Periodic("test", lambda: calls.append(len(calls)), period_ms=10)
    assert not periodic.active and periodic.objectName() == "kintsugi.periodic.test"
    periodic.start()
    wait_for(qtbot, lambda: len(calls) >= 3)
    periodic.stop()
    ticks = periodic.ticks
    assert not periodic.active and ticks == len(calls)
    with qtbot.assertNotEmitted(periodic.ticked, wait=40):
        pass
    assert periodic.ticks == ticks

    def boom() -> None:
        raise ValueError("boom")

    failing = Periodic("boom", boom, period_ms=10_000)
    with caplog.at_level(logging.ERROR, logger="inspector.periodic"), qtbot.waitSignal(failing.ticked, timeout=ms(1)):
        failing.tick()
    assert "periodic boom: callback failed" in caplog.text
