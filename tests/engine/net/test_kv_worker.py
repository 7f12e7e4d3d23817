"""A node makes its CAS store calls on a thread and connection of their own
(engine/net/kv_worker.py): on PostgreSQL a ``kv_cas`` waiting on a slot's row, locked by
another transaction, and on SQLite one waiting for the file's write lock, held by another
connection, holds up no other connection; calls keep their order; requests beyond the
waiting limit are refused ``kv_busy``. Real loopback WebSockets, real database locks."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from engine.crypto import AccountKey
from engine.errors import KVBusy
from engine.kv.envelope import Present
from engine.kv.store import Conflict, Stored
from engine.net import kv_worker
from engine.net.kv_client import RemoteKV
from engine.net.kv_worker import KvWorker
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.storage.interface import OwnKVStore
from engine.storage.postgres.connection import ConnectParams
from engine.storage.sqlite.connection import STORE_FILE
from tests.engine.net.conftest import follow, run, syncing, until
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


# -- SQLite ------------------------------------------------------------------------------------


@asynccontextmanager
async def sqlite_node(path: Path) -> AsyncIterator[tuple[LocalNode, KvWorker, str]]:
    """A node on the SQLite store at ``path``, making its CAS calls as ``node serve`` does."""
    node = LocalNode.open(path, AccountKey.generate(), background_commits=True)
    assert isinstance(node.store, OwnKVStore)
    shell = SyncShell(node)
    server = NodeServer(shell)
    worker = KvWorker(shell, node.store)
    await worker.start()
    try:
        yield node, worker, await server.start()
    finally:
        await server.close()
        await worker.stop()
        shell.close()
        await node.aclose()


def write_locked(path: Path) -> sqlite3.Connection:
    """Another connection holding the store file's write lock (until it rolls back)."""
    holder = sqlite3.connect(path / STORE_FILE, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_on_sqlite_a_cas_waiting_for_the_write_lock_holds_up_no_other_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with sqlite_node(tmp_path / "node") as (node, worker, url):
            alice = await RemoteKV.open(url, ALICE, timeout=timeout(5))
            try:
                assert await alice.cas(KEY, 0, Present(1)) == Stored(1)
                async with syncing(url) as bob:
                    comap = bob.node.create_map(None)
                    bob.node.set(comap.id, "k", 1)
                    await until(lambda: comap.id in node.covalues, what="the node to take Bob's CoMap")
                    await node.durable()
                holder = write_locked(tmp_path / "node")
                try:
                    waiting = asyncio.ensure_future(alice.cas(KEY, 1, Present(2)))
                    await until(lambda: worker.waiting == 1, what="the CAS to be handed to the worker")
                    # Meanwhile a new client connects and reads Bob's CoMap through the node;
                    # made on the node's loop, the CAS waiting for the lock would stop both.
                    async with syncing(url, bob.node.account) as again:
                        follow(again, comap.id)
                        await until(lambda: comap.id in again.node.covalues, what="the CoMap to reach Bob again")
                        assert again.node.get_map(comap.id) == {"k": 1}
                    assert not waiting.done() and worker.waiting == 1
                finally:
                    holder.rollback()
                    holder.close()
                assert await asyncio.wait_for(waiting, timeout(10)) == Stored(2)
                assert worker.waiting == 0
            finally:
                await alice.close()

    run(scenario)


def test_on_sqlite_the_cas_calls_of_node_serve_keep_their_order(tmp_path: Path) -> None:
    """Requests from two clients, each waiting for the one before: stored in the order they came."""

    async def scenario() -> None:
        async with sqlite_node(tmp_path / "node") as (_node, worker, url):
            alice = await RemoteKV.open(url, ALICE, timeout=timeout(5))
            again = await RemoteKV.open(url, ALICE, timeout=timeout(5))
            try:
                holder = write_locked(tmp_path / "node")
                try:
                    first = asyncio.ensure_future(alice.cas(KEY, 0, Present("first")))
                    await until(lambda: worker.waiting == 1, what="the first CAS to be handed over")
                    second = asyncio.ensure_future(again.cas(KEY, 0, Present("second")))
                    await until(lambda: worker.waiting == 2, what="the second CAS to be handed over")
                finally:
                    holder.rollback()
                    holder.close()
                assert await asyncio.wait_for(first, timeout(10)) == Stored(1)
                lost = await asyncio.wait_for(second, timeout(10))
                assert isinstance(lost, Conflict) and (lost.generation, lost.slot) == (1, Present("first"))
            finally:
                await again.close()
                await alice.close()

    run(scenario)
