"""Hostile and broken peers against a real NodeServer (DESIGN §6, issue 3 "Hostile and broken
peers").

Every scenario checks three things: the documented outcome (error code and close code), that
nothing of the bad input was stored (the node's state is compared before and after), and that
a well-behaved pair of clients connected at the same time keeps syncing (a write round trip
through the node within a bound, see :class:`tests.engine.net.conftest.Probe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass

import pytest
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from engine import codec
from engine.crypto import AccountKey, chain_base, signed_message
from engine.ids import CoValueID
from engine.model.known_state import KnownState
from engine.net.client import Backoff, SyncClient
from engine.net.connection import PeerConnection
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import BULK, OP, encode_frame
from engine.protocol.limits import CloseCode, Limits
from engine.protocol.messages import (
    NONCE_SIZE,
    Content,
    Correction,
    Done,
    Error,
    Known,
    Load,
    Message,
    Welcome,
)
from tests.engine.factories import T0, comap_header, covalue_id, session, signed_log, tx
from tests.engine.net.conftest import (
    RawPeer,
    Served,
    act_as_node,
    errors_in,
    fake_node,
    follow,
    next_message,
    node_state,
    probing,
    run,
    serving,
    syncing,
    until,
)
from tests.util import timeout

SECURITY = "kintsugi.security"


def big_content(key: AccountKey, size: int, tag: str = "big") -> Content:
    """A valid content message for a new unsafeAllowAll CoMap: one transaction of ``size`` bytes."""
    header = comap_header(None, tag=tag)
    log = signed_log(header.covalue_id(), key, [tx(T0, ["set", "k", "x" * size])], [], sid=session(key))
    return Content(header.covalue_id(), header, {log.session: log.chunk()})


async def still_served(peer: RawPeer) -> None:
    """The peer's connection still works: a load of an unknown id is answered."""
    replies = await peer.ask(covalue_id(f"probe-{os.urandom(4).hex()}"))
    assert isinstance(replies[-1], Known)
    assert replies[-1].known.header is False


# -- oversized frames ----------------------------------------------------------------------


def test_oversized_frame_is_refused_and_the_connection_goes_on() -> None:
    """A frame over max_frame_size gets error{frame_too_large}, is not stored, and the
    connection continues (shell.py counts it as one malformed frame)."""

    async def scenario() -> None:
        async with serving(Limits(max_frame_size=4096)) as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            key = AccountKey.generate()
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(key)
                message = big_content(key, 5000)
                frame = encode_frame(OP, [message])
                assert 4096 < len(frame) <= 2 * 4096
                await peer.send_raw(frame)
                reply = await peer.recv()
                assert isinstance(reply, Error)
                assert reply.code == "frame_too_large"
                await still_served(peer)
                await probe.round_trip()
                assert srv.node.get_or_none(message.id) is None
                assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


def test_frame_over_twice_the_limit_is_closed_by_the_websocket_layer() -> None:
    """Beyond twice max_frame_size the WebSocket layer closes with 1009 (limits.py); nothing
    is stored and the other clients go on."""

    async def scenario() -> None:
        async with serving(Limits(max_frame_size=4096)) as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            key = AccountKey.generate()
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(key)
                message = big_content(key, 9000)
                await peer.send(message)
                code, _ = await peer.expect_close()
                assert code == CloseCode.TOO_BIG
            await probe.round_trip()
            assert srv.node.get_or_none(message.id) is None
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


# -- malformed frames ------------------------------------------------------------------------


def test_malformed_cbor_is_answered_then_closed_after_the_limit() -> None:
    """Undecodable frames each get error{invalid_cbor}; the connection survives
    max_malformed_frames of them and the next one closes it with 4400."""

    async def scenario() -> None:
        async with serving(Limits(max_malformed_frames=3)) as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(AccountKey.generate())
                for garbage in (b"\xff\xfe", b"\xa3\x61", b""):
                    await peer.send_raw(garbage)
                    reply = await peer.recv()
                    assert isinstance(reply, Error) and reply.code == "invalid_cbor"
                await still_served(peer)
                await peer.send_raw(b"\x1c")
                code, _ = await peer.expect_close()
                assert code == CloseCode.PROTOCOL_ERROR
            await probe.round_trip()
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


def test_malformed_messages_in_a_valid_frame_count_towards_the_limit() -> None:
    """Invalid messages inside a well-formed bulk frame count one by one: over
    max_malformed_frames of them the connection is closed with 4400, and nothing is stored."""

    async def scenario() -> None:
        async with serving(Limits(max_malformed_frames=2)) as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(AccountKey.generate())
                bad = [{"t": "load", "id": 1}, {"t": "nope"}, {"t": "done"}]
                good = Done(covalue_id("fine")).to_obj()
                await peer.send_raw(codec.encode({"v": 1, "k": BULK, "msgs": [bad[0], good, bad[1], bad[2]]}))
                code, _ = await peer.expect_close()
                assert code == CloseCode.PROTOCOL_ERROR
            await probe.round_trip()
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


def test_unknown_envelope_version_is_refused_and_closed() -> None:
    """A frame with envelope v=2 is not applied and the connection is closed with 4426 (the
    error sent with it is checked in test_error_explaining_a_close_arrives_before_it)."""

    async def scenario() -> None:
        async with serving() as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            key = AccountKey.generate()
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(key)
                message = big_content(key, 10, tag="v2")
                await peer.send_raw(codec.encode({"v": 2, "k": OP, "msg": message.to_obj()}))
                code, _ = await peer.expect_close()
                assert code == CloseCode.UNSUPPORTED_VERSION
            await probe.round_trip()
            assert srv.node.get_or_none(message.id) is None
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


@pytest.mark.parametrize(
    ("abuse", "code", "close"),
    [
        ("malformed", "invalid_cbor", CloseCode.PROTOCOL_ERROR),
        ("version", "unsupported_version", CloseCode.UNSUPPORTED_VERSION),
        ("flood", "rate_limited", CloseCode.RATE_LIMITED),
    ],
)
def test_error_explaining_a_close_arrives_before_it(abuse: str, code: str, close: int) -> None:
    """When the node closes a connection for abuse it first sends the error that says why
    (DESIGN §6: the frame "gets an error with a stable code ... and the connection either goes
    on or closes"): the peer reads error{code}, then the close frame."""

    async def scenario() -> None:
        limits = Limits(max_malformed_frames=0, rate_per_second=1, rate_burst=2)
        async with serving(limits) as srv:
            key = AccountKey.generate()
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(key)
                with contextlib.suppress(ConnectionClosed):
                    if abuse == "malformed":
                        await peer.send_raw(b"\xff")
                    elif abuse == "version":
                        await peer.send_raw(codec.encode({"v": 2, "k": OP, "msg": Done(covalue_id("x")).to_obj()}))
                    else:
                        for _ in range(10):
                            await peer.send(Done(covalue_id("x")))
                got, messages = await peer.expect_close()
                assert got == close
                assert code in errors_in(messages), f"closed with {got} but no error{{{code}}} was sent"

    run(scenario)


# -- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["wrong-signature", "other-account", "other-nonce", "other-node"])
def test_bad_hello_is_refused_with_4401(forgery: str, caplog: pytest.LogCaptureFixture) -> None:
    """A hello whose signature does not verify — random key, signed by another account than the
    one it names, or signed over another nonce or node name — gets error{auth_failed}, a close
    with 4401 and a security warning; the peer never reaches the sync layer."""

    async def scenario() -> None:
        async with serving() as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            connections = len(srv.peers())
            key, other = AccountKey.generate(), AccountKey.generate()
            async with RawPeer(srv.url) as peer:
                challenge = await peer.read_challenge()
                if forgery == "wrong-signature":
                    reply = await peer.hello(key, signed=os.urandom(40))
                elif forgery == "other-account":
                    reply = await peer.hello(other, account=key.account_id)
                elif forgery == "other-nonce":
                    reply = await peer.hello(key, signed=b"kintsugi/hello/v1" + bytes(NONCE_SIZE) + b"x")
                else:
                    reply = await peer.hello(key, signed=b"kintsugi/hello/v1" + challenge.nonce + b"another-node")
                assert isinstance(reply, Error) and reply.code == "auth_failed"
                code, _ = await peer.expect_close()
                assert code == CloseCode.AUTH_FAILED
                assert len(srv.peers()) == connections
            await probe.round_trip()
            assert node_state(srv.node, ignore={probe.map_id}) == before

    with caplog.at_level(logging.WARNING, logger=SECURITY):
        run(scenario)
    assert any(r.name == SECURITY and "hello" in r.getMessage() for r in caplog.records)


def test_silent_peer_is_closed_after_the_handshake_timeout() -> None:
    """A peer that connects and never says hello is closed with 4408 once handshake_timeout
    has passed (and not much later); others are unaffected."""

    async def scenario() -> None:
        limits = Limits(handshake_timeout=timeout(0.3))
        async with serving(limits) as srv, probing(srv.url) as probe:
            async with RawPeer(srv.url) as peer:
                start = time.monotonic()
                await peer.read_challenge()
                await probe.round_trip()
                code, messages = await peer.expect_close(units=3)
                elapsed = time.monotonic() - start
                assert code == CloseCode.HANDSHAKE_TIMEOUT
                assert messages == []
                assert timeout(0.3) * 0.9 <= elapsed < timeout(0.3) + timeout(1.5)
            await probe.round_trip()

    run(scenario)


# -- connection limits -----------------------------------------------------------------------


async def connect_and_hello(url: str, key: AccountKey, stack: contextlib.AsyncExitStack) -> tuple[RawPeer, Message]:
    peer = await stack.enter_async_context(RawPeer(url))
    return peer, await peer.hello(key)


def test_hundred_connections_from_one_account() -> None:
    """With max_connections_per_account=N, 100 simultaneous connections of one account get N
    welcomes and 100-N error{too_many_connections} + close 4409; the N keep working, other
    accounts are not limited by it, and a closed connection frees its slot."""
    limit = 40

    async def scenario() -> None:
        async with serving(Limits(max_connections_per_account=limit)) as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            key = AccountKey.generate()
            async with contextlib.AsyncExitStack() as stack:
                results = await asyncio.gather(*(connect_and_hello(srv.url, key, stack) for _ in range(100)))
                welcomed = [peer for peer, reply in results if isinstance(reply, Welcome)]
                refused = [(peer, reply) for peer, reply in results if not isinstance(reply, Welcome)]
                assert len(welcomed) == limit
                assert len(refused) == 100 - limit
                for peer, reply in refused:
                    assert isinstance(reply, Error) and reply.code == "too_many_connections"
                    code, _ = await peer.expect_close()
                    assert code == CloseCode.TOO_MANY_CONNECTIONS
                await asyncio.gather(*(still_served(peer) for peer in welcomed))
                await probe.round_trip()

                async with RawPeer(srv.url) as newcomer:
                    await newcomer.authenticate(AccountKey.generate())
                async with RawPeer(srv.url) as extra:
                    reply = await extra.hello(key)
                    assert isinstance(reply, Error) and reply.code == "too_many_connections"

                open_before = len(srv.peers())
                await welcomed[0].close()
                await until(lambda: len(srv.peers()) == open_before - 1, what="the node to drop the closed peer")
                async with RawPeer(srv.url) as again:
                    await again.authenticate(key)
                    await still_served(again)
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario, units=30)


# -- rate limit ----------------------------------------------------------------------------


def test_flooding_peer_is_closed_with_4429() -> None:
    """A peer sending frames faster than rate_per_second beyond rate_burst is closed with
    4429; at most about the burst was processed, and nothing after the limit is stored."""
    burst = 10

    async def scenario() -> None:
        async with serving(Limits(rate_per_second=5, rate_burst=burst)) as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            key = AccountKey.generate()
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(key)
                # 2 x burst: enough to cross the limit, and few enough that the frames left unread
                # after the close stay under the node's WebSocket queue (else closing waits)
                flood = [encode_frame(OP, [big_content(key, 10, tag=f"flood-{i}")]) for i in range(2 * burst)]
                with contextlib.suppress(ConnectionClosed):
                    for frame in flood:
                        await peer.send_raw(frame)
                code, _ = await peer.expect_close()
                assert code == CloseCode.RATE_LIMITED
            await probe.round_trip()
            after = node_state(srv.node, ignore={probe.map_id})
            # each flood frame creates a CoValue: only those within the burst were applied
            flooded = set(after) - set(before)
            assert 0 < len(flooded) <= burst + 1
            assert {cid: after[cid] for cid in before} == before

    run(scenario)


# -- a peer that stops reading -------------------------------------------------------------

LAG_LIMITS = Limits(
    max_queue_frames=32,
    max_queue_bytes=4 * 1024 * 1024,
    max_frame_size=256 * 1024,
    content_budget=64 * 1024,
    lag_timeout=1.0,
)


@dataclass
class Lagged:
    conn: PeerConnection
    peak_bytes: int
    peak_frames: int
    writes: int


async def stop_reading_until_lagged(srv: Served, peer: RawPeer, key: AccountKey) -> Lagged:
    """``peer`` (authenticated as ``key``, never reading) loads a CoValue of 20,000
    transactions that the node then keeps changing with 50 KB values until the node closes
    the peer as lagged. Tracks the peer's outgoing queue on the node all along."""
    node = srv.node
    doc = node.create_map(None)
    with node.batch():
        for i in range(20_000):
            node.set(doc.id, f"k{i % 100}", i)
    conn = srv.connection_of(key.account_id)
    await peer.send(Load(doc.id, KnownState(doc.id, False, {})))
    await until(lambda: conn.frames_sent > 0, what="the node to start sending")
    peak_bytes = peak_frames = writes = 0
    deadline = time.monotonic() + timeout(10)
    while not conn.lagged:
        assert time.monotonic() < deadline, f"the peer was never closed as lagged ({writes} writes)"
        peak_bytes = max(peak_bytes, conn.queued_bytes)
        peak_frames = max(peak_frames, conn.queue_depth)
        node.set(doc.id, "live", "y" * 50_000 + str(writes))
        writes += 1
        await asyncio.sleep(0.002)
    return Lagged(conn, peak_bytes, peak_frames, writes)


def test_peer_that_stops_reading_is_closed_as_lagged() -> None:
    """A peer that loads a large CoValue and stops reading while it keeps changing is closed
    as lagged: the node's queue for it never holds more than max_queue_frames /
    max_queue_bytes, its PeerConnection is marked lagged and emptied, the peer sees close code
    4412 once it reads again, and a normal client's write round trip stays fast throughout."""

    async def scenario() -> None:
        async with serving(LAG_LIMITS) as srv, probing(srv.url) as probe:
            key = AccountKey.generate()
            # max_queue=1: the peer's WebSocket stops reading from the socket as soon as one
            # frame waits in it, and the test does not read until the node has given up.
            async with RawPeer(srv.url, max_queue=1) as peer:
                await peer.authenticate(key)
                stop = asyncio.Event()

                async def keep_probing() -> None:
                    while not stop.is_set():
                        await probe.round_trip()

                prober = asyncio.create_task(keep_probing())
                try:
                    lagged = await stop_reading_until_lagged(srv, peer, key)
                finally:
                    stop.set()
                    await prober
                assert 0 < lagged.peak_bytes <= LAG_LIMITS.max_queue_bytes
                assert lagged.peak_frames <= LAG_LIMITS.max_queue_frames
                assert lagged.conn.queued_bytes == 0
                assert lagged.conn.queue_depth == 0
                assert not lagged.conn.send_frame(b"more"), "a lagged peer is sent nothing more"
                assert lagged.conn.backlog_depth == 0
                await probe.round_trip()
                code, _ = await peer.expect_close(units=5)
                assert code == CloseCode.LAGGED
            await until(lambda: lagged.conn not in srv.peers(), what="the closed peer to be dropped")
            assert len(probe.latencies) >= 3
            assert max(probe.latencies) < timeout(2), f"round trips during the flood: {probe.latencies}"

    run(scenario, units=40)


def test_lagged_peer_that_never_reads_again_is_dropped() -> None:
    """A peer closed as lagged that never reads again is still disconnected within a bound
    (a few seconds: the server's close timeout), so it does not keep its socket, its buffers
    and one of its account's connection slots for as long as it likes."""

    async def scenario() -> None:
        async with serving(LAG_LIMITS) as srv:
            key = AccountKey.generate()
            async with RawPeer(srv.url, max_queue=1) as peer:
                await peer.authenticate(key)
                lagged = await stop_reading_until_lagged(srv, peer, key)
                await until(lambda: lagged.conn not in srv.peers(), units=5, what="the node to drop the lagged peer")

    run(scenario, units=40)


def test_reader_catches_up_on_a_covalue_larger_than_its_queue() -> None:
    """A reader that keeps up loads a CoValue whose content exceeds max_queue_bytes: the bulk
    answer is paced by what the peer reads, so it is not closed as lagged and gets everything.

    (This is what a lagged peer does when it reconnects: DESIGN §6 says it "catches up from a
    fresh bulk exchange".)"""
    limits = Limits(
        max_queue_frames=8, max_queue_bytes=1024 * 1024, max_frame_size=256 * 1024, content_budget=64 * 1024
    )

    async def scenario() -> None:
        async with serving(limits) as srv:
            node = srv.node
            doc = node.create_map(None)
            with node.batch():
                for i in range(20_000):
                    node.set(doc.id, f"k{i % 100}", "z" * 100 + str(i))
            total = node.get(doc.id).transaction_count()
            async with syncing(srv.url) as reader:
                follow(reader, doc.id)

                def caught_up() -> bool:
                    core = reader.node.get_or_none(doc.id)
                    return core is not None and core.transaction_count() == total

                await until(caught_up, units=10, what="the reader to hold all 20,000 transactions")
                assert not any(c.lagged for c in srv.peers())

    run(scenario, units=30)


# -- corrections -------------------------------------------------------------------------------


def test_correction_from_a_downstream_peer_is_ignored() -> None:
    """A correction sent to a node by a client (downstream) — even one correctly signed by the
    session's owner — gets error{unexpected_correction} and changes nothing."""

    async def scenario() -> None:
        async with serving() as srv, probing(srv.url) as probe:
            key = AccountKey.generate()
            header = comap_header(None, tag="corrected")
            cid = header.covalue_id()
            sid = session(key)
            mine = signed_log(cid, key, [tx(T0 + i) for i in range(4)], [2], sid=sid)
            async with RawPeer(srv.url) as peer:
                await peer.authenticate(key)
                await peer.send(Content(cid, header, {sid: mine.chunk()}))
                await peer.recv_until(lambda m: isinstance(m, Known) and m.id == cid)
                before = node_state(srv.node, ignore={probe.map_id})
                assert before[cid][0].sessions[sid][0] == 4

                other = signed_log(cid, key, [tx(T0 + 100 + i) for i in range(3)], [], sid=sid)
                await peer.send(Correction(cid, sid, 0, tuple(other.txs), dict(other.sigs), other.head()))
                reply = await peer.recv()
                assert isinstance(reply, Error)
                assert (reply.code, reply.id) == ("unexpected_correction", cid)
                await still_served(peer)
            await probe.round_trip()
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


def forged_history(cid: CoValueID, owner: AccountKey, forger: AccountKey, n: int) -> Correction:
    """A correction of ``owner``'s session from 0 with ``n`` other transactions, signed by
    ``forger`` (the chain is the right one for that session; only the signer is wrong)."""
    sid = session(owner)
    txs = [tx(T0 + 1000 + i, ["set", "forged", i]) for i in range(n)]
    honest_shape = signed_log(cid, owner, txs, [], sid=sid)  # for the chain's head hash
    head = honest_shape.head()
    sig = forger.sign(signed_message(cid, sid, n, head[1]))
    return Correction(cid, sid, 0, tuple(txs), {n: sig}, head)


@pytest.mark.parametrize("kind", ["forged-signature", "other-session-signature"])
def test_forged_correction_from_upstream_changes_nothing(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """A correction from the upstream node that is not signed by the session's owner is
    rejected by the client's LocalNode (bad_signature or broken_chain, reported back as an
    error), logged on the kintsugi.security logger, and changes nothing."""
    owner = AccountKey.generate()
    mallory = AccountKey.generate()
    outcome: dict[str, object] = {}

    async def scenario() -> None:
        node = LocalNode(owner, session=session(owner))
        doc = node.create_map(None)
        for i in range(5):
            node.set(doc.id, f"k{i}", i)
        node.flush()
        before = node_state(node)
        sid = node.session

        async def script(ws: ServerConnection) -> None:
            hello = await act_as_node(ws)
            assert hello.account == owner.account_id
            load = await next_message(ws, lambda m: isinstance(m, Load) and m.id == doc.id)
            assert isinstance(load, Load) and load.known.sessions[sid][0] == 5
            if kind == "forged-signature":
                correction = forged_history(doc.id, owner, mallory, 3)
            else:
                # signatures of the owner, but over another CoValue's chain (replayed)
                elsewhere = signed_log(covalue_id("elsewhere"), owner, [tx(T0 + 7)] * 3, [], sid=sid)
                correction = Correction(doc.id, sid, 0, tuple(elsewhere.txs), dict(elsewhere.sigs), elsewhere.head())
            await ws.send(encode_frame(OP, [correction]))
            reply = await next_message(ws, lambda m: isinstance(m, Error))
            assert isinstance(reply, Error)
            outcome["code"] = reply.code
            outcome["id"] = reply.id

        async with fake_node(script) as url:
            shell = SyncShell(node)
            client = SyncClient(shell, url, backoff=Backoff(initial=0.05, cap=0.2))
            try:
                client.start()
                await until(lambda: "code" in outcome, units=5, what="the client to answer the correction")
            finally:
                await client.stop()
                shell.close()
        assert node_state(node) == before
        assert node.session == sid
        assert node.get_map(doc.id) == {f"k{i}": i for i in range(5)}
        node.close()

    with caplog.at_level(logging.WARNING, logger=SECURITY):
        run(scenario)
    assert outcome["code"] in ("bad_signature", "broken_chain")
    security = [r for r in caplog.records if r.name == SECURITY]
    assert security and all(r.levelno == logging.WARNING for r in security)
    assert any("correction" in r.getMessage() for r in security)


def test_truncating_correction_from_upstream_changes_nothing() -> None:
    """A 'correction' that only cuts the owner's signed session short (fork at a checkpoint,
    no transactions, no signature: nothing the owner signed says the history ends there) is a
    forgery too: it must change nothing. Honest nodes never send one — a real fork always
    carries the node's own, owner-signed, divergent transactions."""
    owner = AccountKey.generate()
    outcome: dict[str, object] = {}

    async def scenario() -> None:
        node = LocalNode(owner, session=session(owner))
        doc = node.create_map(None)
        for i in range(5):
            node.set(doc.id, f"k{i}", i)
        node.flush()
        before = node_state(node)
        content_before = node.get_map(doc.id)
        sid = node.session

        async def script(ws: ServerConnection) -> None:
            await act_as_node(ws)
            await next_message(ws, lambda m: isinstance(m, Load) and m.id == doc.id)
            truncate = Correction(doc.id, sid, 0, (), {}, (0, chain_base(doc.id, sid)))
            await ws.send(encode_frame(OP, [truncate]))
            # the client answers a rejection with an error; an applied correction with a load
            reply = await next_message(ws, lambda m: isinstance(m, Error | Content | Load | Known), units=2)
            outcome["reply"] = reply

        async with fake_node(script) as url:
            shell = SyncShell(node)
            client = SyncClient(shell, url, backoff=Backoff(initial=0.05, cap=0.2))
            try:
                client.start()
                await until(lambda: "reply" in outcome, units=5, what="the client to react to the correction")
            finally:
                await client.stop()
                shell.close()
        after = node_state(node)
        outcome["sessions"] = sorted(after[doc.id][2])
        assert node.session == sid, f"the owner was moved off its session: {outcome}"
        assert after == before, f"a truncating correction changed the replica: {outcome}"
        assert node.get_map(doc.id) == content_before
        node.close()

    run(scenario)


# -- a writer that never checkpoints -----------------------------------------------------------


def test_rarely_signed_session_stays_servable() -> None:
    """A writer whose one checkpoint covers a stretch almost as large as a frame cannot make
    its CoValue unservable: the node either refuses that content or still serves it to a
    reader that loads it later (and no connection is torn down by the node's packing)."""

    async def scenario() -> None:
        limits = Limits(max_frame_size=64 * 1024, content_budget=16 * 1024)
        async with serving(limits) as srv, probing(srv.url) as probe:
            key = AccountKey.generate()
            # the frame's size grows one for one with the value's (same CBOR length widths)
            overhead = len(encode_frame(OP, [big_content(key, 1000, tag="one-stretch")])) - 1000
            message = big_content(key, limits.max_frame_size - overhead - 4, tag="one-stretch")
            frame = encode_frame(OP, [message])
            assert limits.max_frame_size - 16 < len(frame) <= limits.max_frame_size
            async with RawPeer(srv.url) as writer:
                await writer.authenticate(key)
                await writer.send_raw(frame)
                replies = await writer.recv_until(lambda m: isinstance(m, Known | Error) and m.id == message.id)
                stored = srv.node.get_or_none(message.id) is not None
                if not stored:
                    assert errors_in(replies), "content dropped without an error"
                    return
                async with syncing(srv.url) as reader:
                    follow(reader, message.id)

                    def served() -> bool:
                        core = reader.node.get_or_none(message.id)
                        return core is not None and core.transaction_count() == 1

                    await until(served, units=3, what="the reader to get the stored CoValue")
                    assert reader.client.connections == 1, "the reader's connection was torn down"
                await still_served(writer)
            await probe.round_trip()

    run(scenario)
