"""CAS slots (DESIGN §8) in a PostgreSQL store: atomic across connections, processes and nodes.

A CAS is one conditional statement, decided by the server under the row's lock:

- ``expected_gen == 0`` (the key was never written): ``INSERT … ON CONFLICT DO NOTHING``;
- otherwise: ``UPDATE kv SET generation = expected + 1, value = … WHERE generation = expected``.

If the statement changed a row, the CAS is stored. If not, the current row is read and
returned as the conflict. Generations only grow (deleting writes a tombstone, no row is ever
deleted), so a conflict read always finds a generation other than the expected one — except
when the key was *behind* the caller's expectation and caught up between the two statements;
then the CAS is decided again (at most :data:`MAX_CAS_DECISIONS` times).

Under READ COMMITTED an ``UPDATE`` that waited for another transaction's lock re-checks its
``WHERE`` on the row that transaction committed, so two CAS of one generation can never both
win. Every attempt, won or lost, is appended to ``kv_log`` in the same transaction, keeping
the newest ``log_keep`` per key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from engine.errors import InvalidEnvelope, StorageBugError, StorageEnvironmentError, UsageError
from engine.kv.envelope import Slot, decode_envelope
from engine.kv.store import (
    KV_LOG_KEEP_PER_KEY,
    CASRecord,
    CASResult,
    Conflict,
    Listing,
    Stored,
    Timeline,
    cas_outcome,
    check_address,
    prepare_cas,
    wall_clock_ms,
)
from engine.storage.postgres.connection import PgLink
from engine.storage.postgres.feed import record_changes, slot_change

__all__ = ["MAX_CAS_DECISIONS", "PostgresKV", "cas_in_transaction"]

T = TypeVar("T")

#: Most times one CAS is decided again because its key caught up with the expected
#: generation between the conditional write and the conflict read (practically never twice).
MAX_CAS_DECISIONS = 8


def _decode_row(namespace: str, key: str, generation: int, value: bytes) -> tuple[int, Slot]:
    try:
        gen, slot = decode_envelope(value)
    except InvalidEnvelope as exc:
        raise InvalidEnvelope(f"KV {namespace}/{key}: {exc.detail}") from exc
    if gen != generation:
        raise StorageBugError(f"KV {namespace}/{key}: row generation {generation} but envelope generation {gen}")
    return gen, slot


async def _read_row(conn: asyncpg.Connection, namespace: str, key: str) -> tuple[int, Slot | None]:
    row = await conn.fetchrow("SELECT generation, value FROM kv WHERE namespace = $1 AND key = $2", namespace, key)
    if row is None:
        return 0, None
    return _decode_row(namespace, key, int(row[0]), bytes(row[1]))


async def _decide(conn: asyncpg.Connection, namespace: str, key: str, expected_gen: int, data: bytes) -> CASResult:
    for _attempt in range(MAX_CAS_DECISIONS):
        if expected_gen == 0:
            generation = await conn.fetchval(
                "INSERT INTO kv (namespace, key, generation, value) VALUES ($1, $2, 1, $3) "
                "ON CONFLICT (namespace, key) DO NOTHING RETURNING generation",
                namespace,
                key,
                data,
            )
        else:
            generation = await conn.fetchval(
                "UPDATE kv SET generation = $4, value = $5 "
                "WHERE namespace = $1 AND key = $2 AND generation = $3 RETURNING generation",
                namespace,
                key,
                expected_gen,
                expected_gen + 1,
                data,
            )
        if generation is not None:
            return Stored(int(generation))
        current, slot = await _read_row(conn, namespace, key)
        if current != expected_gen:
            return Conflict(current, slot)
    raise StorageEnvironmentError(
        f"KV cas {namespace}/{key}: the key kept moving; no decision after {MAX_CAS_DECISIONS}"
    )


async def cas_in_transaction(
    conn: asyncpg.Connection,
    namespace: str,
    key: str,
    expected_gen: int,
    slot: Slot,
    *,
    writer: str | None = None,
    at_ms: int | None = None,
    log_keep: int = KV_LOG_KEEP_PER_KEY,
) -> CASResult:
    """:meth:`KVStore.cas` for a caller that already holds a transaction on ``conn``: the
    write (and its log record) become visible when the caller commits, and disappear if it
    rolls back. ``at_ms`` defaults to the wall clock. Raises :class:`InvalidEnvelope` for a
    slot that cannot be stored and :class:`UsageError` outside a transaction."""
    data = prepare_cas(namespace, key, expected_gen, slot)
    if not conn.is_in_transaction():
        raise UsageError("cas_in_transaction needs an open transaction")
    result = await _decide(conn, namespace, key, expected_gen, data)
    await conn.execute(
        "INSERT INTO kv_log (namespace, key, at_ms, expected_gen, outcome, generation, writer) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        namespace,
        key,
        wall_clock_ms() if at_ms is None else at_ms,
        expected_gen,
        cas_outcome(result),
        result.generation,
        writer,
    )
    # Drop everything older than the newest ``log_keep`` records of this key.
    await conn.execute(
        "DELETE FROM kv_log WHERE namespace = $1 AND key = $2 AND seq <= ("
        "SELECT seq FROM kv_log WHERE namespace = $1 AND key = $2 ORDER BY seq DESC LIMIT 1 OFFSET $3)",
        namespace,
        key,
        log_keep,
    )
    return result


class PostgresKV:
    """A :class:`~engine.kv.store.KVStore` in the ``kv`` and ``kv_log`` tables of a PostgreSQL
    store, reached through ``link`` (the store's connection). Each :meth:`cas` is one
    transaction. ``writer`` identifies this instance in the log. With an ``origin`` (the
    store's), a stored CAS also records the slot in the cluster's change log, in its
    transaction, so the other nodes tell their watches (:mod:`.feed`)."""

    def __init__(
        self,
        link: PgLink,
        *,
        writer: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        log_keep: int = KV_LOG_KEEP_PER_KEY,
        origin: str | None = None,
    ) -> None:
        self._link = link
        self._writer = writer
        self._clock_ms = clock_ms
        self._log_keep = log_keep
        self._origin = origin

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        check_address(namespace, key)

        async def get(conn: asyncpg.Connection) -> tuple[int, Slot | None]:
            return await _read_row(conn, namespace, key)

        return self._run(get, f"KV get {namespace}/{key}")

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        prepare_cas(namespace, key, expected_gen, slot)  # refuse before reaching the server

        async def cas(conn: asyncpg.Connection) -> CASResult:
            async with conn.transaction():
                result = await cas_in_transaction(
                    conn,
                    namespace,
                    key,
                    expected_gen,
                    slot,
                    writer=self._writer,
                    at_ms=self._clock_ms(),
                    log_keep=self._log_keep,
                )
                if self._origin is not None and isinstance(result, Stored):
                    await record_changes(conn, [slot_change(namespace, key)], self._origin)
                return result

        return self._run(cas, f"KV cas {namespace}/{key}")

    def list(self, namespace: str, prefix: str = "") -> Listing:
        check_address(namespace, prefix)

        async def listed(conn: asyncpg.Connection) -> Listing:
            rows = await conn.fetch(
                "SELECT key, generation, value FROM kv "
                "WHERE namespace = $1 AND key >= $2 AND starts_with(key, $2) ORDER BY key",
                namespace,
                prefix,
            )
            return [(str(k), *_decode_row(namespace, str(k), int(g), bytes(v))) for k, g, v in rows]

        return self._run(listed, f"KV list {namespace}/{prefix}*")

    def history(self, namespace: str, key: str) -> Timeline:
        check_address(namespace, key)

        async def history(conn: asyncpg.Connection) -> Timeline:
            rows = await conn.fetch(
                "SELECT at_ms, expected_gen, outcome, generation, writer FROM kv_log "
                "WHERE namespace = $1 AND key = $2 ORDER BY seq",
                namespace,
                key,
            )
            return [CASRecord(namespace, key, int(a), int(e), o, int(g), w) for a, e, o, g, w in rows]

        return self._run(history, f"KV history {namespace}/{key}")

    def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        return self._link.call(fn, what)
