"""Reading what a shared PostgreSQL store holds beyond a node's memory (DESIGN §9): the
:class:`~engine.storage.interface.StoredTail` s of many sessions of many CoValues in one
snapshot and three queries, whatever their number.

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

_EVERY = "SELECT covalue, session, sid, count, head FROM sessions WHERE covalue = ANY($1::text[]) AND session <> $2"
_LISTED = (
    "SELECT s.covalue, s.session, s.sid, s.count, s.head FROM sessions s "
    "JOIN unnest($1::text[], $2::text[]) AS w(covalue, session) "
    'ON s.covalue = w.covalue COLLATE "C" AND s.session = w.session'
)
# From the block that holds row ``after - 1`` (the last that starts at or before it; row 0's
# when ``after`` is 0), through the one that holds row ``count - 1``: index ranges only.
_BLOCKS = (
    'SELECT b.sid, b.start, b."end", b.txs, b.hashes '
    "FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS w(sid, after, upto) "
    "CROSS JOIN LATERAL (SELECT coalesce(max(start), 0) AS first FROM blocks "
    "WHERE sid = w.sid AND start <= greatest(w.after - 1, 0)) f "
    "JOIN blocks b ON b.sid = w.sid AND b.start >= f.first AND b.start < w.upto ORDER BY b.sid, b.start"
)
_SIGS = (
    "SELECT g.sid, g.n, g.sig FROM signatures g "
    "JOIN unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS w(sid, after, upto) "
    "ON g.sid = w.sid AND g.n > w.after AND g.n <= w.upto"
)


async def read_tails(conn: asyncpg.Connection, requests: Mapping[CoValueID, TailRequest], exclude: SessionID) -> Tails:
    """See :meth:`ChangeFeed.read_tails <engine.storage.interface.ChangeFeed.read_tails>`."""
    every = [cid for cid, request in requests.items() if request.every]
    pairs = [
        (cid, sid) for cid, request in requests.items() if not request.every for sid in request.held if sid != exclude
    ]
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        found = list(await conn.fetch(_EVERY, every, exclude)) if every else []
        if pairs:
            found += await conn.fetch(_LISTED, [c for c, _s in pairs], [s for _c, s in pairs])
        # by sid, the sessions the store holds more of than the node: (covalue, session,
        # what the node holds, stored count, stored head)
        wanted: dict[int, tuple[CoValueID, SessionID, int, int, bytes]] = {}
        tails: Tails = {}
        for covalue, session, sid, count, head in found:
            cid, sess = CoValueID(str(covalue)), SessionID(str(session))
            held = requests[cid].held.get(sess, 0)
            if int(count) > held:
                wanted[int(sid)] = (cid, sess, held, int(count), bytes(head))
            else:
                tails.setdefault(cid, []).append(StoredTail(sess, int(count), bytes(head)))
        if not wanted:
            return tails
        columns = (list(wanted), [w[2] for w in wanted.values()], [w[3] for w in wanted.values()])
        blocks = await conn.fetch(_BLOCKS, *columns)
        sigs = await conn.fetch(_SIGS, *columns)
    by_sid: dict[int, list[asyncpg.Record]] = {}
    for row in blocks:
        by_sid.setdefault(int(row[0]), []).append(row)
    sigs_by_sid: dict[int, dict[int, bytes]] = {}
    for sid, n, sig in sigs:
        sigs_by_sid.setdefault(int(sid), {})[int(n)] = bytes(sig)
    for sid, (cid, sess, after, count, head) in wanted.items():
        tail = _tail(sess, after, count, head, blocks=by_sid.get(sid, []), sigs=sigs_by_sid.get(sid, {}))
        tails.setdefault(cid, []).append(tail)
    return tails


def _tail(
    session: SessionID, after: int, count: int, head: bytes, *, blocks: list[asyncpg.Record], sigs: dict[int, bytes]
) -> StoredTail:
    """The rows ``after … count - 1`` (and ``h(after)``) cut from the blocks that hold them."""
    txs: list[bytes] = []
    hashes: list[bytes] = []
    first = blocks[0][1] if blocks else after
    try:
        at = int(first)
        if at > max(after - 1, 0):
            raise ChainError(session, after, f"stored blocks start at {at}, not at or before {after}")
        for _sid, start, end, tx_bytes, hash_bytes in blocks:
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
