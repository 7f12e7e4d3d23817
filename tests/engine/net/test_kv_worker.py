"""A node on PostgreSQL makes its CAS store calls on a thread and connection of their own
(engine/net/kv_worker.py): a ``kv_cas`` waiting on a slot's row, locked by another
transaction, holds up no other connection; calls keep their order; requests beyond the
waiting limit are refused ``kv_busy``. Real loopback WebSockets, a real database lock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest

from engine.errors import KVBusy
from engine.kv.envelope import Present
from engine.kv.store import Conflict, Stored
from engine.net import kv_worker
from engine.net.kv_client import RemoteKV
from engine.storage.postgres.connection import ConnectParams
from tests.engine.net.conftest import run, syncing, until
from tests.engine.net.test_kv_cluster_watch import ALICE, ClusterNode, cluster_node
from tests.util import timeout

KEY = "busy"


@dataclass
class LockedSlot:
    """Another client's transaction holding ALICE's slot ``KEY`` ``FOR UPDATE``."""

    holder: asyncpg.Connection
    held: asyncpg.transaction.Transaction
    released: bool = False

    async def until_a_cas_waits(self, units: float = 5) -> None:
        """Until some other session of the database waits for a lock (the node's CAS)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout(units)
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        while not await self.holder.fetchval(query):
            assert loop.time() < deadline, "no CAS came to wait on the locked slot"
            await asyncio.sleep(0.01)

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.held.rollback()
            await self.holder.close()


@asynccontextmanager
async def a_locked_slot(pg_url: str) -> AsyncIterator[tuple[ClusterNode, RemoteKV, LockedSlot]]:
    """A node on ``pg_url``, ALICE connected to it with ``KEY`` stored at generation 1, and
    that slot's row locked by another transaction (released at the latest on exit)."""
    async with cluster_node(pg_url) as node:
        alice = await RemoteKV.open(node.url, ALICE, timeout=timeout(5))
        try:
            assert await alice.cas(KEY, 0, Present(1)) == Stored(1)
            holder = await ConnectParams(pg_url).connect()
            held = holder.transaction()
            await held.start()
            await holder.execute("SELECT 1 FROM kv WHERE namespace = $1 AND key = $2 FOR UPDATE", ALICE.account_id, KEY)
            lock = LockedSlot(holder, held)
            try:
                yield node, alice, lock
            finally:
                await lock.release()
        finally:
            await alice.close()


def test_a_cas_waiting_on_a_locked_slot_holds_up_no_other_connection(pg_url: str) -> None:
    async def scenario() -> None:
        async with a_locked_slot(pg_url) as (a, alice, lock):
            waiting = asyncio.ensure_future(alice.cas(KEY, 1, Present(2)))
            await lock.until_a_cas_waits()
            # Meanwhile a new client connects and syncs a CoValue through the node; made on
            # the node's loop, the waiting CAS would stop both.
            async with syncing(a.url) as bob:
                comap = bob.node.create_map(None)
                bob.node.set(comap.id, "k", 1)
                await until(lambda: comap.id in a.node.covalues, what="the node to take Bob's CoMap")
            assert not waiting.done() and a.kv_worker.waiting == 1
            await lock.release()
            assert await asyncio.wait_for(waiting, timeout(10)) == Stored(2)
            assert a.kv_worker.waiting == 0

    run(scenario)


def test_calls_keep_their_order_and_requests_beyond_the_limit_are_refused_busy(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kv_worker, "MAX_KV_WAITING", 2)

    async def scenario() -> None:
        async with a_locked_slot(pg_url) as (_a, alice, lock):
            first = asyncio.ensure_future(alice.cas(KEY, 1, Present("first")))
            await lock.until_a_cas_waits()
            # the first waits on the lock, the second behind it, two more find no room
            later = [asyncio.ensure_future(alice.cas(KEY, 1, Present(n))) for n in ("second", "3", "4")]
            await until(lambda: later[1].done() and later[2].done(), what="the refusals")
            for refused in later[1:]:
                with pytest.raises(KVBusy):
                    refused.result()
            assert not first.done() and not later[0].done()
            await lock.release()
            # in the order they came: the first stores, the second finds its generation gone
            assert await asyncio.wait_for(first, timeout(10)) == Stored(2)
            second = await asyncio.wait_for(later[0], timeout(10))
            assert isinstance(second, Conflict) and (second.generation, second.slot) == (2, Present("first"))

    run(scenario)
