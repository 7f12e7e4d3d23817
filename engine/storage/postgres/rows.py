"""The rows of CoValues and sessions in a PostgreSQL store: writing them and reading them back.

Coroutine functions over one asyncpg connection, shared by
:class:`~engine.storage.postgres.store.PostgresStore` and its background writer
(:class:`~engine.storage.postgres.writer.PostgresWriter`). The write functions run inside a
transaction the caller holds. Blocks hold the same bytes as in a SQLite store (one CBOR array
of transactions and the concatenated chain hashes, :func:`~engine.storage.sqlite.rows.unpack_block`
reads both).

The rules are the SQLite store's (:mod:`engine.storage.sqlite.rows`): only checkpointed
prefixes are written; an append continues from what the store actually holds, after checking
that the stored head lies on the writer's chain; nothing but delete sessions is appended to a
CoValue stored as deleted; a session written whole first loses every old row; damaged rows read
back as :class:`~engine.errors.ChainError`.

Several nodes may write one database at once, so the rows an append decides on are locked
for its transaction: the session row ``FOR UPDATE`` (two writers of one session append one
after the other, the second from what the first stored), and the CoValue row ``FOR SHARE``
(a tombstone, which locks it ``FOR UPDATE`` before it lists the sessions to purge, either
waits for the append and purges it, or commits first and the append sees ``deleted``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg
import cbor2

from engine.crypto import HASH_SIZE
from engine.errors import ChainError, StorageBugError
from engine.ids import CoValueID, SessionID, is_delete_session
from engine.kv.store import CASResult
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.storage.interface import CASWrite, Checkpoint, CorruptRecord, RawRow, SessionWrite, StoredCounts
from engine.storage.postgres.kv import cas_in_transaction
from engine.storage.sqlite.rows import unpack_block
from engine.storage.sqlite.schema import BLOCK_TRANSACTIONS

__all__ = [
    "append_session",
    "drop_session",
    "put_checkpoints",
    "put_header",
    "read_session",
    "read_window",
    "replace_rows",
    "tombstone_rows",
    "write_rows",
    "write_session_whole",
]


# -- writing -----------------------------------------------------------------------------------


async def put_header(conn: asyncpg.Connection, header: Header) -> bool:
    """Insert a CoValue's row unless it is there already; True when it was inserted."""
    status = await conn.execute(
        "INSERT INTO covalues (id, header, type, deleted) VALUES ($1, $2, $3, false) ON CONFLICT (id) DO NOTHING",
        header.covalue_id(),
        header.encode(),
        header.type,
    )
    return str(status).endswith(" 1")


#: The CoValue row locked ``FOR SHARE`` first, then the session row ``FOR UPDATE`` (the order a
#: tombstone takes them in too: no deadlock), in one round trip; no session row when missing.
_LOCK_FOR_APPEND = (
    "WITH c AS MATERIALIZED (SELECT deleted FROM covalues WHERE id = $1 FOR SHARE) "
    "SELECT c.deleted, s.sid, s.count, s.head FROM c LEFT JOIN LATERAL ("
    "SELECT sid, count, head FROM sessions WHERE covalue = $1 AND session = $2 FOR UPDATE) s ON true"
)
#: The new blocks, their checkpoint signatures and the session's new head, in one statement.
_APPEND = (
    'WITH b AS (INSERT INTO blocks (sid, start, "end", txs, hashes) '
    "SELECT $1, unnest($2::bigint[]), unnest($3::bigint[]), unnest($4::bytea[]), unnest($5::bytea[])), "
    "g AS (INSERT INTO signatures (sid, n, sig) SELECT $1, unnest($6::bigint[]), unnest($7::bytea[]) "
    "ON CONFLICT (sid, n) DO NOTHING) "
    "UPDATE sessions SET count = $8, head = $9 WHERE sid = $1"
)


async def _locked_for_append(
    conn: asyncpg.Connection, covalue: str, session: str, *, live_only: bool
) -> tuple[int, int, bytes] | None:
    """``(sid, count, head)``: the CoValue row locked to share, the session row locked for
    this transaction (created empty if missing; if another writer creates it meanwhile, its
    row is taken instead). None, with nothing made, when ``live_only`` and the CoValue is
    stored as deleted (a CoValue the store does not hold is not deleted)."""
    for _attempt in range(2):
        row = await conn.fetchrow(_LOCK_FOR_APPEND, covalue, session)
        if row is not None and row[0] and live_only:
            return None
        if row is not None and row[1] is not None:
            return int(row[1]), int(row[2]), bytes(row[3])
        sid = await conn.fetchval(
            "INSERT INTO sessions (covalue, session, count, head) VALUES ($1, $2, 0, '') "
            "ON CONFLICT (covalue, session) DO NOTHING RETURNING sid",
            covalue,
            session,
        )
        if sid is not None:
            return int(sid), 0, b""
    raise StorageBugError(f"{session}: its session row appeared and vanished while appending")


async def append_session(conn: asyncpg.Connection, write: SessionWrite) -> int:
    """Append ``[stored count, end)`` of a session; returns the new stored count.

    See :func:`engine.storage.sqlite.rows.append_session`: the same rules, with the rows
    locked as the module docstring says. Two round trips: the locks (with what is stored),
    then the rows. Raises :class:`StorageBugError` when the stored history is not ours.
    """
    log, end = write.log, write.end
    if end <= 0:
        return 0  # nothing signed to store: no row is locked or made
    # nothing but delete sessions is appended to a CoValue stored as deleted
    locked = await _locked_for_append(conn, log.covalue, log.session, live_only=not is_delete_session(log.session))
    if locked is None:
        return 0
    sid, start, head = locked
    if start and (start > log.count or log.hash_at(start) != head):
        raise StorageBugError(f"{log.session}: the store holds another history of this session")
    if end <= start:
        return start
    # A copy first (one C call, atomic under the GIL): a queued write runs on the writer's
    # thread while the loop thread may sign more of this log.
    sigs = sorted((n, sig) for n, sig in log.sigs.copy().items() if start < n <= end)
    bounds = [(a, min(a + BLOCK_TRANSACTIONS, end)) for a in range(start, end, BLOCK_TRANSACTIONS)]
    await conn.execute(
        _APPEND,
        sid,
        [a for a, _b in bounds],
        [b for _a, b in bounds],
        [cbor2.dumps(log.txs[a:b]) for a, b in bounds],
        [b"".join(log.hashes[a:b]) for a, b in bounds],
        [n for n, _sig in sigs],
        [sig for _n, sig in sigs],
        end,
        log.hash_at(end),
    )
    return end


async def drop_session(conn: asyncpg.Connection, covalue: str, session: str) -> None:
    """Delete every row of a session, its corrupt record included."""
    sid = await conn.fetchval(
        "DELETE FROM sessions WHERE covalue = $1 AND session = $2 RETURNING sid", covalue, session
    )
    if sid is not None:
        await conn.execute("DELETE FROM blocks WHERE sid = $1", sid)
        await conn.execute("DELETE FROM signatures WHERE sid = $1", sid)
    await conn.execute("DELETE FROM corrupt WHERE covalue = $1 AND session = $2", covalue, session)


async def write_session_whole(conn: asyncpg.Connection, log: SessionLog) -> None:
    """Replace every stored row of a session with ``log``'s checkpointed prefix."""
    await drop_session(conn, log.covalue, log.session)
    await append_session(conn, SessionWrite.pending_of(log, 0))


async def write_rows(
    conn: asyncpg.Connection,
    headers: Iterable[Header] = (),
    sessions: Iterable[SessionWrite] = (),
    *,
    changed: set[str] | None = None,
) -> StoredCounts:
    """Headers and session appends (see :meth:`Store.write <engine.storage.interface.Store.write>`).

    ``changed`` (when given) gets the id of every CoValue whose rows this actually changed (a
    new header, appended transactions), for the change log (:mod:`.feed`).
    """
    counts: StoredCounts = {}
    for header in headers:
        if await put_header(conn, header) and changed is not None:
            changed.add(header.covalue_id())
    for item in sessions:
        key = (item.log.covalue, item.log.session)
        counts[key] = await append_session(conn, item)
        if changed is not None and counts[key] > item.start:
            changed.add(item.log.covalue)
    return counts


async def replace_rows(
    conn: asyncpg.Connection,
    header: Header,
    logs: Sequence[SessionLog],
    cas: Sequence[CASWrite] = (),
    *,
    writer: str | None = None,
) -> list[CASResult]:
    """Sessions written whole, then the CAS writes; returns their results. The caller rolls
    the transaction back when one is a conflict."""
    await put_header(conn, header)
    for log in logs:
        await write_session_whole(conn, log)
    return [await cas_in_transaction(conn, w.namespace, w.key, w.expected_gen, w.slot, writer=writer) for w in cas]


async def tombstone_rows(
    conn: asyncpg.Connection, header: Header, delete_sessions: Sequence[SessionLog], purged: Iterable[SessionID]
) -> None:
    """A tombstone: the delete sessions written whole, every other session dropped (the
    ``purged`` ones and whatever else the store holds), the CoValue marked deleted."""
    covalue = header.covalue_id()
    await put_header(conn, header)
    await conn.execute("SELECT 1 FROM covalues WHERE id = $1 FOR UPDATE", covalue)
    for log in delete_sessions:
        await write_session_whole(conn, log)
    stored = [r[0] for r in await conn.fetch("SELECT session FROM sessions WHERE covalue = $1", covalue)]
    for sid in sorted(set(purged) | {s for s in stored if not is_delete_session(s)}):
        await drop_session(conn, covalue, sid)
    await conn.execute("UPDATE covalues SET deleted = true WHERE id = $1", covalue)


async def put_checkpoints(conn: asyncpg.Connection, checkpoints: Iterable[Checkpoint]) -> None:
    """Set cursors and markers ``(namespace, key, value)``, inside the caller's transaction."""
    items = list(checkpoints)
    if items:
        await conn.executemany(
            "INSERT INTO checkpoints (namespace, key, value) VALUES ($1, $2, $3) "
            "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
            items,
        )


async def record_corrupt(conn: asyncpg.Connection, record: CorruptRecord) -> None:
    """Record (or update) the first broken link of a session."""
    await conn.execute(
        "INSERT INTO corrupt (covalue, session, idx, code, reason) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (covalue, session) DO UPDATE SET idx = excluded.idx, code = excluded.code, "
        "reason = excluded.reason",
        *record,
    )


# -- reading -----------------------------------------------------------------------------------


async def read_session(conn: asyncpg.Connection, covalue: CoValueID, session: SessionID) -> SessionLog:
    """The stored rows of one session as a log, unverified (empty when not stored).

    Raises :class:`ChainError` when the rows themselves are damaged (unreadable block, gap
    between blocks).
    """
    log = SessionLog(covalue, session)
    sid = await conn.fetchval("SELECT sid FROM sessions WHERE covalue = $1 AND session = $2", covalue, session)
    if sid is None:
        return log
    for start, end, txs, hashes in await conn.fetch(
        'SELECT start, "end", txs, hashes FROM blocks WHERE sid = $1 ORDER BY start', sid
    ):
        if start != log.count:
            raise ChainError(session, log.count, f"stored blocks skip from {log.count} to {start}")
        block_txs, block_hashes = unpack_block(session, int(start), int(end), bytes(txs), bytes(hashes))
        log.txs.extend(block_txs)
        log.hashes.extend(block_hashes)
    log.sigs.update(
        (int(n), bytes(s)) for n, s in await conn.fetch("SELECT n, sig FROM signatures WHERE sid = $1", sid)
    )
    return log


async def read_hash(conn: asyncpg.Connection, covalue: CoValueID, session: SessionID, index: int) -> bytes | None:
    """The stored chain hash of row ``index`` (``h(index + 1)``), cut out of its block's
    hash column without reading the block's transactions; None when the row is not stored."""
    if index < 0:
        return None
    row = await conn.fetchrow(
        'SELECT "end", substring(hashes FROM (($1 - start) * $2 + 1)::integer FOR $2::integer) AS hash FROM blocks '
        "WHERE sid = (SELECT sid FROM sessions WHERE covalue = $3 AND session = $4) AND start <= $1 "
        "ORDER BY start DESC LIMIT 1",
        index,
        HASH_SIZE,
        covalue,
        session,
    )
    if row is None or index >= row["end"] or len(row["hash"]) != HASH_SIZE:
        return None
    return bytes(row["hash"])


async def read_window(conn: asyncpg.Connection, session: SessionID, sid: int, offset: int, limit: int) -> list[RawRow]:
    """Rows ``(idx, tx, hash)`` of the stored session ``sid`` from ``offset`` (at most
    ``limit``), reading only the blocks that overlap the window."""
    out: list[RawRow] = []
    if limit <= 0:
        return out
    first = await conn.fetchval("SELECT max(start) FROM blocks WHERE sid = $1 AND start <= $2", sid, offset)
    blocks = await conn.fetch(
        'SELECT start, "end", txs, hashes FROM blocks WHERE sid = $1 AND start >= $2 AND start < $3 ORDER BY start',
        sid,
        first or 0,
        offset + limit,
    )
    for start, end, txs, hashes in blocks:
        block_txs, block_hashes = unpack_block(session, int(start), int(end), bytes(txs), bytes(hashes))
        for i in range(max(offset, start), end):
            out.append((i, block_txs[i - start], block_hashes[i - start]))
            if len(out) == limit:
                return out
    return out
