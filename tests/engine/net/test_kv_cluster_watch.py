"""A watch on one node of a cluster hears of the CAS slots stored through the other nodes
(engine/storage/postgres/kv.py records them in the change log; engine/net/follow.py hands
them to engine/sync/kv_service.py ``stored_elsewhere``), over real loopback WebSockets, two
nodes on one PostgreSQL database, each making its CAS store calls off its loop
(engine/net/kv_worker.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from engine.crypto import AccountKey
from engine.kv.envelope import Present, Tombstone
from engine.kv.store import Stored
from engine.net.follow import ClusterFollower
from engine.net.kv_client import RemoteKV, SlotChange
from engine.net.kv_worker import KvWorker
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.storage.interface import ChangeLogStore
from engine.storage.opener import open_store
from engine.storage.postgres.feed import parse_slot_change, slot_change
from tests.engine.net.conftest import run
from tests.util import timeout

ALICE = AccountKey.generate()


@dataclass
class ClusterNode:
    node: LocalNode
    shell: SyncShell
    follower: ClusterFollower
    kv_worker: KvWorker
    url: str


@asynccontextmanager
async def cluster_node(pg_url: str) -> AsyncIterator[ClusterNode]:
    store = open_store(pg_url)
    assert isinstance(store, ChangeLogStore)
    node = LocalNode(AccountKey.generate(), store, background_commits=True)
    shell = SyncShell(node)
    server = NodeServer(shell)
    follower = ClusterFollower(shell, store.change_feed())
    kv_worker = KvWorker(shell, store)
    await follower.start()
    await kv_worker.start()
    try:
        yield ClusterNode(node, shell, follower, kv_worker, await server.start())
    finally:
        await server.close()
        await kv_worker.stop()
        await follower.stop()
        shell.close()
        await node.aclose()


async def next_change(watch: object) -> SlotChange:
    return await asyncio.wait_for(watch.next(), timeout(10))  # type: ignore[attr-defined]


def test_a_slot_change_name_reads_back_whole() -> None:
    for namespace, key in [("co_zAbc", "k"), ("ns", "a/b/c"), ("ns", 'quote " and [json]'), ("ns", "ünïcode")]:
        assert parse_slot_change(slot_change(namespace, key)) == (namespace, key)
    assert parse_slot_change("co_zSomeCoValue") is None
    assert parse_slot_change("kv:not json") is None
    assert parse_slot_change('kv:["only one"]') is None


def test_a_watch_hears_of_slots_stored_through_another_node(pg_url: str) -> None:
    async def scenario() -> None:
        async with cluster_node(pg_url) as a, cluster_node(pg_url) as b:
            on_a = await RemoteKV.open(a.url, ALICE, timeout=timeout(5))
            on_b = await RemoteKV.open(b.url, ALICE, timeout=timeout(5))
            try:
                watch = await on_b.watch("lists/")
                assert isinstance(await on_a.cas("lists/x", 0, Present(1)), Stored)
                change = await next_change(watch)
                assert (change.key, change.generation, change.slot) == ("lists/x", 1, Present(1))
                # outside the prefix: nothing; then a tombstone stored elsewhere
                await on_a.cas("other", 0, Present("no"))
                await on_a.cas("lists/x", 1, Tombstone(0, ALICE.account_id))
                change = await next_change(watch)
                assert (change.key, change.generation) == ("lists/x", 2)
                assert isinstance(change.slot, Tombstone) and change.slot.by == ALICE.account_id
                # changes through this node and through the other, interleaved: the
                # generations each key is told of only grow, and the last state is told
                for gen in range(2, 12):
                    writer = on_a if gen % 2 else on_b
                    assert isinstance(await writer.cas("lists/x", gen, Present(gen)), Stored)
                told: list[int] = []
                while not told or told[-1] < 12:
                    told.append((await next_change(watch)).generation)
                assert told == sorted(set(told)) and told[-1] == 12
                assert (await on_b.get("lists/x")) == (12, Present(11))
            finally:
                await on_a.close()
                await on_b.close()

    run(scenario, units=30)
