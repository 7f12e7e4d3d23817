"""The node registry of a cluster (:class:`~engine.storage.interface.ClusterRegistry`): the
nodes sharing one PostgreSQL database, each with a heartbeat.

One row per running node in ``kintsugi_nodes``: its id, account and advertised sync URL, when
it started, its last heartbeat, the heartbeat interval it keeps, how many peers it has (and,
compactly, which: at most :data:`MAX_REPORTED_PEERS`), and its change cursor and lag behind
the database when it reports them. Every time is taken by the database's clock, so nodes whose
clocks disagree still agree on who is alive; a node is *gone* after
:data:`~engine.storage.interface.GONE_AFTER_MISSED_BEATS` missed heartbeats (decided by the
reader, from the row's own interval, so a node with a short interval is judged by it).

The registry is not store data: nothing of a CoValue or a CAS slot depends on it, and a
Kintsugi that does not know it simply ignores it. So it is not part of the schema's version
(which says what data a store holds, the same in SQLite and PostgreSQL): the schema setup
creates the table (``IF NOT EXISTS``, under the schema lock) in a database of any version.

Rows are removed by :meth:`PostgresRegistry.unregister` (a clean shutdown), replaced when
another node registers at the same URL (it listens there now: the old one is gone), and
forgotten :data:`FORGET_AFTER_MS` after their last heartbeat.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg

from engine import codec
from engine.errors import KintsugiError
from engine.storage.interface import NodeBeat, NodeRecord, NodeRegistration
from engine.storage.postgres.connection import ConnectParams, PgLink

__all__ = [
    "FORGET_AFTER_MS",
    "MAX_REPORTED_PEERS",
    "NODES_TABLE",
    "REGISTRY_SCHEMA",
    "PostgresRegistry",
    "ensure_registry",
]

#: The registry's table.
NODES_TABLE = "kintsugi_nodes"
#: Milliseconds after its last heartbeat when a gone node's row is deleted (by the next node
#: that registers): long enough for an operator to see which node went away.
FORGET_AFTER_MS = 60 * 60 * 1000
#: Peer rows a heartbeat stores, at most (the count is always exact): a node with thousands
#: of clients must not write thousands of rows' worth every few seconds.
MAX_REPORTED_PEERS = 100

#: The table (created if missing; see the module docstring for why it has no version).
REGISTRY_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {NODES_TABLE} ("
    'node text COLLATE "C" PRIMARY KEY, '
    'account text COLLATE "C" NOT NULL, '
    'url text COLLATE "C" NOT NULL, '
    "interval_ms bigint NOT NULL CHECK (interval_ms > 0), "
    "started_ms bigint NOT NULL, "
    "beat_ms bigint NOT NULL, "
    "peers integer NOT NULL DEFAULT 0, "
    "peer_rows bytea NOT NULL DEFAULT ''::bytea, "
    '"cursor" bigint, '
    "lag bigint)"
)

#: The database's clock in milliseconds since the epoch (``clock_timestamp``: the time of the
#: statement, not of its transaction's start).
_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

_UPSERT = (
    f"INSERT INTO {NODES_TABLE} "
    '(node, account, url, interval_ms, started_ms, beat_ms, peers, peer_rows, "cursor", lag) '
    f"SELECT $1, $2, $3, $4, t.now_ms, t.now_ms, $5, $6, $7, $8 FROM (SELECT {_NOW_MS} AS now_ms) AS t "
    "ON CONFLICT (node) DO UPDATE SET account = excluded.account, url = excluded.url, "
    "interval_ms = excluded.interval_ms, beat_ms = excluded.beat_ms, peers = excluded.peers, "
    'peer_rows = excluded.peer_rows, "cursor" = excluded."cursor", lag = excluded.lag'
)


async def ensure_registry(conn: asyncpg.Connection, lock: int) -> None:
    """Create the registry's table if it is missing, holding the advisory lock ``lock`` (the
    schema's), so nodes starting together create it once."""
    if await conn.fetchval("SELECT to_regclass($1)", NODES_TABLE) is not None:
        return
    await conn.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        await conn.execute(REGISTRY_SCHEMA)
    finally:
        with contextlib.suppress(Exception):  # a lost connection released it already
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)


def _peer_rows(rows: Sequence[dict[str, object]]) -> bytes:
    return codec.encode([dict(row) for row in rows[:MAX_REPORTED_PEERS]])


def _decoded_rows(raw: bytes) -> tuple[dict[str, object], ...]:
    """The stored peer rows; none when they do not decode (one damaged row must not hide the
    cluster)."""
    if not raw:
        return ()
    try:
        rows = codec.decode(raw)
    except (KintsugiError, ValueError):
        return ()
    if not isinstance(rows, list):
        return ()
    return tuple(row for row in rows if isinstance(row, dict))


def _record(row: Any) -> NodeRecord:
    return NodeRecord(
        node=str(row["node"]),
        account=str(row["account"]),
        url=str(row["url"]),
        interval_ms=int(row["interval_ms"]),
        started_ms=int(row["started_ms"]),
        beat_ms=int(row["beat_ms"]),
        now_ms=int(row["now_ms"]),
        peers=int(row["peers"]),
        peer_rows=_decoded_rows(bytes(row["peer_rows"])),
        cursor=None if row["cursor"] is None else int(row["cursor"]),
        lag=None if row["lag"] is None else int(row["lag"]),
    )


class PostgresRegistry:
    """:class:`~engine.storage.interface.ClusterRegistry` over a connection of its own (on its
    own loop thread, :class:`~engine.storage.postgres.connection.PgLink`). The table must
    exist: a writable :class:`~engine.storage.postgres.store.PostgresStore` made it when it
    opened. Raises the storage errors of :mod:`engine.storage.postgres.connection`."""

    def __init__(self, params: ConnectParams) -> None:
        self._link = PgLink(params, name="kintsugi-registry")

    def register(self, node: NodeRegistration) -> None:
        async def register(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    f"DELETE FROM {NODES_TABLE} WHERE (url = $1 AND node <> $2) OR beat_ms < {_NOW_MS} - $3",
                    node.url,
                    node.node,
                    FORGET_AFTER_MS,
                )
                await conn.execute(f"DELETE FROM {NODES_TABLE} WHERE node = $1", node.node)
                await conn.execute(
                    _UPSERT, node.node, node.account, node.url, node.interval_ms, 0, _peer_rows(()), None, None
                )

        self._link.call(register, "register node")

    def heartbeat(self, node: NodeRegistration, beat: NodeBeat) -> None:
        self._link.call(
            lambda conn: conn.execute(
                _UPSERT,
                node.node,
                node.account,
                node.url,
                node.interval_ms,
                beat.peers,
                _peer_rows(beat.peer_rows),
                beat.cursor,
                beat.lag,
            ),
            "node heartbeat",
        )

    def nodes(self) -> list[NodeRecord]:
        async def nodes(conn: asyncpg.Connection) -> list[NodeRecord]:
            found = await conn.fetch(
                f'SELECT node, account, url, interval_ms, started_ms, beat_ms, peers, peer_rows, "cursor", lag, '
                f"{_NOW_MS} AS now_ms FROM {NODES_TABLE} ORDER BY url, node"
            )
            return [_record(row) for row in found]

        return self._link.call(nodes, "list nodes")

    def unregister(self, node: str) -> None:
        self._link.call(
            lambda conn: conn.execute(f"DELETE FROM {NODES_TABLE} WHERE node = $1", node), "unregister node"
        )

    def close(self) -> None:
        self._link.close()
