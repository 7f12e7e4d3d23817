"""Every store's background writer (:class:`~engine.storage.interface.StoreWriter`): writes
commit in submission order, a future resolves only once its write is committed (another
connection sees it), a failing write fails alone, ``drain_blocking`` and ``close`` finish
every queued write, and misuse is a :class:`UsageError`.

Each test runs its own event loop with ``asyncio.run``, bounded in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.errors import StorageBugError, UsageError
from engine.ids import SessionID, new_session_id
from engine.model.header import Header, UnsafeAllowAll, new_header
from engine.model.session_log import SessionLog
from engine.storage.interface import SessionWrite
from tests.engine._fork import key_from_seed
from tests.engine.storage.backends import Backend
from tests.util import timeout

T = TypeVar("T")
T0 = 1_700_000_000_000
KEY = key_from_seed(7)


def run(main: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout(30))

    return asyncio.run(bounded())


def signed_core(
    batches: int,
    *,
    key: AccountKey = KEY,
    session: SessionID | None = None,
    tag: str = "",
    header: Header | None = None,
) -> CoValueCore:
    """A CoMap with one session of ``batches`` signed batches of one transaction each (every
    count 1..batches is a checkpoint)."""
    core = CoValueCore(header or new_header("comap", UnsafeAllowAll(), created_at=T0))
    sid = session or new_session_id(key.account_id)
    for i in range(batches):
        core.add_local(sid, [["set", f"{tag}k{i}", i]], T0 + i)
        core.sign_pending(key)
    return core


def only_log(core: CoValueCore) -> SessionLog:
    [log] = core.sessions.values()
    return log


def test_writes_commit_in_order_and_resolve_once_committed(store_factory: Backend) -> None:
    """Each future resolves once its write is committed: another connection then sees at
    least that much; the writes commit in the order they were made."""
    core = signed_core(40)
    log = only_log(core)
    store = store_factory.open()
    observer = store_factory.open()

    async def main() -> list[int]:
        writer = store.background_writer()
        writer.start()
        assert writer.running
        try:
            futures = [
                writer.write([core.header] if n == 1 else [], [SessionWrite(log, n - 1, n)]) for n in range(1, 41)
            ]
            seen = []
            for n, future in enumerate(futures, start=1):
                counts = await future
                assert counts == {(core.id, log.session): n}
                [stored] = observer.stored_sessions(core.id)
                assert stored.count >= n
                seen.append(stored.count)
            return seen
        finally:
            await writer.close()
        assert not writer.running

    seen = run(main)
    assert seen == sorted(seen) and seen[-1] == 40
    loaded = observer.load_covalue(core.id)
    assert loaded is not None and not loaded.corrupt
    assert loaded.sessions[log.session].txs == log.txs


@pytest.mark.parametrize("queued", ["together", "one_by_one"])
def test_a_failing_write_fails_alone(store_factory: Backend, queued: str) -> None:
    """A write of another history of a stored session fails with StorageBugError; the writes
    queued around it commit, whether they share its group (``together``) or each has a group
    of its own (``one_by_one``)."""
    mine = signed_core(3)
    sid = only_log(mine).session
    forked = signed_core(5, session=sid, tag="other-", header=mine.header)
    other = signed_core(2, tag="unrelated-")
    store = store_factory.open()

    async def main() -> list[Any]:
        writer = store.background_writer()
        writer.start()
        try:
            writes = [
                ([mine.header], [SessionWrite.pending_of(only_log(mine), 0)]),
                ([], [SessionWrite.pending_of(only_log(forked), 0)]),
                ([other.header], [SessionWrite.pending_of(only_log(other), 0)]),
            ]
            if queued == "together":
                futures = [writer.write(h, w) for h, w in writes]
                return list(await asyncio.gather(*futures, return_exceptions=True))
            return [(await asyncio.gather(writer.write(h, w), return_exceptions=True))[0] for h, w in writes]
        finally:
            await writer.close()

    first, failed, third = run(main)
    assert first == {(mine.id, sid): 3}
    assert isinstance(failed, StorageBugError) and "another history" in str(failed)
    assert third == {(other.id, only_log(other).session): 2}
    assert [s.count for s in store.stored_sessions(mine.id)] == [3]
    loaded = store.load_covalue(mine.id)
    assert loaded is not None and loaded.sessions[sid].txs == only_log(mine).txs


def test_drain_and_close_finish_every_queued_write(store_factory: Backend) -> None:
    """drain_blocking() returns once every write so far committed; close() finishes the rest
    and settles every future."""
    cores = [signed_core(3, tag=f"c{i}-") for i in range(60)]
    store = store_factory.open()

    async def main() -> list[asyncio.Future[Any]]:
        writer = store.background_writer()
        writer.start()
        first = [writer.write([c.header], [SessionWrite.pending_of(only_log(c), 0)]) for c in cores[:30]]
        writer.drain_blocking()
        assert {row.id for row in store.covalue_ids()} == {c.id for c in cores[:30]}
        rest = [writer.write([c.header], [SessionWrite.pending_of(only_log(c), 0)]) for c in cores[30:]]
        await writer.close()
        await asyncio.sleep(0)  # settling is scheduled on this loop
        await asyncio.sleep(0)
        return first + rest

    futures = run(main)
    assert all(f.done() and not f.exception() for f in futures)
    assert {row.id for row in store.covalue_ids()} == {c.id for c in cores}


def test_misuse_is_a_usage_error(store_factory: Backend) -> None:
    """write() before start() or after close(), and start() twice, are usage errors."""
    store = store_factory.open()
    core = signed_core(1)

    async def main() -> None:
        writer = store.background_writer()
        with pytest.raises(UsageError):
            writer.write([core.header])
        writer.start()
        with pytest.raises(UsageError):
            writer.start()
        await writer.write([core.header])
        await writer.close()
        with pytest.raises(UsageError):
            writer.write([core.header])
        await writer.close()  # closing twice is harmless

    run(main)
    assert store.has(core.id)
