"""Clients and node-to-node links: connect, authenticate, sync, reconnect with backoff, and
move to another node when theirs goes away.

A client is given one node URL or several (the nodes of one cluster, say). It stays on the
node it is connected to for as long as that connection lasts, and only then tries the next
URL of its list (:class:`Rotation`): each URL at most once per *round*, with the reconnect
backoff between rounds. Whichever node it lands on, it starts with a fresh bulk exchange
(``load`` of everything it holds): it sends what that node lacks and receives what it lacks,
so a write that the lost node never acknowledged is not lost.

Reconnect policy (DESIGN §6): wait 1 s after a failed round, doubling up to 30 s; reset after
a connection that completed its handshake. With one URL a round is one try, as it always
was. Each failure logs a warning; from the 10th consecutive failure on, an error. A failure
that retrying the same node cannot fix (:data:`PERMANENT_FAILURES`: the node speaks another
protocol version, refuses the account, or is not a node the client was told to expect)
logs an error at once and moves on to the next URL like any other failure; that node is
tried again only in the next round, after the backoff delay, never in a tight loop.

The handshake's decisions (check the node's protocol version, sign its challenge, take its
welcome or refusal) are :class:`engine.protocol.handshake.PeerHandshake`'s; this shell moves
the frames, owns the handshake timeout and checks the node's name when it is pinned
(``expect_nodes``). The name a node announces in its challenge is not signed: pinning it
catches a URL that leads to another node than meant (a stale address, a node of another
cluster), not an impostor. :class:`AuthFailed` is re-exported from there.

What a status display needs (which node, which try, when the next one) is in
:meth:`SyncClient.state` and the :class:`Attempt` records, which listeners also get as each
try ends (:attr:`SyncClient.attempt_listeners`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from engine import __version__
from engine.crypto import AccountKey
from engine.errors import (
    AuthFailed,
    ConnectFailed,
    HandshakeClosed,
    HandshakeTimeout,
    HostNotFound,
    KintsugiError,
    NodeUnreachable,
    NotANode,
    UnsupportedVersion,
    UsageError,
    WrongNode,
)
from engine.net.connection import PeerConnection
from engine.net.shell import SyncShell
from engine.protocol.handshake import PeerHandshake
from engine.protocol.limits import CloseCode
from engine.protocol.messages import Challenge
from engine.sync.manager import PeerKind

__all__ = [
    "ESCALATE_AFTER_FAILURES",
    "MAX_ATTEMPTS_KEPT",
    "PERMANENT_FAILURES",
    "STABLE_CONNECTION",
    "Attempt",
    "AuthFailed",
    "Backoff",
    "ClientState",
    "Rotation",
    "SyncClient",
    "connect_error",
]

logger = logging.getLogger(__name__)

#: Consecutive failures after which each further failure is logged as an error.
ESCALATE_AFTER_FAILURES = 10
#: Seconds a connection must have lasted for its loss to start a new round, in which the
#: other nodes are tried at once. A shorter one counts in the round it began in, so nodes
#: that accept and close again at once are tried once per round, not in a tight loop.
STABLE_CONNECTION = 10.0
#: Connection tries :attr:`SyncClient.attempts` keeps (the newest).
MAX_ATTEMPTS_KEPT = 64

#: What one connection attempt may fail with (a bad port in the URL is a ValueError).
CONNECT_FAILURES = (OSError, ValueError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError, KintsugiError)
#: Failures that trying the same node again cannot fix, only a change there (or in this
#: client): logged as errors at once.
PERMANENT_FAILURES = (UnsupportedVersion, AuthFailed, WrongNode)


def connect_error(url: str, exc: BaseException, handshake_timeout: float = 0.0) -> KintsugiError:
    """The client's failure to connect to ``url`` as the typed error to raise (engine errors
    keep their codes). ``handshake_timeout``: the client's own limit, named when it is what
    ran out."""
    if isinstance(exc, KintsugiError):
        return exc
    if isinstance(exc, InvalidURI):
        return NotANode(url, f"{url} is not a WebSocket URL ({exc})")
    if isinstance(exc, InvalidHandshake):
        return NotANode(url, f"{url} did not accept a WebSocket connection ({exc})")
    if isinstance(exc, ConnectionClosed):
        received = exc.rcvd
        return HandshakeClosed(url, received.code if received else None, received.reason if received else "")
    if isinstance(exc, TimeoutError):
        return HandshakeTimeout(url, handshake_timeout)
    if isinstance(exc, socket.gaierror):
        return HostNotFound(url, f"cannot resolve the host name of {url} ({exc.strerror or exc})")
    if isinstance(exc, ValueError):
        return NotANode(url, f"{url} is not a node's URL ({exc})")
    if isinstance(exc, OSError):
        return NodeUnreachable(url, f"nothing accepts connections at {url} ({exc.strerror or exc})")
    return ConnectFailed(url, f"could not connect to {url}: {exc}")


@dataclass(slots=True)
class Backoff:
    """Reconnect delays: ``initial`` seconds, doubling to ``cap``; :meth:`reset` after success."""

    initial: float = 1.0
    cap: float = 30.0
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


class Rotation:
    """Which node URL a client tries next, and when a round ends (then the client waits its
    backoff delay). Pure: no clock and no I/O; times are ``time.monotonic()`` readings the
    caller passes.

    - A round tries each URL at most once. The first round starts at the first URL.
    - After a failed try: the next URL of the list, wrapping around.
    - After a connection ends: the next URL too, so another node comes first and the one
      that dropped comes last. If the connection lasted :data:`STABLE_CONNECTION` seconds or
      more, a new round starts with the dropped node counted as tried (the others are tried
      at once); a shorter one stays in the round it began in.
    - Nothing here ever leaves a live connection: the client asks for the next URL only
      when its connection has ended, so a node earlier in the list that comes back does not
      take the client away from the node it is on.

    ``urls`` must hold at least one URL; duplicates are dropped (the first one kept).
    """

    def __init__(self, urls: Sequence[str], *, stable_after: float = STABLE_CONNECTION) -> None:
        unique = tuple(dict.fromkeys(urls))
        if not unique:
            raise UsageError("a client needs at least one node URL")
        self.urls = unique
        self.stable_after = stable_after
        #: rounds begun (0 before the first try)
        self.rounds = 0
        self._index = 0
        self._tried: set[int] = set()
        self._connected_at: float | None = None

    @property
    def current(self) -> str:
        """The URL tried last (or to be tried first)."""
        return self.urls[self._index]

    def next(self) -> tuple[str, bool]:
        """The URL to try now, and whether a round ended first (True: wait the backoff
        delay before trying it). The first call starts the first round without a wait."""
        ended = len(self._tried) >= len(self.urls)
        if ended or self.rounds == 0:
            self._tried.clear()
            self.rounds += 1
        self._tried.add(self._index)
        return self.urls[self._index], ended

    def failed(self) -> None:
        """The try of :attr:`current` failed."""
        self._index = (self._index + 1) % len(self.urls)

    def connected(self, now: float) -> None:
        """The try of :attr:`current` completed its handshake at ``now``."""
        self._connected_at = now

    def closed(self, now: float) -> None:
        """The connection to :attr:`current` ended at ``now``."""
        started, self._connected_at = self._connected_at, None
        if started is not None and now - started >= self.stable_after:
            self._tried = {self._index}
        self._index = (self._index + 1) % len(self.urls)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One connection try. ``url``: the node tried; ``round``: the round it belonged to (1:
    the first); ``at_ms``: when it began (wall clock, ms since the epoch); ``error``: the
    code of the typed error it failed with (None: the handshake completed); ``permanent``:
    one of :data:`PERMANENT_FAILURES`."""

    url: str
    round: int
    at_ms: int
    error: str | None = None
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class ClientState:
    """Where a :class:`SyncClient` stands, for a status display.

    ``node``: the URL it is connected to (None: not connected). ``trying``: the URL a try is
    under way to (None: none). ``next_url`` and ``next_try``: while it waits between rounds,
    the URL it tries next and when (``time.monotonic()``; both None when not waiting).
    ``round``: rounds begun. ``failures``: consecutive failed tries since the last
    connection. ``attempts``: the latest tries, oldest first.
    """

    urls: tuple[str, ...]
    node: str | None
    trying: str | None
    next_url: str | None
    next_try: float | None
    round: int
    failures: int
    attempts: tuple[Attempt, ...]


class SyncClient:
    """Keeps one LocalNode synced with one upstream node at a time, chosen from ``url``: one
    node URL or several (tried in the order of :class:`Rotation`). ``role`` is ``client``,
    ``node`` or ``inspector``.

    ``expect_nodes``: when given, the node names this client accepts (the ``node`` of a
    node's challenge, ``kintsugi-node-…`` unless named otherwise); any other fails the try
    with :class:`~engine.errors.WrongNode` before a hello is signed for it.
    """

    def __init__(
        self,
        shell: SyncShell,
        url: str | Sequence[str],
        *,
        key: AccountKey | None = None,
        role: str = "client",
        backoff: Backoff | None = None,
        expect_nodes: Collection[str] = (),
    ) -> None:
        self.shell = shell
        self.rotation = Rotation([url] if isinstance(url, str) else url)
        #: the URL of the current (or last) try: the node this client is on while connected
        self.url = self.rotation.current
        self.key = key or shell.node.account
        self.role = role
        self.backoff = backoff or Backoff()
        self.expect_nodes = tuple(expect_nodes)
        self.limits = shell.limits
        self.connected = asyncio.Event()
        self.challenge: Challenge | None = None
        self.admin = False
        self.connections = 0
        #: consecutive failed tries since the last connection (over all URLs)
        self.failures = 0
        self.last_error: KintsugiError | Exception | None = None
        #: the latest tries, oldest first (at most MAX_ATTEMPTS_KEPT)
        self.attempts: deque[Attempt] = deque(maxlen=MAX_ATTEMPTS_KEPT)
        #: called with each try's record as the try ends (connected or failed)
        self.attempt_listeners: list[Callable[[Attempt], None]] = []
        self._trying: str | None = None
        self._started_ms = 0
        self._next: tuple[str, float] | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._conn: PeerConnection | None = None
        self._peer_seq = 0

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node URL this client may use, in the order given."""
        return self.rotation.urls

    @property
    def node_url(self) -> str | None:
        """The URL of the node this client is connected to (None: not connected)."""
        return self.url if self.connected.is_set() else None

    def state(self) -> ClientState:
        """A snapshot of :class:`ClientState`."""
        waiting = self._next
        return ClientState(
            urls=self.urls,
            node=self.node_url,
            trying=self._trying,
            next_url=waiting[0] if waiting else None,
            next_try=waiting[1] if waiting else None,
            round=self.rotation.rounds,
            failures=self.failures,
            attempts=tuple(self.attempts),
        )

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"kintsugi-client-{self.url}")
        return self._task

    async def stop(self) -> None:
        """Send what is queued, close the connection cleanly and stop reconnecting."""
        self._stopping = True
        self._stop_requested.set()
        if self._conn is not None:
            await self.shell.settle()
            self._conn.close(CloseCode.NORMAL, "client stopping")
            await self._conn.wait_closed()
        elif self._ws is not None:
            await self._ws.close(CloseCode.NORMAL, "client stopping")
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, self.limits.handshake_timeout)

    async def run(self) -> None:
        """Connect, sync until the connection ends, and move on to the next URL (waiting the
        backoff delay after each round of failures), until stopped."""
        url, delay = self._plan()
        while not self._stopping:
            if delay and not await self._wait(url, delay):
                break
            self.url = url
            try:
                await self.connect_once()
            except CONNECT_FAILURES as exc:
                self._failed(url, exc)
                if self._stopping:
                    break
                url, delay = self._plan()
                level = logging.WARNING
                if self.failures >= ESCALATE_AFTER_FAILURES or isinstance(exc, PERMANENT_FAILURES):
                    level = logging.ERROR
                logger.log(
                    level,
                    "connection to %s failed (%s: %s); %s (failure %d)",
                    self.url,
                    type(exc).__name__,
                    exc,
                    self._then(url, delay),
                    self.failures,
                )
                continue
            if self._stopping:
                break
            self.rotation.closed(time.monotonic())
            closed = self.url
            url, delay = self._plan()
            logger.warning("connection to %s closed; %s", closed, self._then(url, delay, reconnect=True))

    def _plan(self) -> tuple[str, float]:
        """The next URL to try and the seconds to wait first (the backoff's, after a round)."""
        url, round_ended = self.rotation.next()
        return url, self.backoff.next_delay() if round_ended else 0.0

    def _then(self, url: str, delay: float, *, reconnect: bool = False) -> str:
        if len(self.urls) == 1:
            return f"{'reconnecting' if reconnect else 'retrying'} in {delay:g} s"
        return f"trying {url} now" if delay == 0 else f"trying {url} in {delay:g} s"

    async def _wait(self, url: str, delay: float) -> bool:
        """Wait ``delay`` seconds before trying ``url``; False when stopped meanwhile."""
        self._next = (url, time.monotonic() + delay)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), delay)
        finally:
            self._next = None
        return not self._stopping

    def _record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        for listener in list(self.attempt_listeners):
            listener(attempt)

    def _failed(self, url: str, exc: Exception) -> None:
        error = connect_error(url, exc, self.limits.handshake_timeout)
        self.last_error = exc
        self.failures += 1
        self.rotation.failed()
        permanent = isinstance(exc, PERMANENT_FAILURES)
        self._record(Attempt(url, self.rotation.rounds, self._started_ms, error.code, permanent))

    async def connect_once(self) -> None:
        """One connection to :attr:`url`: handshake, bulk exchange, live sync until it closes."""
        url = self.url
        started = self._started_ms = _now_ms()
        self._trying = url
        try:
            async with connect(
                url,
                compression=None,
                max_size=2 * self.limits.max_frame_size,
                ping_interval=self.limits.ping_interval,
                ping_timeout=self.limits.ping_timeout,
                close_timeout=2,
                open_timeout=self.limits.handshake_timeout,
                proxy=None,
            ) as ws:
                self._ws = ws
                await self._handshake(ws, url)
                self._trying = None
                await self._sync(ws, url, started)
        finally:
            self._trying = None
            self._ws = None

    async def _sync(self, ws: ClientConnection, url: str, started: int) -> None:
        """The connection completed its handshake: sync over it until it closes."""
        self.backoff.reset()
        self.failures = 0
        self.rotation.connected(time.monotonic())
        self._record(Attempt(url, self.rotation.rounds, started))
        self._peer_seq += 1
        peer_id = f"out:{self._peer_seq}:{url}"
        conn = PeerConnection(ws, peer_id, self.limits)
        self._conn = conn
        self.shell.attach(conn)
        self.connections += 1
        try:
            self.shell.manager.add_peer(peer_id, PeerKind.UPSTREAM, self.key.account_id)
            self.shell.dispatch()
            self.connected.set()
            logger.info("connected to %s as %s", url, self.key.account_id)
            await self.shell.read_loop(ws, conn, rate_limited=False)
        finally:
            self.connected.clear()
            self._conn = None
            self.shell.detach(peer_id)
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()

    async def _handshake(self, ws: ClientConnection, url: str) -> None:
        """Answer the node's challenge and take its welcome, each within the handshake
        timeout. Raises what :meth:`PeerHandshake.receive` raises (the node refused, or broke
        the protocol), :class:`WrongNode` (a node not in ``expect_nodes``: no hello is sent)
        and ``TimeoutError``."""
        handshake = PeerHandshake(self.key, self.role, limits=self.limits, version=__version__)
        challenged = handshake.take_challenge(await self._recv(ws))
        node = challenged.challenge.node
        if self.expect_nodes and node not in self.expect_nodes:
            raise WrongNode(url, self.expect_nodes, node)
        self.challenge = challenged.challenge
        await ws.send(challenged.frame)
        self.admin = handshake.take_reply(await self._recv(ws)).admin

    async def _recv(self, ws: ClientConnection) -> bytes:
        data = await asyncio.wait_for(ws.recv(), self.limits.handshake_timeout)
        return data if isinstance(data, bytes) else data.encode()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
