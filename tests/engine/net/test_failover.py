"""A client given several node URLs (engine/net/client.py): the order it tries them in, the
backoff between full rounds, moving to another node when its node goes away and staying
there (no flapping), and a node that refuses for good (another protocol, not the node it
was told to expect) tried once per round, never hammered.

The order is checked on :class:`Rotation` and the client's own planning without sockets;
the rest with in-process nodes on real loopback WebSockets (``serving``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import ServerConnection, serve

from engine import __version__
from engine.crypto import AccountKey
from engine.errors import NodeUnreachable, UsageError, WrongNode
from engine.ids import CoValueID
from engine.net.client import PERMANENT_FAILURES, STABLE_CONNECTION, Backoff, Rotation, SyncClient
from engine.net.remote import RemoteSession
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, encode_frame
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION
from engine.protocol.messages import NONCE_SIZE, Challenge
from tests.engine.net.conftest import Served, run, serving, until
from tests.engine.net.test_backoff import RecordingBackoff, closed_port
from tests.util import timeout

CLIENT_LOG = "engine.net.client"

# -- the order, without sockets --------------------------------------------------------------


def test_one_url_is_one_try_per_round_with_the_backoff_between() -> None:
    """A single URL behaves as before: try, and after each failure wait, then try again."""
    rotation = Rotation(["ws://a"])
    assert rotation.next() == ("ws://a", False)
    for _ in range(3):
        rotation.failed()
        assert rotation.next() == ("ws://a", True)
    assert rotation.rounds == 4


def test_a_failed_try_moves_to_the_next_url_and_a_full_round_waits() -> None:
    """[A, B, C] all failing: A, B, C at once, then a wait, then A, B, C again."""
    rotation = Rotation(["ws://a", "ws://b", "ws://c"])
    tries = []
    for _ in range(7):
        tries.append(rotation.next())
        rotation.failed()
    assert tries == [
        ("ws://a", False),
        ("ws://b", False),
        ("ws://c", False),
        ("ws://a", True),
        ("ws://b", False),
        ("ws://c", False),
        ("ws://a", True),
    ]
    assert rotation.rounds == 3


def test_a_lost_connection_tries_the_other_nodes_first_and_its_own_last() -> None:
    """Connected to A (first try), A goes away: B at once; B fails: the round is over, so a
    wait, then A again."""
    rotation = Rotation(["ws://a", "ws://b"])
    assert rotation.next() == ("ws://a", False)
    rotation.connected(0.0)
    rotation.closed(1.0)
    assert rotation.next() == ("ws://b", False)
    rotation.failed()
    assert rotation.next() == ("ws://a", True)


def test_a_long_connection_starts_a_new_round_when_it_ends() -> None:
    """A failed, B connected for longer than STABLE_CONNECTION and then lost: A is tried at
    once (a new round, B counted in it), and only then a wait before B."""
    rotation = Rotation(["ws://a", "ws://b"])
    rotation.next()
    rotation.failed()
    assert rotation.next() == ("ws://b", False)
    rotation.connected(100.0)
    rotation.closed(100.0 + STABLE_CONNECTION)
    assert rotation.next() == ("ws://a", False)
    rotation.failed()
    assert rotation.next() == ("ws://b", True)


def test_nodes_that_accept_and_close_at_once_are_tried_once_per_round() -> None:
    """Two nodes that complete the handshake and close at once, forever: each round tries
    both once and then waits the backoff, so the client never spins between them."""
    rotation = Rotation(["ws://a", "ws://b"])
    waits = []
    for n in range(20):
        _url, wait = rotation.next()
        waits.append(wait)
        rotation.connected(float(n))
        rotation.closed(n + 0.1)
    assert waits == [False, False] + [True, False] * 9


def test_urls_are_deduplicated_and_at_least_one_is_needed() -> None:
    assert Rotation(["ws://a", "ws://b", "ws://a"]).urls == ("ws://a", "ws://b")
    with pytest.raises(UsageError):
        Rotation([])


def test_the_client_draws_the_existing_backoff_once_per_full_round() -> None:
    """The client's own planning over [A, B] failing: no wait inside a round, and between
    rounds the reconnect delays of the backoff (1 s doubling to the cap)."""
    node = LocalNode(AccountKey.generate())
    shell = SyncShell(node)
    try:
        client = SyncClient(shell, ["ws://a:1", "ws://b:1"], backoff=Backoff(initial=1, cap=4))
        plan = []
        for _ in range(8):
            plan.append(client._plan())
            client.rotation.failed()
        assert plan == [
            ("ws://a:1", 0),
            ("ws://b:1", 0),
            ("ws://a:1", 1),
            ("ws://b:1", 0),
            ("ws://a:1", 2),
            ("ws://b:1", 0),
            ("ws://a:1", 4),
            ("ws://b:1", 0),
        ]
        assert client.urls == ("ws://a:1", "ws://b:1")
        assert SyncClient(shell, "ws://a:1").urls == ("ws://a:1",)  # the single-URL form
    finally:
        shell.close()
        node.close()


# -- real sockets ----------------------------------------------------------------------------


def holds(served: Served, covalue: CoValueID, keys: set[str]) -> bool:
    """Whether the node holds ``covalue`` with every one of ``keys``."""
    return served.node.get_or_none(covalue) is not None and keys <= set(served.node.get_map(covalue))


async def restart(served: Served, port: int) -> None:
    """Start the node's server again on ``port`` (its data kept)."""
    url = await served.server.start(port=port)
    assert url.endswith(f":{port}")


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_moves_to_the_next_node_keeps_every_write_and_does_not_flap_back() -> None:
    """Client on [A, B]: writes reach A; A goes away and the client moves to B at once,
    sending B what it lacks (all of it: B never saw this CoValue), writes made meanwhile
    included. A comes back: the client stays on B, making no try at all, until B goes;
    then it moves to A and A gets what was written on B."""

    async def scenario() -> None:
        async with serving() as a, serving() as b:
            node = LocalNode(AccountKey.generate())
            shell = SyncShell(node)
            client = SyncClient(shell, [a.url, b.url], backoff=Backoff(initial=0.02, cap=0.1))
            client.start()
            try:
                await until(client.connected.is_set, what="the first connection")
                assert client.node_url == a.url
                group = node.create_group()
                comap = node.create_map(group.id)
                written: set[str] = set()

                def write(prefix: str, n: int = 5) -> None:
                    for i in range(n):
                        node.set(comap.id, f"{prefix}{i}", i)
                        written.add(f"{prefix}{i}")

                write("a")
                await until(lambda: holds(a, comap.id, written), what="A to hold the first writes")

                await a.server.close()
                write("gap")  # while the client is between nodes
                await until(lambda: client.node_url == b.url, what="the client to move to B")
                write("b")
                await until(lambda: holds(b, comap.id, written), what="B to hold every write")
                assert [(t.url, t.error) for t in client.attempts] == [(a.url, None), (b.url, None)]

                await restart(a, port_of(a.url))
                tries, connections = len(client.attempts), client.connections
                write("b-again")
                await until(lambda: holds(b, comap.id, written), what="B to hold the later writes")
                # Long enough for many reconnect rounds at these delays: none may happen.
                await asyncio.sleep(timeout(0.5))
                assert client.node_url == b.url
                assert (len(client.attempts), client.connections) == (tries, connections)
                assert not a.peers(), "the client went back to A while B was fine"

                await b.server.close()
                await until(lambda: client.node_url == a.url, what="the client to move back to A")
                write("a-again")
                await until(lambda: holds(a, comap.id, written), what="A to hold everything")
                assert set(node.get_map(comap.id)) == written
            finally:
                await client.stop()
                shell.close()
                node.close()

    run(scenario)


def test_a_node_that_is_not_the_expected_one_is_skipped() -> None:
    """expect_nodes pins the nodes the client accepts (by the name their challenge
    announces): A (another node) fails with wrong_node before any hello is signed for it,
    and the client goes on to B at once."""

    async def scenario() -> None:
        async with serving() as a, serving() as b:
            node = LocalNode(AccountKey.generate())
            shell = SyncShell(node)
            expected = b.server.name
            client = SyncClient(shell, [a.url, b.url], backoff=Backoff(initial=5, cap=5), expect_nodes=[expected])
            client.start()
            try:
                await until(client.connected.is_set, what="a connection to B")
                assert client.node_url == b.url
                first, second = client.attempts
                assert (first.url, first.error, first.permanent) == (a.url, WrongNode.code, True)
                assert (second.url, second.error) == (b.url, None)
                assert isinstance(client.last_error, WrongNode)
                assert client.last_error.actual == a.server.name
                assert client.challenge is not None and client.challenge.node == expected
                assert not a.peers(), "A welcomed the client: a hello was sent to the wrong node"
            finally:
                await client.stop()
                shell.close()
                node.close()

    run(scenario)


class OtherProtocolNode:
    """A node speaking another protocol version: it sends its challenge and counts the
    connections made to it."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        challenge = Challenge("other-node", os.urandom(NONCE_SIZE), PROTOCOL_VERSION + 1, __version__, FEATURES)
        await ws.send(encode_frame(OP, [challenge]))
        await ws.wait_closed()


@contextlib.asynccontextmanager
async def other_protocol_node() -> AsyncIterator[OtherProtocolNode]:
    node = OtherProtocolNode()
    async with serve(node._handle, "127.0.0.1", 0, compression=None) as server:
        node.url = f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"
        yield node


def test_a_node_of_another_protocol_is_tried_once_per_round_never_hammered(caplog: pytest.LogCaptureFixture) -> None:
    """[X (another protocol), Y (nothing listens)]: X fails with unsupported_version, logged
    as an error at once (retrying cannot fix it), and the client goes on to Y; X is tried
    again only in the next round, after the backoff delay. The client's state shows the
    URL and time of its next try while it waits."""
    backoff = RecordingBackoff(initial=0.01, cap=0.04)
    waiting: list[tuple[str | None, float | None]] = []
    y = f"ws://127.0.0.1:{closed_port()}"

    async def scenario() -> str:
        async with other_protocol_node() as x:
            node = LocalNode(AccountKey.generate())
            shell = SyncShell(node)
            client = SyncClient(shell, [x.url, y], backoff=backoff)
            client.start()
            try:

                def noted() -> bool:
                    state = client.state()
                    if state.next_try is not None:
                        waiting.append((state.next_url, state.next_try))
                    return backoff.failures >= 6

                await until(noted, what="six failed rounds")
            finally:
                await client.stop()
                shell.close()
                node.close()
            rounds = client.rotation.rounds
            assert x.connections in (rounds - 1, rounds), f"{x.connections} connections in {rounds} rounds"
            tries = list(client.attempts)
            assert [t.url for t in tries] == [x.url, y] * (len(tries) // 2) + [x.url] * (len(tries) % 2)
            assert {(t.error, t.permanent) for t in tries if t.url == x.url} == {("unsupported_version", True)}
            assert {(t.error, t.permanent) for t in tries if t.url == y} == {(NodeUnreachable.code, False)}
            assert backoff.delays[:4] == [0.01, 0.02, 0.04, 0.04]
            assert waiting and {url for url, _at in waiting} == {x.url}, "each round starts again at X"
            return x.url

    with caplog.at_level(logging.INFO, logger=CLIENT_LOG):
        x_url = run(scenario)
    failures = [r for r in caplog.records if r.name == CLIENT_LOG and "failed" in r.getMessage()]
    of_x = [r for r in failures if r.getMessage().startswith(f"connection to {x_url} failed")]
    assert of_x and {r.levelno for r in of_x} == {logging.ERROR}, "a permanent failure is an error at once"
    assert f"trying {y} now (failure 1)" in of_x[0].getMessage()
    of_y = [r for r in failures if r.getMessage().startswith(f"connection to {y} failed")]
    assert of_y[0].levelno == logging.WARNING and f"trying {x_url} in " in of_y[0].getMessage()


def test_permanent_failures_are_the_ones_retrying_cannot_fix() -> None:
    assert {cls.code for cls in PERMANENT_FAILURES} == {"unsupported_version", "auth_failed", "wrong_node"}


def test_a_session_opens_on_the_first_node_that_answers() -> None:
    """RemoteSession (the CLI's and the inspector's) over [nothing there, a node]: it opens
    on the node; over two URLs where nothing listens, it raises once both failed."""

    async def scenario() -> None:
        key = AccountKey.generate()
        async with serving() as b:
            down = f"ws://127.0.0.1:{closed_port()}"
            session = RemoteSession([down, b.url], key)
            try:
                await session.open(timeout(5))
                assert session.url == b.url and session.urls == (down, b.url)
                assert [t.error for t in session.client.attempts] == [NodeUnreachable.code, None]
            finally:
                await session.close()
                session.node.close()
        both = [f"ws://127.0.0.1:{closed_port()}", f"ws://127.0.0.1:{closed_port()}"]
        session = RemoteSession(both, key)
        with pytest.raises(NodeUnreachable):
            await session.open(timeout(5))
        session.node.close()
        assert [t.url for t in session.client.attempts] == both

    run(scenario)
