"""A full disk under a SQLite store (issue 12, point 5), made for real: SQLite's
``PRAGMA max_page_count`` caps the writing connection's file, and a write past it fails with
SQLITE_FULL exactly as on a full filesystem (the same code path: the pager cannot grow the
file). ``tests/e2e/test_full_disk.py`` does the same on a real full tmpfs.

What must hold: writers get :class:`StorageUnavailable` (``storage_unavailable``) naming the
full disk — not "cannot rollback - no transaction is active", which hid it before; nothing of
the failed write is kept; readers keep reading; the cause is logged once however many writes
fail; and writes resume by themselves once space returns.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from engine.errors import StorageUnavailable
from engine.model.header import Header, UnsafeAllowAll, new_header
from engine.storage.sqlite.queue import AsyncStore
from engine.storage.sqlite.store import SQLiteStore
from tests.util import timeout

T = TypeVar("T")
T0 = 1_700_000_000_000
QUEUE_LOGGER = "engine.storage.sqlite.queue"


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout(20))

    return asyncio.run(bounded())


def headers(n: int, size: int = 4000) -> list[Header]:
    """``n`` distinct headers of about ``size`` bytes each (their meta)."""
    return [new_header("comap", UnsafeAllowAll(), meta="m" * size, created_at=T0 + i) for i in range(n)]


def fill(conn: sqlite3.Connection) -> None:
    """Cap the file at the pages it has now: the next write that needs a page fails."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823")


def listed(path: Path) -> set[str]:
    reader = SQLiteStore(path, readonly=True)
    try:
        return {row.id for row in reader.listing().covalues}
    finally:
        reader.close()


def test_synchronous_write_on_a_full_disk(tmp_path: Path) -> None:
    """A store's own write on a full disk raises storage_unavailable with the real cause, keeps
    nothing of the write, leaves the store readable and writable once space returns."""
    path = tmp_path / "store"
    store = SQLiteStore(path)
    try:
        kept = headers(1)
        store.write(kept)
        fill(store.conn)
        with pytest.raises(StorageUnavailable) as info:
            store.write(headers(20))
        assert info.value.code == "storage_unavailable"
        assert "disk is full" in info.value.detail
        assert "cannot rollback" not in info.value.detail
        assert not store.conn.in_transaction
        assert listed(path) == {h.covalue_id() for h in kept}
        free(store.conn)
        later = headers(3)
        store.write(later)
        assert listed(path) == {h.covalue_id() for h in kept + later}
    finally:
        store.close()


def test_queued_writes_on_a_full_disk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every queued write on a full disk fails with storage_unavailable; ``unavailable`` says
    so; the cause is logged once at error level for many failures; a reader keeps reading;
    once space returns the next write commits, ``unavailable`` clears, and that is logged."""
    caplog.set_level(logging.INFO, logger=QUEUE_LOGGER)
    path = tmp_path / "store"
    SQLiteStore(path).close()

    async def scenario() -> None:
        writer = AsyncStore(path)
        writer.start()
        try:
            first = headers(1)
            await writer.write(first)
            await writer.submit(fill)
            failures = []
            for _ in range(5):
                with pytest.raises(StorageUnavailable) as info:
                    await writer.write(headers(20))
                failures.append(info.value)
                assert listed(path) == {h.covalue_id() for h in first}  # reads go on
            assert all("disk is full" in f.detail for f in failures)
            assert writer.unavailable is not None
            await writer.submit(free)
            later = headers(2)
            await writer.write(later)
            assert writer.unavailable is None
            assert listed(path) == {h.covalue_id() for h in first + later}
        finally:
            await writer.close()

    run(scenario)
    errors = [r.getMessage() for r in caplog.records if r.name == QUEUE_LOGGER and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "disk is full" in errors[0]
    assert "cannot rollback" not in errors[0]
    resumed = [r.getMessage() for r in caplog.records if r.name == QUEUE_LOGGER and "resumed" in r.getMessage()]
    assert len(resumed) == 1
