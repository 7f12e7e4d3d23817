"""AsyncStore (DESIGN §9): one ordered queue, grouped commits, per-operation failure.

Each test runs its own event loop with ``asyncio.run``. Operations that must pile up in the
queue are held back by a first operation that blocks the worker thread on an Event, so the
grouping does not depend on timing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.errors import InvalidContent, StorageBugError
from engine.ids import new_session_id
from engine.model.header import UnsafeAllowAll, new_header
from engine.node.loading import load_core
from engine.recovery.correction import replace_session
from engine.storage.interface import SessionWrite
from engine.storage.sqlite.queue import MAX_GROUP_OPERATIONS, AsyncStore
from engine.storage.sqlite.rows import replace_rows, write_rows
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import key_from_seed
from tests.util import timeout, wait_until

T = TypeVar("T")
T0 = 1_700_000_000_000


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a fresh loop, failing the test if it takes more than 30 units."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout(30))

    return asyncio.run(bounded())


def make_log_table(path: Path) -> None:
    SQLiteStore(path).close()
    conn = sqlite3.connect(store_file(path), isolation_level=None)
    try:
        conn.execute("CREATE TABLE op_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, grp INTEGER)")
    finally:
        conn.close()


def logged(path: Path) -> list[tuple[int, int]]:
    """(n, group) of every committed op_log row, in commit order (read by a new connection)."""
    conn = sqlite3.connect(store_file(path))
    try:
        return conn.execute("SELECT n, grp FROM op_log ORDER BY seq").fetchall()
    finally:
        conn.close()


def append(astore: AsyncStore, n: int) -> Callable[[sqlite3.Connection], int]:
    def op(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO op_log (n, grp) VALUES (?, ?)", (n, astore.groups_committed))
        return n

    return op


def gate(started: threading.Event, release: threading.Event) -> Callable[[Any], str]:
    """An operation that holds the worker until ``release`` is set."""

    def op(_conn: Any) -> str:
        started.set()
        if not release.wait(timeout(10)):
            raise AssertionError("gate was never released")
        return "gate"

    return op


async def hold_worker(astore: AsyncStore) -> tuple[asyncio.Future[str], threading.Event]:
    """Submit a gate and wait until the worker runs it; set the returned Event to go on."""
    started, release = threading.Event(), threading.Event()
    future = astore.submit(gate(started, release))
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(None, started.wait, timeout(10)):
        raise AssertionError("worker never started the gate operation")
    return future, release


def test_operations_run_in_submission_order(tmp_path: Path) -> None:
    """Operations commit in the order they were submitted, and each future gets its result."""
    make_log_table(tmp_path)

    async def main() -> list[int]:
        astore = AsyncStore(tmp_path)
        astore.start()
        try:
            futures = [astore.submit(append(astore, n)) for n in range(300)]
            results = await asyncio.gather(*futures)
            # A resolved future means committed: another connection already sees the rows.
            assert [n for n, _g in logged(tmp_path)] == list(range(300))
            return list(results)
        finally:
            await astore.close()

    assert run(main) == list(range(300))


def test_queued_operations_commit_in_groups(tmp_path: Path) -> None:
    """Operations waiting together commit as a few groups of at most MAX_GROUP_OPERATIONS."""
    make_log_table(tmp_path)
    ops = 600

    async def main() -> int:
        astore = AsyncStore(tmp_path)
        astore.start()
        try:
            gate_done, release = await hold_worker(astore)
            futures = [astore.submit(append(astore, n)) for n in range(ops)]
            release.set()
            await gate_done
            await asyncio.gather(*futures)
            return astore.groups_committed
        finally:
            await astore.close()

    groups = run(main)
    rows = logged(tmp_path)
    assert [n for n, _g in rows] == list(range(ops))
    sizes: dict[int, int] = {}
    for _n, group in rows:
        sizes[group] = sizes.get(group, 0) + 1
    # The gate's group, then the waiting operations in as few groups as the limit allows.
    assert groups < ops
    assert groups == 1 + -(-ops // MAX_GROUP_OPERATIONS), sizes
    assert max(sizes.values()) <= MAX_GROUP_OPERATIONS
    assert list(sizes) == sorted(sizes), "groups must follow submission order"


def test_failing_operation_fails_alone(tmp_path: Path) -> None:
    """A failing operation rolls back its own writes and fails its own future only."""
    make_log_table(tmp_path)

    def fails_after_writing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO op_log (n, grp) VALUES (-1, -1)")
        raise ValueError("boom")

    def raises_engine_error(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO op_log (n, grp) VALUES (-2, -2)")
        raise InvalidContent("not this one")

    def bad_sql(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    async def main() -> list[Any]:
        astore = AsyncStore(tmp_path)
        astore.start()
        try:
            gate_done, release = await hold_worker(astore)
            futures: list[asyncio.Future[Any]] = []
            for n in range(9):
                futures.append(astore.submit(append(astore, n)))
                if n == 2:
                    futures.append(astore.submit(fails_after_writing))
                if n == 5:
                    futures.append(astore.submit(raises_engine_error))
                if n == 7:
                    futures.append(astore.submit(bad_sql))
            release.set()
            await gate_done
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert astore.groups_committed == 2, "all of them were one group"
            return results
        finally:
            await astore.close()

    results = run(main)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert [r for r in results if not isinstance(r, BaseException)] == list(range(9))
    assert len(errors) == 3
    assert isinstance(errors[0], StorageBugError) and "boom" in str(errors[0])
    assert isinstance(errors[1], InvalidContent) and errors[1].detail == "not this one"
    assert isinstance(errors[2], StorageBugError) and "no_such_table" in str(errors[2])
    assert [n for n, _g in logged(tmp_path)] == list(range(9))


def test_replace_is_applied_after_the_appends_before_it(tmp_path: Path) -> None:
    """A replace submitted after appends of the same session is applied after them."""
    key = key_from_seed(4)
    header = new_header("comap", UnsafeAllowAll(), created_at=T0)
    session = new_session_id(key.account_id)
    local = CoValueCore(header)

    def write(core: CoValueCore, prefix: str, count: int, made_at: int, signer: AccountKey) -> None:
        for i in range(count):
            core.add_local(session, [["set", f"{prefix}/{i}", i]], made_at + i)
        core.sign_pending(signer)

    write(local, "common", 3, T0, key)
    log = local.sessions[session]
    first = SessionWrite(log, 0, 3)
    twin = CoValueCore(header)
    twin.apply_content({session: log.chunk()})
    write(local, "mine", 4, T0 + 10, key)
    second = SessionWrite(log, 3, 7)
    write(twin, "theirs", 5, T0 + 20, key)
    outcome = replace_session(local, session, twin.sessions[session].chunk(), owner=key)
    assert outcome.changed and outcome.conflict_session == session + "!"
    replaced = [local.sessions[session], local.sessions[outcome.conflict_session]]

    async def main() -> None:
        astore = AsyncStore(tmp_path)
        astore.start()
        try:
            futures = [
                astore.write([local.header], [first]),
                astore.submit(lambda conn: write_rows(conn, [], [second])),
                astore.submit(lambda conn: replace_rows(conn, local.header, replaced)),
            ]
            await asyncio.gather(*futures)
        finally:
            await astore.close()

    run(main)
    store = SQLiteStore(tmp_path, readonly=True)
    try:
        loaded = load_core(store, local.id)
    finally:
        store.close()
    assert loaded is not None and not loaded.corrupt
    assert loaded.sessions[session].txs == twin.sessions[session].txs
    assert loaded.sessions[session + "!"].txs == log.txs[3:7]
    assert dict(loaded.known_state().sessions) == dict(local.known_state().sessions)
    assert loaded.comap().items() == local.comap().items()


def test_close_finishes_queued_work(tmp_path: Path) -> None:
    """close() returns only after every queued operation committed and settled."""
    make_log_table(tmp_path)

    async def main() -> list[asyncio.Future[int]]:
        astore = AsyncStore(tmp_path)
        astore.start()
        gate_done, release = await hold_worker(astore)
        futures = [astore.submit(append(astore, n)) for n in range(500)]
        release.set()
        await astore.close()
        await asyncio.sleep(0)  # settling is scheduled on this loop with call_soon_threadsafe
        assert gate_done.done()
        return futures

    futures = run(main)
    assert all(f.done() and f.result() == n for n, f in enumerate(futures))
    assert [n for n, _g in logged(tmp_path)] == list(range(500))


def test_submit_needs_a_started_store(tmp_path: Path) -> None:
    """submit() before start() or after close() is a usage error (a RuntimeError)."""

    async def main() -> None:
        astore = AsyncStore(tmp_path)
        with pytest.raises(RuntimeError):
            astore.submit(lambda _conn: None)
        astore.start()
        with pytest.raises(RuntimeError):
            astore.start()
        await astore.close()
        with pytest.raises(RuntimeError):
            astore.submit(lambda _conn: None)
        await astore.close()  # closing twice is harmless

    run(main)


def test_submit_during_close_is_run_or_refused(tmp_path: Path) -> None:
    """An operation submitted while close() is under way runs or raises; its future never hangs."""
    make_log_table(tmp_path)

    async def main() -> str:
        astore = AsyncStore(tmp_path)
        astore.start()
        worker = astore._thread  # observed only, to submit at one exact moment
        assert worker is not None
        closing = asyncio.create_task(astore.close())
        await asyncio.sleep(0)  # close() has queued its stop and waits for the worker
        # The worker has stopped, and close() has not yet resumed to notice.
        wait_until(lambda: not worker.is_alive(), 10, "the store worker to stop")
        try:
            late = astore.submit(append(astore, 1))
        except RuntimeError:
            outcome = "refused"
        else:
            done, _pending = await asyncio.wait({late}, timeout=timeout(2))
            outcome = "ran" if done else "hung"
        await closing
        return outcome

    assert run(main) in ("refused", "ran")
