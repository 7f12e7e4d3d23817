"""What a shared store holds beyond a node's memory (engine/storage/postgres/tails.py), read
by the store and by its feed, and taken in by a node (engine/node/cluster.py): rows from any
count (inside a block or at its edge), heads only for sessions the node holds all of, every
session on request but the node's own, damaged rows reported per session."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.model.session_log import SessionLog
from engine.node.facade import LocalNode
from engine.storage import open_store
from engine.storage.interface import ChangeLogStore, SessionWrite, StoredTail, TailRequest
from tests.engine.factories import ALICE, BOB, T0, comap_header, session, signed_log, tx
from tests.util import timeout

#: Transactions of the long session, checkpointed at CHECKPOINTS and appended in three writes
#: (so blocks of 3, 1000, 497 and 1000 transactions).
LENGTH = 2_500
CHECKPOINTS = (3, 1_500)


def long_log(covalue: CoValueID) -> SessionLog:
    return signed_log(covalue, BOB, [tx(T0 + i, ["set", "k", i]) for i in range(LENGTH)], CHECKPOINTS)


def stored(pg_url: str) -> tuple[Any, CoValueID, SessionLog, SessionLog]:
    """A store with a CoMap: BOB's long session, written in three appends, and ALICE's short one."""
    store = open_store(pg_url)
    assert isinstance(store, ChangeLogStore)
    header = comap_header(None, tag="tails")
    cid = header.covalue_id()
    bob = long_log(cid)
    alice = signed_log(cid, ALICE, [tx(T0, ["set", "a", 1]), tx(T0 + 1, ["set", "a", 2])], [])
    store.write([header], [SessionWrite(bob, 0, 3), SessionWrite(alice, 0, 2)])
    store.write([], [SessionWrite(bob, 3, 1_500)])
    store.write([], [SessionWrite(bob, 1_500, LENGTH)])
    return store, cid, bob, alice


def rebuilt(tail: StoredTail, log: SessionLog) -> None:
    """``tail`` is exactly ``log`` from ``tail.after`` on."""
    assert tail.error is None
    assert (tail.count, tail.head) == log.head()
    assert tail.before == (log.hash_at(tail.after) if tail.after else b"")
    assert list(tail.txs) == log.txs[tail.after :]
    assert list(tail.hashes) == log.hashes[tail.after :]
    assert dict(tail.sigs) == {n: s for n, s in log.sigs.items() if n > tail.after}


@pytest.mark.parametrize("after", [0, 1, 3, 4, 1_000, 1_003, 1_499, 1_500, 2_499])
def test_rows_from_any_count_inside_or_at_the_edge_of_a_block(pg_url: str, after: int) -> None:
    store, cid, bob, _alice = stored(pg_url)
    try:
        tails = store.read_tails({cid: TailRequest({bob.session: after})}, exclude=session(ALICE, 9))
        [tail] = tails[cid]
        assert tail.session == bob.session and tail.after == after
        rebuilt(tail, bob)
    finally:
        store.close()


def test_a_session_held_whole_comes_back_as_its_head_only(pg_url: str) -> None:
    store, cid, bob, alice = stored(pg_url)
    try:
        for held in (LENGTH, LENGTH + 10):  # memory may even be ahead of the store
            tails = store.read_tails({cid: TailRequest({bob.session: held})}, exclude=alice.session)
            assert tails == {cid: [StoredTail(bob.session, LENGTH, bob.hash_at(LENGTH))]}
        # a session the store does not hold, and a CoValue it does not hold, are left out
        other = comap_header(None, tag="elsewhere").covalue_id()
        assert (
            store.read_tails({cid: TailRequest({session(BOB, 5): 0}), other: TailRequest({})}, exclude=alice.session)
            == {}
        )
    finally:
        store.close()


def test_every_session_on_request_but_the_excluded_one(pg_url: str) -> None:
    store, cid, bob, alice = stored(pg_url)
    try:
        everything = store.read_tails({cid: TailRequest({bob.session: 1_500}, every=True)}, exclude=session(ALICE, 9))
        by_session = {t.session: t for t in everything[cid]}
        assert set(by_session) == {bob.session, alice.session}
        assert by_session[bob.session].after == 1_500 and by_session[alice.session].after == 0
        rebuilt(by_session[bob.session], bob)
        rebuilt(by_session[alice.session], alice)
        # the node's own session (which only it writes) is never read
        mine = store.read_tails({cid: TailRequest({}, every=True)}, exclude=alice.session)
        assert [t.session for t in mine[cid]] == [bob.session]
        # nor when named
        assert store.read_tails({cid: TailRequest({alice.session: 0})}, exclude=alice.session) == {}
    finally:
        store.close()


def test_damaged_rows_are_reported_for_their_session_alone(pg_url: str) -> None:
    store, cid, bob, alice = stored(pg_url)

    async def drop_middle_block() -> None:
        base, _, options = pg_url.partition("&options=-csearch_path%3D")
        conn = await asyncpg.connect(base, server_settings={"search_path": options})
        try:
            await conn.execute(
                "DELETE FROM blocks WHERE start = 3 AND sid = (SELECT sid FROM sessions WHERE session = $1)",
                bob.session,
            )
        finally:
            await conn.close()

    asyncio.run(drop_middle_block())
    try:
        tails = store.read_tails({cid: TailRequest({}, every=True)}, exclude=session(ALICE, 9))
        by_session = {t.session: t for t in tails[cid]}
        assert by_session[bob.session].error is not None and "skip" in by_session[bob.session].error
        assert not by_session[bob.session].txs
        rebuilt(by_session[alice.session], alice)
    finally:
        store.close()


def test_the_feed_reads_the_same_off_the_callers_thread(pg_url: str) -> None:
    store, cid, bob, alice = stored(pg_url)
    feed = store.change_feed()
    try:
        request = {cid: TailRequest({bob.session: 1_003, alice.session: 1})}
        from_feed = feed.read_tails(request, exclude=session(ALICE, 9)).result(timeout(10))
        assert from_feed == store.read_tails(request, exclude=session(ALICE, 9))
        by_session = {t.session: t for t in from_feed[cid]}
        rebuilt(by_session[bob.session], bob)
        rebuilt(by_session[alice.session], alice)
    finally:
        feed.close()
        store.close()


def node_behind(pg_url: str, memory: int) -> tuple[LocalNode, Any, CoValueID, SessionLog, SessionLog]:
    """A node holding (and having stored) BOB's session up to ``memory``; then another node's
    store appends the rest and ALICE's session."""
    node = LocalNode(AccountKey.from_seed(bytes(range(40, 72))), open_store(pg_url))
    header = comap_header(None, tag="tails")
    cid = header.covalue_id()
    bob = long_log(cid)
    alice = signed_log(cid, ALICE, [tx(T0, ["set", "a", 1]), tx(T0 + 1, ["set", "a", 2])], [])
    node.add_header(header)
    if memory:
        node.apply_content(cid, {bob.session: bob.chunk(0, memory)})
    other = open_store(pg_url)
    other.write([header], [SessionWrite(bob, memory, LENGTH), SessionWrite(alice, 0, 2)])
    return node, other, cid, bob, alice


@pytest.mark.parametrize("memory", [0, 3, 1_500])
def test_a_node_takes_in_what_the_store_holds_beyond_its_memory(pg_url: str, memory: int) -> None:
    node, other, cid, bob, alice = node_behind(pg_url, memory)
    try:
        request = node.stored_request(cid, None)
        assert request is not None and request.every
        assert dict(request.held) == ({bob.session: memory} if memory else {})
        tails = other.read_tails({cid: request}, exclude=node.session)
        assert node.absorb_tails(cid, tails[cid])
        core = node.get(cid)
        assert core.sessions[bob.session].head() == bob.head()
        assert core.sessions[alice.session].head() == alice.head()
        request = node.stored_request(cid, None)
        assert request is not None
        assert not node.absorb_tails(cid, other.read_tails({cid: request}, exclude=node.session)[cid])
    finally:
        node.close()
        other.close()


def test_a_node_takes_the_store_history_in_place_of_another(pg_url: str) -> None:
    """Memory holds a history of BOB's session the store does not (another node's commit beat
    it): the node reads the stored one whole and takes it."""
    node, other, cid, bob, _alice = node_behind(pg_url, 3)
    try:
        forked = signed_log(cid, BOB, [*(tx(T0 + i, ["set", "k", i]) for i in range(3)), tx(T0, ["set", "x", 1])], [3])
        assert forked.hash_at(3) == bob.hash_at(3)
        core = node.get(cid)
        core.apply_content({bob.session: forked.chunk(3)})  # memory only, never stored
        assert core.sessions[bob.session].head() == forked.head()
        request = node.stored_request(cid, [bob.session])
        assert request is not None
        tails = other.read_tails({cid: request}, exclude=node.session)
        assert tails[cid][0].count == LENGTH and tails[cid][0].after == forked.signed_count
        assert node.absorb_tails(cid, tails[cid])
        assert core.sessions[bob.session].head() == bob.head()
    finally:
        node.close()
        other.close()
