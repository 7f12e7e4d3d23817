"""Clients and node-to-node links: connect, authenticate, sync, reconnect with backoff.

Reconnect policy (DESIGN §6): wait 1 s after a failure, doubling up to 30 s; reset after a
connection that completed its handshake. Each failure logs a warning; from the 10th
consecutive failure on, an error.

The handshake's decisions (check the node's protocol version, sign its challenge, take its
welcome or refusal) are :class:`engine.protocol.handshake.PeerHandshake`'s; this shell moves
the frames and owns the handshake timeout. :class:`AuthFailed` is re-exported from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from engine import __version__
from engine.crypto import AccountKey
from engine.errors import AuthFailed, KintsugiError
from engine.net.connection import PeerConnection
from engine.net.shell import SyncShell
from engine.protocol.handshake import PeerHandshake
from engine.protocol.limits import CloseCode
from engine.protocol.messages import Challenge
from engine.sync.manager import PeerKind

__all__ = ["ESCALATE_AFTER_FAILURES", "AuthFailed", "Backoff", "SyncClient"]

logger = logging.getLogger(__name__)

#: Consecutive failures after which each further failure is logged as an error.
ESCALATE_AFTER_FAILURES = 10


#: What one connection attempt may fail with (a bad port in the URL is a ValueError).
CONNECT_FAILURES = (OSError, ValueError, InvalidHandshake, InvalidURI, ConnectionClosed, TimeoutError, KintsugiError)


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


class SyncClient:
    """Keeps one LocalNode synced with one upstream node. ``role`` is ``client`` or ``node``."""

    def __init__(
        self,
        shell: SyncShell,
        url: str,
        *,
        key: AccountKey | None = None,
        role: str = "client",
        backoff: Backoff | None = None,
    ) -> None:
        self.shell = shell
        self.url = url
        self.key = key or shell.node.account
        self.role = role
        self.backoff = backoff or Backoff()
        self.limits = shell.limits
        self.connected = asyncio.Event()
        self.challenge: Challenge | None = None
        self.admin = False
        self.connections = 0
        self.last_error: KintsugiError | Exception | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._conn: PeerConnection | None = None
        self._peer_seq = 0

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"kintsugi-client-{self.url}")
        return self._task

    async def stop(self) -> None:
        """Send what is queued, close the connection cleanly and stop reconnecting."""
        self._stopping = True
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
        """Connect, sync until the connection ends, and reconnect with backoff, until stopped."""
        while not self._stopping:
            try:
                await self.connect_once()
            except CONNECT_FAILURES as exc:
                self.last_error = exc
                if self._stopping:
                    break
                delay = self.backoff.next_delay()
                level = logging.ERROR if self.backoff.failures >= ESCALATE_AFTER_FAILURES else logging.WARNING
                logger.log(
                    level,
                    "connection to %s failed (%s: %s); retrying in %.0f s (failure %d)",
                    self.url,
                    type(exc).__name__,
                    exc,
                    delay,
                    self.backoff.failures,
                )
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                break
            delay = self.backoff.next_delay()
            logger.warning("connection to %s closed; reconnecting in %.0f s", self.url, delay)
            await asyncio.sleep(delay)

    async def connect_once(self) -> None:
        """One connection: handshake, bulk exchange, live sync until it closes."""
        async with connect(
            self.url,
            compression=None,
            max_size=2 * self.limits.max_frame_size,
            ping_interval=self.limits.ping_interval,
            ping_timeout=self.limits.ping_timeout,
            close_timeout=2,
            open_timeout=self.limits.handshake_timeout,
            proxy=None,
        ) as ws:
            self._ws = ws
            await self._handshake(ws)
            self.backoff.reset()
            self._peer_seq += 1
            peer_id = f"out:{self._peer_seq}:{self.url}"
            conn = PeerConnection(ws, peer_id, self.limits)
            self._conn = conn
            self.shell.attach(conn)
            self.connections += 1
            try:
                self.shell.manager.add_peer(peer_id, PeerKind.UPSTREAM, self.key.account_id)
                self.shell.dispatch()
                self.connected.set()
                logger.info("connected to %s as %s", self.url, self.key.account_id)
                await self.shell.read_loop(ws, conn, rate_limited=False)
            finally:
                self.connected.clear()
                self._conn = None
                self.shell.detach(peer_id)
                conn.close()
                with contextlib.suppress(Exception):
                    await conn.wait_closed()
                self._ws = None

    async def _handshake(self, ws: ClientConnection) -> None:
        """Answer the node's challenge and take its welcome, each within the handshake
        timeout. Raises what :meth:`PeerHandshake.receive` raises (the node refused, or broke
        the protocol) and ``TimeoutError``."""
        handshake = PeerHandshake(self.key, self.role, limits=self.limits, version=__version__)
        challenged = handshake.take_challenge(await self._recv(ws))
        self.challenge = challenged.challenge
        await ws.send(challenged.frame)
        self.admin = handshake.take_reply(await self._recv(ws)).admin

    async def _recv(self, ws: ClientConnection) -> bytes:
        data = await asyncio.wait_for(ws.recv(), self.limits.handshake_timeout)
        return data if isinstance(data, bytes) else data.encode()
