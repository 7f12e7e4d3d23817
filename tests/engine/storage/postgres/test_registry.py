"""The node registry on the real PostgreSQL server: registering, heartbeats, gone after missed
heartbeats (by the database's clock), unregistering, and a restarted node taking over its URL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from engine.storage import open_store
from engine.storage.interface import (
    GONE_AFTER_MISSED_BEATS,
    ClusterRegistry,
    ClusterStore,
    NodeBeat,
    NodeRegistration,
    Store,
)
from engine.storage.postgres.location import connect_location
from engine.storage.postgres.registry import MAX_REPORTED_PEERS, NODES_TABLE
from tests.util import wait_until

#: A heartbeat interval no test run is slow enough to miss three of.
LONG_MS = 600_000
#: A heartbeat interval short enough to see a node go within a test.
SHORT_MS = 50


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    opened = open_store(pg_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def registry(store: Store) -> Iterator[ClusterRegistry]:
    assert isinstance(store, ClusterStore)
    made = store.cluster_registry()
    assert isinstance(made, ClusterRegistry)
    try:
        yield made
    finally:
        made.close()


def reg(node: str, url: str, interval_ms: int = LONG_MS) -> NodeRegistration:
    return NodeRegistration(node, f"acc_z{node}", url, interval_ms)


def test_a_sqlite_store_has_no_registry(tmp_path: Path) -> None:
    sqlite = open_store(tmp_path / "one")
    try:
        assert not isinstance(sqlite, ClusterStore)
    finally:
        sqlite.close()


def test_the_schema_setup_creates_the_table(pg_url: str) -> None:
    async def has_table() -> bool:
        url, password = connect_location(pg_url)
        conn = await asyncpg.connect(url, password=password)
        try:
            return await conn.fetchval("SELECT to_regclass($1)", NODES_TABLE) is not None
        finally:
            await conn.close()

    assert not asyncio.run(has_table())
    open_store(pg_url).close()
    assert asyncio.run(has_table())
    open_store(pg_url).close()  # again: IF NOT EXISTS, no error


def test_register_heartbeat_and_list(registry: ClusterRegistry) -> None:
    a, b = reg("a", "ws://127.0.0.1:9001"), reg("b", "ws://127.0.0.1:9000")
    registry.register(a)
    registry.register(b)
    rows = registry.nodes()
    assert [r.node for r in rows] == ["b", "a"]  # sorted by URL
    assert all(not r.gone and r.peers == 0 and r.cursor is None and r.lag is None for r in rows)
    assert all(r.started_ms == r.beat_ms for r in rows)

    peer_rows = [{"peer_id": "in:1:acc_zX", "kind": "downstream", "behind": 3}]
    registry.heartbeat(a, NodeBeat(peers=1, peer_rows=peer_rows, cursor=42, lag=7))
    row = {r.node: r for r in registry.nodes()}["a"]
    assert (row.peers, list(row.peer_rows), row.cursor, row.lag) == (1, peer_rows, 42, 7)
    assert row.beat_ms >= row.started_ms
    assert row.account == "acc_za" and row.url == "ws://127.0.0.1:9001" and row.interval_ms == LONG_MS


def test_a_node_is_gone_after_missed_heartbeats_and_back_with_the_next(registry: ClusterRegistry) -> None:
    quick, steady = reg("quick", "ws://127.0.0.1:9100", SHORT_MS), reg("steady", "ws://127.0.0.1:9101")
    registry.register(quick)
    registry.register(steady)

    def row(name: str) -> object:
        return {r.node: r for r in registry.nodes()}[name]

    wait_until(lambda: row("quick").gone, 10, "the quick node to count as gone")  # type: ignore[attr-defined]
    gone = row("quick")
    assert gone.age_ms > SHORT_MS * GONE_AFTER_MISSED_BEATS  # type: ignore[attr-defined]
    assert not row("steady").gone  # type: ignore[attr-defined]
    # A heartbeat brings it back (decided from the database's clock, not this process's).
    registry.heartbeat(quick, NodeBeat(peers=2))
    back = row("quick")
    assert back.peers == 2 and back.beat_ms > gone.beat_ms  # type: ignore[attr-defined]


def test_unregister_removes_only_that_node(registry: ClusterRegistry) -> None:
    registry.register(reg("a", "ws://127.0.0.1:9001"))
    registry.register(reg("b", "ws://127.0.0.1:9002"))
    registry.unregister("a")
    assert [r.node for r in registry.nodes()] == ["b"]
    registry.unregister("a")  # harmless twice
    assert [r.node for r in registry.nodes()] == ["b"]


def test_a_forgotten_node_comes_back_with_its_heartbeat(registry: ClusterRegistry) -> None:
    a = reg("a", "ws://127.0.0.1:9001")
    registry.register(a)
    registry.unregister("a")
    registry.heartbeat(a, NodeBeat(peers=3))
    assert [(r.node, r.peers) for r in registry.nodes()] == [("a", 3)]


def test_a_node_registering_at_a_url_replaces_the_one_that_was_there(registry: ClusterRegistry) -> None:
    registry.register(reg("old", "ws://127.0.0.1:9001"))
    registry.register(reg("other", "ws://127.0.0.1:9002"))
    registry.register(reg("new", "ws://127.0.0.1:9001"))
    assert sorted(r.node for r in registry.nodes()) == ["new", "other"]


def test_peer_rows_are_bounded_and_the_count_exact(registry: ClusterRegistry) -> None:
    a = reg("a", "ws://127.0.0.1:9001")
    registry.register(a)
    many = [{"peer_id": f"in:{i}"} for i in range(MAX_REPORTED_PEERS + 25)]
    registry.heartbeat(a, NodeBeat(peers=len(many), peer_rows=many))
    (row,) = registry.nodes()
    assert row.peers == len(many)
    assert list(row.peer_rows) == many[:MAX_REPORTED_PEERS]


def test_two_registries_on_one_database_see_each_other(store: Store, registry: ClusterRegistry) -> None:
    assert isinstance(store, ClusterStore)
    other = store.cluster_registry()
    try:
        registry.register(reg("a", "ws://127.0.0.1:9001"))
        other.register(reg("b", "ws://127.0.0.1:9002"))
        assert [r.node for r in other.nodes()] == [r.node for r in registry.nodes()] == ["a", "b"]
    finally:
        other.close()
