"""A node on PostgreSQL makes its CAS store calls on a thread and connection of their own
(engine/net/kv_worker.py): a ``kv_cas`` waiting on a slot's row, locked by another
transaction, holds up no other connection; calls keep their order; requests beyond the
waiting limit are refused ``kv_busy``. Real loopback WebSockets, a real database lock."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.errors import KVBusy
from engine.kv.envelope import Present
from engine.kv.store import Conflict, Stored
from engine.net import kv_worker
from engine.net.kv_client import RemoteKV
from engine.storage.postgres.connection import ConnectParams
from tests.engine.net.conftest import run, syncing, until
from tests.engine.net.test_kv_cluster_watch import ALICE, cluster_node
from tests.util import timeout

KEY = "busy"


async def lock_the_slot(pg_url: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    """Another client's transaction holding ALICE's slot ``KEY`` ``FOR UPDATE``."""
    holder = await ConnectParams(pg_url).connect()
    held = holder.transaction()
    await held.start()
    await holder.execute("SELECT 1 FROM kv WHERE namespace = $1 AND key = $2 FOR UPDATE", ALICE.account_id, KEY)
    return holder, held


async def until_waiting_on_a_lock(holder: asyncpg.Connection, units: float = 5) -> None:
    """Until some other session of the database waits for a lock (the node's CAS)."""
    deadline = asyncio.get_running_loop().time() + timeout(units)
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    while not await holder.fetchval(query):
        assert asyncio.get_running_loop().time() < deadline, "no CAS came to wait on the locked slot"
        await asyncio.sleep(0.01)


def test_a_cas_waiting_on_a_locked_slot_holds_up_no_other_connection(pg_url: str) -> None:
    async def scenario() -> None:
        async with cluster_node(pg_url) as a:
            alice = await RemoteKV.open(a.url, ALICE, timeout=timeout(5))
            try:
                assert await alice.cas(KEY, 0, Present(1)) == Stored(1)
                holder, held = await lock_the_slot(pg_url)
                try:
                    waiting = asyncio.ensure_future(alice.cas(KEY, 1, Present(2)))
                    await until_waiting_on_a_lock(holder)
                    # Meanwhile a new client connects and syncs a CoValue through the node;
                    # made on the node's loop, the waiting CAS would stop both.
                    async with syncing(a.url) as bob:
                        comap = bob.node.create_map(None)
                        bob.node.set(comap.id, "k", 1)
                        await until(lambda: comap.id in a.node.covalues, what="the node to take Bob's CoMap")
                    assert not waiting.done() and a.kv_worker.waiting == 1
                finally:
                    await held.rollback()
                    await holder.close()
                assert await asyncio.wait_for(waiting, timeout(10)) == Stored(2)
                assert a.kv_worker.waiting == 0
            finally:
                await alice.close()

    run(scenario)


def test_calls_keep_their_order_and_requests_beyond_the_limit_are_refused_busy(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_worker, "MAX_KV_WAITING", 2)

    async def scenario() -> None:
        async with cluster_node(pg_url) as a:
            alice = await RemoteKV.open(a.url, ALICE, timeout=timeout(5))
            try:
                assert await alice.cas(KEY, 0, Present(1)) == Stored(1)
                holder, held = await lock_the_slot(pg_url)
                try:
                    first = asyncio.ensure_future(alice.cas(KEY, 1, Present("first")))
                    await until_waiting_on_a_lock(holder)
                    # the first waits on the lock, the second behind it, two more find no room
                    later = [asyncio.ensure_future(alice.cas(KEY, 1, Present(n))) for n in ("second", "3", "4")]
                    await until(lambda: later[1].done() and later[2].done(), what="the refusals")
                    for refused in later[1:]:
                        with pytest.raises(KVBusy):
                            refused.result()
                    assert not first.done() and not later[0].done()
                finally:
                    await held.rollback()
                    await holder.close()
                # in the order they came: the first stores, the second finds its generation gone
                assert await asyncio.wait_for(first, timeout(10)) == Stored(2)
                second = await asyncio.wait_for(later[0], timeout(10))
                assert isinstance(second, Conflict) and (second.generation, second.slot) == (2, Present("first"))
            finally:
                await alice.close()

    run(scenario)
