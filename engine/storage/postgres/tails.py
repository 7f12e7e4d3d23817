"""Reading what a shared PostgreSQL store holds beyond a node's memory (DESIGN §9): the
:class:`~engine.storage.interface.StoredTail` s of many sessions of many CoValues in one
snapshot and one statement, whatever their number.

A node asks before it judges content from a peer (the sessions the content names) and when
the change log says other nodes changed CoValues it holds (every session), so these reads are
on the path of every write a node takes: they read only the session rows asked for, and the
blocks of a session only when the store holds more of it than the node, from the block that
holds ``h(after)`` on. A session the store holds no more of than the node comes back as its
count and head only (the node compares the head with its own hash there; when they differ, it
reads the session whole: a fork across nodes is rare).
"""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from engine.errors import ChainError
from engine.ids import CoValueID, SessionID
from engine.storage.interface import StoredTail, TailRequest, Tails
from engine.storage.sqlite.rows import unpack_block

__all__ = ["read_tails"]

# The sessions asked for, each with what the node holds of it (``held``), and for those the
# store holds more of, its blocks from the one that holds row ``held - 1`` (row 0's when
# ``held`` is 0) through the one that holds row ``count - 1``, and its signatures in
# ``held + 1 … count``: one statement, so one snapshot and one round trip. ``$1 … $3`` are the
# sessions the node holds (CoValue, session, count); ``$4`` the CoValues asked for whole,
# all their sessions but ``$5``.
_TAILS = """
WITH w AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) AS w(covalue, session, held)),
s AS (
    SELECT s.covalue, s.session, s.sid, s.count, s.head, w.held
    FROM w JOIN sessions s ON s.covalue = w.covalue COLLATE "C" AND s.session = w.session
    WHERE NOT w.covalue = ANY($4::text[])
    UNION ALL
    SELECT s.covalue, s.session, s.sid, s.count, s.head, coalesce(w.held, 0)
    FROM sessions s LEFT JOIN w ON w.covalue = s.covalue COLLATE "C" AND w.session = s.session
    WHERE s.covalue = ANY($4::text[]) AND s.session <> $5
)
SELECT s.covalue, s.session, s.count, s.head, s.held, b.starts, b.ends, b.txs, b.hashes, g.ns, g.sigs
FROM s
LEFT JOIN LATERAL (
    SELECT array_agg(start ORDER BY start) AS starts, array_agg("end" ORDER BY start) AS ends,
        array_agg(txs ORDER BY start) AS txs, array_agg(hashes ORDER BY start) AS hashes
    FROM blocks
    WHERE s.count > s.held AND sid = s.sid AND start < s.count AND start >= (
        SELECT coalesce(max(start), 0) FROM blocks WHERE sid = s.sid AND start <= greatest(s.held - 1, 0))
) b ON true
LEFT JOIN LATERAL (
    SELECT array_agg(n ORDER BY n) AS ns, array_agg(sig ORDER BY n) AS sigs
    FROM signatures WHERE s.count > s.held AND sid = s.sid AND n > s.held AND n <= s.count
) g ON true
"""

#: A stored block: its first row, the row after its last, its transactions and hashes.
_Block = tuple[int, int, bytes, bytes]


async def read_tails(conn: asyncpg.Connection, requests: Mapping[CoValueID, TailRequest], exclude: SessionID) -> Tails:
    """See :meth:`ChangeFeed.read_tails <engine.storage.interface.ChangeFeed.read_tails>`."""
    every = [cid for cid, request in requests.items() if request.every]
    held = [
        (cid, sid, count)
        for cid, request in requests.items()
        for sid, count in request.held.items()
        if request.every or sid != exclude
    ]
    if not every and not held:
        return {}
    rows = await conn.fetch(_TAILS, [h[0] for h in held], [h[1] for h in held], [h[2] for h in held], every, exclude)
    tails: Tails = {}
    for covalue, session, count, head, after, starts, ends, txs, hashes, ns, sigs in rows:
        cid, sess = CoValueID(str(covalue)), SessionID(str(session))
        if int(count) <= int(after):
            tail = StoredTail(sess, int(count), bytes(head))
        else:
            blocks = list(zip(starts or (), ends or (), txs or (), hashes or (), strict=True))
            signatures = {int(n): bytes(sig) for n, sig in zip(ns or (), sigs or (), strict=True)}
            tail = _tail(sess, int(after), int(count), bytes(head), blocks=blocks, sigs=signatures)
        tails.setdefault(cid, []).append(tail)
    return tails


def _tail(
    session: SessionID, after: int, count: int, head: bytes, *, blocks: list[_Block], sigs: dict[int, bytes]
) -> StoredTail:
    """The rows ``after … count - 1`` (and ``h(after)``) cut from the blocks that hold them."""
    txs: list[bytes] = []
    hashes: list[bytes] = []
    first = blocks[0][0] if blocks else after
    try:
        at = int(first)
        if at > max(after - 1, 0):
            raise ChainError(session, after, f"stored blocks start at {at}, not at or before {after}")
        for start, end, tx_bytes, hash_bytes in blocks:
            if int(start) != at:
                raise ChainError(session, at, f"stored blocks skip from {at} to {start}")
            block_txs, block_hashes = unpack_block(session, int(start), int(end), bytes(tx_bytes), bytes(hash_bytes))
            txs.extend(block_txs)
            hashes.extend(block_hashes)
            at = int(end)
        if at < count:
            raise ChainError(session, at, f"stored blocks end at {at}, before the stored count {count}")
    except ChainError as exc:
        return StoredTail(session, count, head, after, error=str(exc))
    skip = after - int(first)  # rows of the first block before ``after``
    before = hashes[skip - 1] if after else b""
    return StoredTail(
        session,
        count,
        head,
        after,
        before,
        txs[skip : skip + count - after],
        hashes[skip : skip + count - after],
        sigs,
    )
