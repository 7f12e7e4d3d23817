"""Harness for the network-shell tests: real WebSockets on 127.0.0.1, one event loop per test.

Each test is a plain function that runs its scenario with :func:`run` (``asyncio.run`` with a
bound of a few test units, see ``tests/util.py``). Everything a scenario opens is an async
context manager that closes it in its ``finally``: :func:`serving` (a node and its server),
:func:`syncing` (a well-behaved :class:`SyncClient`), :class:`RawPeer` (a hand-driven
WebSocket speaking the protocol frame by frame, for hostile peers) and :class:`Probe` (two
clients measuring a write round trip through the node, to show other peers are unaffected).
Waiting is always for a condition, with a deadline (:func:`until`, :meth:`RawPeer.recv`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine.crypto import AccountKey
from engine.ids import AccountID, CoValueID, new_session_id
from engine.model.known_state import KnownState
from engine.net.client import Backoff, SyncClient
from engine.net.connection import PeerConnection
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, Frame, decode_frame, encode_frame
from engine.protocol.limits import DEFAULT_LIMITS, FEATURES, PROTOCOL_VERSION, Limits
from engine.protocol.messages import (
    NONCE_SIZE,
    Challenge,
    Error,
    Hello,
    Known,
    Load,
    Message,
    Welcome,
    hello_message,
)
from tests.util import timeout

T = TypeVar("T")

#: Decoding limits of the test side: large, so the node's own limits are what is tested.
RAW_MAX_SIZE = 64 * 1024 * 1024


def run(scenario: Callable[[], Awaitable[T]], units: float = 20) -> T:
    """Run ``scenario()`` on a fresh event loop; fail if it takes more than ``units`` units."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout(units))

    return asyncio.run(bounded())


async def until(cond: Callable[[], bool], units: float = 5, what: str = "condition") -> None:
    """Return as soon as ``cond()`` holds; fail after ``units`` test units."""
    deadline = time.monotonic() + timeout(units)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout(units):.1f}s waiting for {what}")
        await asyncio.sleep(0.002)


# -- a node ----------------------------------------------------------------------------------


@dataclass
class Served:
    node: LocalNode
    shell: SyncShell
    server: NodeServer
    url: str

    def peers(self) -> list[PeerConnection]:
        """The node's live downstream connections."""
        return [c for pid, c in self.shell.connections.items() if pid.startswith("in:")]

    def connection_of(self, account: AccountID) -> PeerConnection:
        """The node's (single) live connection from ``account``."""
        found = [c for c in self.peers() if c.peer_id.endswith(":" + account[:16])]
        assert len(found) == 1, f"{len(found)} connections from {account}"
        return found[0]


@contextlib.asynccontextmanager
async def serving(
    limits: Limits = DEFAULT_LIMITS,
    *,
    admins: Iterable[AccountID] = (),
    key: AccountKey | None = None,
    clock_ms: Callable[[], int] | None = None,
) -> AsyncIterator[Served]:
    """An in-memory node listening on 127.0.0.1 (a free port), closed on exit. ``clock_ms``:
    the node's clock (default the wall clock)."""
    node = LocalNode(key or AccountKey.generate(), **({"clock_ms": clock_ms} if clock_ms is not None else {}))
    shell = SyncShell(node, limits=limits)
    server = NodeServer(shell, admins=admins)
    try:
        url = await server.start()
        yield Served(node, shell, server, url)
    finally:
        await server.close()
        shell.close()
        node.close()


@dataclass
class Synced:
    node: LocalNode
    shell: SyncShell
    client: SyncClient


@contextlib.asynccontextmanager
async def syncing(
    url: str, key: AccountKey | None = None, *, limits: Limits = DEFAULT_LIMITS, wait: bool = True
) -> AsyncIterator[Synced]:
    """A well-behaved client replica synced with the node at ``url``, stopped on exit."""
    node = LocalNode(key or AccountKey.generate())
    shell = SyncShell(node, limits=limits)
    client = SyncClient(shell, url, backoff=Backoff(initial=0.05, cap=0.2))
    try:
        client.start()
        if wait:
            await asyncio.wait_for(client.connected.wait(), timeout(5))
        yield Synced(node, shell, client)
    finally:
        await client.stop()
        shell.close()
        node.close()


class ForkingTab:
    """Two "tabs" of one new account writing one session id, to make a node detect a fork.

    :meth:`start`: tab A's first write of a new (unsafeAllowAll) CoMap is handed to ``node``
    in process; tab B, which never saw it, writes a different first transaction to the same
    session and connects to ``url``. Its ``load`` shows the node heads that differ at a
    common length: the node reports ``fork_detected`` and ``correction_sent``, and tab B
    applies the correction. :meth:`stop` disconnects tab B.
    """

    def __init__(self, node: LocalNode, url: str) -> None:
        self.node = node
        self.url = url
        self.key = AccountKey.generate()
        self.session = new_session_id(self.key.account_id, os.urandom)
        self.tab: LocalNode | None = None
        self.shell: SyncShell | None = None
        self.client: SyncClient | None = None
        self.covalue: CoValueID | None = None

    async def start(self) -> CoValueID:
        tab_a = LocalNode(self.key, session=self.session)
        core = tab_a.create_map(None, meta={"name": "forked by two tabs"})
        tab_a.set(core.id, "who", "tab a")
        tab_a.flush()
        self.node.add_header(core.header)
        self.node.apply_content(core.id, {self.session: tab_a.get(core.id).sessions[self.session].chunk()})
        tab_a.close()
        self.tab = LocalNode(self.key, session=self.session)
        self.tab.add_header(core.header)
        self.tab.set(core.id, "who", "tab b")
        self.tab.flush()
        self.shell = SyncShell(self.tab)
        self.client = SyncClient(self.shell, self.url, backoff=Backoff(initial=0.05, cap=0.2))
        self.client.start()
        self.covalue = core.id
        return core.id

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.stop()
        if self.shell is not None:
            self.shell.close()
        if self.tab is not None:
            self.tab.close()


def follow(replica: Synced, covalue: CoValueID) -> None:
    """Ask the upstream node for ``covalue`` and keep following its changes."""
    replica.shell.manager.load(covalue)
    replica.shell.dispatch()


# -- a raw peer ------------------------------------------------------------------------------


class RawPeer:
    """One WebSocket to the node, driven by hand. Every frame it receives is kept in ``frames``.

    Use as ``async with RawPeer(url) as peer:``; the socket is closed on exit.
    """

    def __init__(self, url: str, **connect_kwargs: Any) -> None:
        self.url = url
        self.connect_kwargs = connect_kwargs
        self.ws: ClientConnection | None = None
        self.frames: list[Frame] = []
        self.challenge: Challenge | None = None
        self._pending: list[Message] = []

    async def __aenter__(self) -> RawPeer:
        kwargs: dict[str, Any] = {
            "compression": None,
            "max_size": RAW_MAX_SIZE,
            "proxy": None,
            "open_timeout": timeout(5),
            "close_timeout": timeout(1),
            "ping_interval": None,
        }
        kwargs.update(self.connect_kwargs)
        self.ws = await connect(self.url, **kwargs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            await self.ws.wait_closed()

    @property
    def socket(self) -> ClientConnection:
        assert self.ws is not None, "not connected"
        return self.ws

    # sending

    async def send(self, *messages: Message, kind: str = OP) -> None:
        await self.socket.send(encode_frame(kind, list(messages)))

    async def send_raw(self, data: bytes) -> None:
        await self.socket.send(data)

    # receiving

    async def recv_frame(self, units: float = 5) -> Frame:
        """The next frame (raises ConnectionClosed when the node has closed)."""
        data = await asyncio.wait_for(self.socket.recv(), timeout(units))
        assert isinstance(data, bytes), "the node sends binary frames only"
        frame = decode_frame(data, max_size=RAW_MAX_SIZE, max_messages=10**6)
        assert not frame.errors, f"the node sent invalid messages: {frame.errors}"
        self.frames.append(frame)
        return frame

    async def recv(self, units: float = 5) -> Message:
        """The next message (op frames hold one; bulk frames are flattened)."""
        while not self._pending:
            self._pending.extend((await self.recv_frame(units)).messages)
        return self._pending.pop(0)

    async def recv_until(self, pred: Callable[[Message], bool], units: float = 5) -> list[Message]:
        """Messages up to and including the first one for which ``pred`` holds."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout(units)
        while True:
            left = max(0.0, deadline - time.monotonic()) / timeout(1)
            message = await self.recv(left)
            got.append(message)
            if pred(message):
                return got

    async def expect_close(self, units: float = 5) -> tuple[int | None, list[Message]]:
        """Read until the node closes; the close code it sent and the messages before it."""
        got: list[Message] = []
        deadline = time.monotonic() + timeout(units)
        with contextlib.suppress(ConnectionClosed):
            while True:
                left = max(0.0, deadline - time.monotonic()) / timeout(1)
                got.append(await self.recv(left))
        await self.socket.wait_closed()
        return self.socket.close_code, got

    # protocol

    async def read_challenge(self) -> Challenge:
        message = await self.recv()
        assert isinstance(message, Challenge), f"expected a challenge, got {message}"
        self.challenge = message
        return message

    async def hello(
        self,
        key: AccountKey,
        *,
        account: AccountID | None = None,
        signed: bytes | None = None,
        role: str = "client",
    ) -> Message:
        """Answer the challenge as ``account`` (default: ``key``'s) with ``key``'s signature of
        ``signed`` (default: the correct hello message); returns the node's reply."""
        challenge = self.challenge or await self.read_challenge()
        to_sign = signed if signed is not None else hello_message(challenge.nonce, challenge.node)
        await self.send(Hello(account or key.account_id, role, key.sign(to_sign), "test", ()))
        return await self.recv()

    async def authenticate(self, key: AccountKey, role: str = "client") -> Welcome:
        reply = await self.hello(key, role=role)
        assert isinstance(reply, Welcome), f"expected welcome, got {reply}"
        return reply

    async def ask(self, covalue: CoValueID) -> list[Message]:
        """Send ``load{covalue}`` as a replica holding nothing of it; every message up to the
        node's ``known`` answer for it."""
        await self.send(Load(covalue, KnownState(covalue, False, {})))
        return await self.recv_until(lambda m: isinstance(m, Known) and m.id == covalue)


def errors_in(messages: Iterable[Message]) -> list[str]:
    """Codes of the error messages among ``messages``, in order."""
    return [m.code for m in messages if isinstance(m, Error)]


# -- a fake node ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_node(script: Callable[[ServerConnection], Awaitable[None]]) -> AsyncIterator[str]:
    """A tiny hand-written 'node' (a bare websockets server) that runs ``script`` on each
    connection, to test clients against a broken or hostile upstream. Yields its ws:// URL.
    An exception in ``script`` (a failed assertion) is re-raised when the block exits."""
    failures: list[BaseException] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            await script(ws)
        except ConnectionClosed:
            pass
        except Exception as exc:
            failures.append(exc)

    async with serve(handler, "127.0.0.1", 0, compression=None, ping_interval=None, close_timeout=1) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        yield f"ws://{host}:{port}"
    if failures:
        raise failures[0]


async def act_as_node(
    ws: ServerConnection, *, proto: int = PROTOCOL_VERSION, reply: Message | None = None, name: str = "fake-node"
) -> Hello:
    """The node's side of the handshake: challenge, read the hello (unchecked), answer
    ``reply`` (default welcome{admin: false})."""
    challenge = Challenge(name, os.urandom(NONCE_SIZE), proto, "6.6.6", FEATURES)
    await ws.send(encode_frame(OP, [challenge]))
    frame = decode_frame(await asyncio.wait_for(ws.recv(), timeout(5)), max_size=1 << 20, max_messages=1)
    hello = frame.messages[0]
    assert isinstance(hello, Hello), f"expected hello, got {hello}"
    await ws.send(encode_frame(OP, [reply or Welcome(False)]))
    return hello


async def next_message(ws: ServerConnection, pred: Callable[[Message], bool], units: float = 5) -> Message:
    """The next message from the client on ``ws`` for which ``pred`` holds (others skipped)."""
    deadline = time.monotonic() + timeout(units)
    while True:
        data = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
        assert isinstance(data, bytes)
        for message in decode_frame(data, max_size=RAW_MAX_SIZE, max_messages=10**6).messages:
            if pred(message):
                return message


# -- well-behaved traffic -----------------------------------------------------------------


@dataclass
class Probe:
    """Two well-behaved clients: ``writer`` writes to a shared (unsafeAllowAll) map, ``reader``
    follows it through the node. :meth:`round_trip` is one write seen by the other side."""

    writer: Synced
    reader: Synced
    map_id: CoValueID
    latencies: list[float] = field(default_factory=list)
    _n: int = 0

    async def round_trip(self, units: float = 2) -> float:
        """Write a new value and wait until the reader has it; the latency in seconds."""
        self._n += 1
        value = self._n
        start = time.perf_counter()
        self.writer.node.set(self.map_id, "probe", value)

        def arrived() -> bool:
            core = self.reader.node.get_or_none(self.map_id)
            return core is not None and core.comap().items().get("probe") == value

        await until(arrived, units, f"probe value {value} to reach the other client")
        elapsed = time.perf_counter() - start
        self.latencies.append(elapsed)
        return elapsed


@contextlib.asynccontextmanager
async def probing(url: str) -> AsyncIterator[Probe]:
    """A :class:`Probe` against the node at ``url`` that has completed one round trip."""
    async with syncing(url) as writer, syncing(url) as reader:
        core = writer.node.create_map(None)
        writer.node.set(core.id, "probe", 0)
        writer.node.flush()
        probe = Probe(writer, reader, core.id)
        follow(reader, core.id)
        await probe.round_trip(units=5)
        yield probe


def node_state(node: LocalNode, *, ignore: Iterable[CoValueID] = ()) -> dict[CoValueID, Any]:
    """Everything observable about ``node``'s CoValues (except ``ignore``): known states,
    deletion, and each session's transactions and checkpoints."""
    skip = set(ignore)
    state: dict[CoValueID, Any] = {}
    for cid in node.covalue_ids():
        if cid in skip:
            continue
        core = node.get(cid)
        state[cid] = (
            core.known_state(),
            core.deleted,
            {sid: (list(log.txs), dict(log.sigs)) for sid, log in core.sessions.items()},
        )
    return state
