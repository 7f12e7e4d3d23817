"""The worker process pool (inspector.workers)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from engine.demo.scenario import DemoResult
from engine.diagnostics import analysis
from engine.storage.sqlite.store import store_file
from inspector.targets import StoreTarget, TargetSpec
from inspector.workers import WorkerPool
from tests.inspector.conftest import ms, run


def test_a_dead_worker_is_replaced_and_a_busy_one_is_stopped_on_close(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot
) -> None:
    pool = WorkerPool()
    first = run(qtbot, pool.run(analysis.ping))
    with pytest.raises(BrokenProcessPool):
        run(qtbot, pool.run(os._exit, 3))
    second = run(qtbot, pool.run(analysis.ping))
    assert second != first and not pool.busy
    job = asyncio.ensure_future(pool.run(pow, 10, 10**7))  # seconds of work
    qtbot.waitUntil(lambda: pool.busy, timeout=ms(5))
    run(qtbot, pool.close())
    qtbot.waitUntil(job.done, timeout=ms(5))
    assert job.cancelled() or job.exception() is not None
    run(qtbot, pool.close())  # idempotent


@pytest.mark.usefixtures("loop")
def test_a_covalue_that_cannot_load_does_not_stop_the_analysis(
    qtbot: QtBot, pool: WorkerPool, demo_copy: Path, demo_store: DemoResult, caplog: pytest.LogCaptureFixture
) -> None:
    conn = sqlite3.connect(store_file(demo_copy))
    conn.execute("UPDATE covalues SET header = x'00' WHERE id = ?", (demo_store.maps["notes"],))
    conn.commit()
    conn.close()
    target = StoreTarget(TargetSpec("store", str(demo_copy)), pool)
    run(qtbot, target.open())
    run(qtbot, target.analyse(lambda _batch: None))
    analysed = {cid for cid in target.ids() if target.summary(cid).analysed}  # type: ignore[union-attr]
    assert len(analysed) == 3 and demo_store.maps["notes"] not in analysed
    assert "analysing" in caplog.text and "failed" in caplog.text
    run(qtbot, target.close())
