"""What an inspector reads from a node over real WebSockets (:mod:`engine.net.remote`):
opening fails fast with a typed error, and an admin reads the peer log, a CAS slot's value
and history, and the node's own sync events — while other accounts are refused and every
reply fits in a frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection

from engine import codec
from engine.crypto import AccountKey
from engine.errors import (
    AdminRefused,
    HandshakeClosed,
    HandshakeTimeout,
    KintsugiError,
    NodeUnreachable,
    NotANode,
    ProtocolError,
)
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present
from engine.kv.store import Conflict, Stored
from engine.net.client import AuthFailed
from engine.net.remote import EventCursor, RemoteSession
from engine.protocol.frames import BULK, OP, decode_frame, encode_frame
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION, CloseCode, Limits
from engine.protocol.messages import NONCE_SIZE, Admin, AdminResult, Challenge, Error
from tests.engine.net.conftest import (
    RAW_MAX_SIZE,
    ForkingTab,
    RawPeer,
    act_as_node,
    fake_node,
    run,
    serving,
    syncing,
    until,
)
from tests.util import timeout

CLOCK = 1_700_000_999_000


@contextlib.asynccontextmanager
async def remote(url: str, key: AccountKey) -> AsyncIterator[RemoteSession]:
    """An open :class:`RemoteSession` as ``key``'s account, closed on exit."""
    session = RemoteSession(url, key)
    await session.open(timeout(5))
    try:
        yield session
    finally:
        await session.close()
        session.node.close()


# -- opening --------------------------------------------------------------------------------


async def fails_fast(url: str, error: type[KintsugiError], units: float = 5) -> KintsugiError:
    """Open a session to ``url`` with a generous deadline: it must raise ``error`` well before
    (within ``units``), leaving nothing connected."""
    session = RemoteSession(url, AccountKey.generate())
    started = time.monotonic()
    with pytest.raises(error) as info:
        await session.open(timeout(30))
    assert time.monotonic() - started < timeout(units), f"{error.__name__} took the whole deadline"
    assert not session.client.connected.is_set() and not session.shell.connections
    return info.value


def test_open_fails_fast_when_the_node_refuses_or_closes_during_the_handshake() -> None:
    """A refusal with an error message raises that error (``auth_failed``, or the node's own
    code); a close without one raises HandshakeClosed with the close code — at once, not
    after the deadline, and the client stops retrying."""

    async def refuse(ws: ServerConnection) -> None:
        await act_as_node(ws, reply=Error("auth_failed", "not this account"))
        await ws.close(CloseCode.AUTH_FAILED, "auth_failed")

    async def too_many(ws: ServerConnection) -> None:
        await act_as_node(ws, reply=Error("too_many_connections", "at most 32"))
        await ws.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")

    async def hang_up(ws: ServerConnection) -> None:
        challenge = Challenge("fake", os.urandom(NONCE_SIZE), PROTOCOL_VERSION, "6.6.6", FEATURES)
        await ws.send(encode_frame(OP, [challenge]))
        await ws.recv()
        await ws.close(CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")

    async def going_away(ws: ServerConnection) -> None:
        await ws.close(CloseCode.GOING_AWAY, "node shutting down")

    async def scenario() -> None:
        async with fake_node(refuse) as url:
            error = await fails_fast(url, AuthFailed)
            assert (error.code, error.detail) == ("auth_failed", "not this account")
        async with fake_node(too_many) as url:
            assert (await fails_fast(url, ProtocolError)).code == "too_many_connections"
        async with fake_node(hang_up) as url:
            closed = await fails_fast(url, HandshakeClosed)
            assert isinstance(closed, HandshakeClosed) and closed.code == "handshake_closed"
            assert (closed.close_code, closed.reason) == (CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")
            assert "closed the connection during the handshake (close code 4408" in closed.detail
        async with fake_node(going_away) as url:
            closed = await fails_fast(url, HandshakeClosed)
            assert isinstance(closed, HandshakeClosed) and closed.close_code == CloseCode.GOING_AWAY

    run(scenario)


def test_open_fails_fast_without_a_node_there() -> None:
    """Nothing listening: connection_refused. Something that is not a WebSocket server:
    not_a_node. A WebSocket server that never speaks: timeout, at the deadline given."""

    async def http_404(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def silent(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        refused = await fails_fast(f"ws://127.0.0.1:{port}", NodeUnreachable)
        assert refused.code == "connection_refused" and refused.detail.startswith("nothing accepts connections")
        server = await asyncio.start_server(http_404, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            assert (await fails_fast(f"ws://127.0.0.1:{port}", NotANode)).code == "not_a_node"
        async with fake_node(silent) as url:
            session = RemoteSession(url, AccountKey.generate())
            deadline = timeout(0.3)
            started = time.monotonic()
            with pytest.raises(HandshakeTimeout) as info:
                await session.open(deadline)
            assert time.monotonic() - started >= deadline
            assert info.value.code == "timeout" and f"within {deadline:g} s" in info.value.detail

    run(scenario)


# -- peers and the peer log -------------------------------------------------------------------


def test_an_admin_reads_the_peer_log_with_close_codes_and_lagged_peers() -> None:
    """The ``peers`` reply carries the node's peer log: a client that left normally (1000)
    and a peer closed as lagged (4412, ``lagged``). Other accounts are refused and stay
    connected."""
    admin, user = AccountKey.generate(), AccountKey.generate()

    async def scenario() -> None:
        async with serving(Limits(max_backlog_messages=5), admins=[admin.account_id]) as srv:
            async with syncing(srv.url) as leaving:
                await until(lambda: len(srv.peers()) == 1, what="the client to connect")
            await until(lambda: not srv.peers(), what="the client to leave")
            async with RawPeer(srv.url) as greedy:
                await greedy.authenticate(user)
                # ten answers at once overflow a backlog of five: the node closes it as lagged
                await greedy.send(*(Admin(i, "list", {}) for i in range(10)), kind=BULK)
                code, _ = await greedy.expect_close()
                assert code == CloseCode.LAGGED
            await until(lambda: not srv.peers(), what="the lagged peer to be gone")
            async with remote(srv.url, admin) as session:
                rows, log = await session.peers(timeout(5))
                assert [r.account for r in rows] == [admin.account_id] and rows[0].admin
                assert log is not None
                downs = [(e.close_code, e.lagged) for e in log if e.event == "down"]
                assert downs == [(CloseCode.NORMAL, False), (CloseCode.LAGGED, True)]
                assert [e.event for e in log] == ["up", "down", "up", "down", "up"]
                assert [e.at_ms for e in log] == sorted(e.at_ms for e in log)
                assert log[0].peer_id.endswith(leaving.node.account_id[:16])
            async with remote(srv.url, user) as session:
                with pytest.raises(AdminRefused) as info:
                    await session.peers(timeout(5))
                assert (info.value.code, info.value.reason) == ("admin_refused", "permission_denied")
                assert isinstance(await session.admin("list", None, timeout(5)), dict)  # still connected

    run(scenario)


# -- CAS slots --------------------------------------------------------------------------------


def test_a_slot_travels_with_its_value_and_lost_races_within_the_frame() -> None:
    """``kv_slot`` sends the value and the CAS history, lost races included. On a node with
    16 KiB frames a 64 KiB value is left out (size given) and the oldest records go: the
    frame on the wire stays under the limit. Another account's namespace is refused; one's
    own is not."""
    admin, user = AccountKey.generate(), AccountKey.generate()
    limits = Limits(max_frame_size=16 * 1024)

    async def scenario() -> None:
        async with serving(limits, admins=[admin.account_id]) as srv:
            kv, ns = srv.node.kv, srv.node.account_id
            assert kv.cas(ns, "prefs", 0, Present(["a"])) == Stored(1)
            assert isinstance(kv.cas(ns, "prefs", 0, Present(["b"])), Conflict)  # lost race
            assert kv.cas(ns, "prefs", 1, Present(["a", "b"])) == Stored(2)
            for gen in range(200):
                kv.cas(ns, "big", gen, Present(gen))
                kv.cas(ns, "big", gen, Present("loser"))
            kv.cas(ns, "big", 200, Present("x" * (MAX_SLOT_VALUE_SIZE - 64)))
            kv.cas(user.account_id, "own", 0, Present("mine"))

            async with remote(srv.url, admin) as session:
                prefs = await session.kv_slot(ns, "prefs", timeout(5))
                assert (prefs.row.generation, prefs.row.value, prefs.value_omitted) == (2, ["a", "b"], False)
                assert [(r.expected_gen, r.outcome, r.generation) for r in prefs.history] == [
                    (0, "stored", 1),
                    (0, "conflict", 1),
                    (1, "stored", 2),
                ]
                big = await session.kv_slot(ns, "big", timeout(5))
                assert big.value_omitted and big.row.present and big.row.generation == 201
                assert big.history_dropped > 0 and big.history[-1].generation == 201
                assert any(r.outcome == "conflict" for r in big.history)

            async with RawPeer(srv.url) as raw:
                await raw.authenticate(admin)
                await raw.send(Admin.kv_slot(77, ns, "big"))
                data = await asyncio.wait_for(raw.socket.recv(), timeout(5))
                assert isinstance(data, bytes) and len(data) <= limits.max_frame_size
                (reply,) = decode_frame(data, max_size=RAW_MAX_SIZE, max_messages=1).messages
                assert isinstance(reply, AdminResult) and reply.rid == 77 and reply.ok
                assert len(codec.encode(reply.result)) < limits.max_frame_size

            async with remote(srv.url, user) as session:
                with pytest.raises(AdminRefused) as info:
                    await session.kv_slot(ns, "prefs", timeout(5))
                assert info.value.reason == "kv_access_denied"
                own = await session.kv_slot(user.account_id, "own", timeout(5))
                assert own.row.value == "mine" and [r.outcome for r in own.history] == ["stored"]
            assert kv.get(ns, "prefs")[0] == 2  # reads only

    run(scenario)


# -- the node's sync events -----------------------------------------------------------------


def test_an_admin_follows_the_node_fork_events_by_cursor() -> None:
    """A fork the node detects (two tabs of one account wrote one session) reaches an admin
    as ``fork_detected`` then ``correction_sent``, stamped with the node's clock; the cursor
    moves on, so a second read brings nothing new, and a cursor of another epoch starts over.
    Other accounts are refused."""
    admin, user = AccountKey.generate(), AccountKey.generate()

    async def scenario() -> None:
        async with serving(admins=[admin.account_id], clock_ms=lambda: CLOCK) as srv:
            tab = ForkingTab(srv.node, srv.url)
            cid = await tab.start()
            try:
                await until(
                    lambda: any(e.kind == "correction_sent" for e in srv.shell.manager.events),
                    what="the node to detect the fork",
                )
            finally:
                await tab.stop()
            async with remote(srv.url, admin) as session:
                cursor = EventCursor()
                events = await session.events(cursor, timeout(5))
                assert [(e.kind, e.covalue, e.session, e.at_ms) for e in events] == [
                    ("fork_detected", cid, tab.session, CLOCK),
                    ("correction_sent", cid, tab.session, CLOCK),
                ]
                assert events[0].peer.startswith("in:") and "heads differ" in events[0].detail
                assert (cursor.epoch, cursor.after, cursor.missed, cursor.more) == (CLOCK, 2, 0, False)
                assert await session.events(cursor, timeout(5)) == []
                stale = EventCursor(epoch=CLOCK - 1, after=10**6)
                assert [e.kind for e in await session.events(stale, timeout(5))] == ["fork_detected", "correction_sent"]
                assert stale.epoch == CLOCK and stale.after == 2
            async with remote(srv.url, user) as session:
                with pytest.raises(AdminRefused) as info:
                    await session.events(EventCursor(), timeout(5))
                assert info.value.reason == "permission_denied"

    run(scenario)


def test_malformed_admin_requests_get_a_coded_refusal_and_change_nothing() -> None:
    """Bad arguments are answered with ``ok: false`` and ``invalid_message`` under the
    request's rid; an unknown op (which the decoder refuses) gets ``error{invalid_message}``.
    The connection stays usable and the node's slots are as before."""
    admin = AccountKey.generate()

    async def scenario() -> None:
        async with serving(admins=[admin.account_id]) as srv:
            kv, ns = srv.node.kv, srv.node.account_id
            kv.cas(ns, "k", 0, Present(1))
            before = (kv.get(ns, "k"), kv.history(ns, "k"), len(srv.shell.manager.events))
            async with RawPeer(srv.url) as raw:
                await raw.authenticate(admin)
                for rid, args in enumerate(({"namespace": 1, "key": "k"}, {"key": "k"}, {"limit": 0}), 1):
                    op = "events" if "limit" in args else "kv_slot"
                    await raw.send(Admin(rid, op, args))
                    reply = await raw.recv()
                    assert isinstance(reply, AdminResult) and reply.rid == rid and not reply.ok
                    assert reply.result["code"] == "invalid_message"
                await raw.send_raw(
                    codec.encode({"v": 1, "k": "op", "msg": {"t": "admin", "rid": 9, "op": "rm", "args": {}}})
                )
                error = await raw.recv()
                assert isinstance(error, Error) and error.code == "invalid_message"
                await raw.send(Admin(10, "list", {}))
                reply = await raw.recv()
                assert isinstance(reply, AdminResult) and reply.ok
            assert (kv.get(ns, "k"), kv.history(ns, "k"), len(srv.shell.manager.events)) == before

    run(scenario)

