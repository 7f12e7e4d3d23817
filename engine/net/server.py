"""The node's WebSocket server: challenge/hello authentication, limits, then sync.

Handshake (DESIGN §6): the node sends ``challenge{node, nonce, proto, version, features}``;
the peer answers ``hello{account, role, sig, version, features}`` where ``sig`` is the
account's signature of :func:`engine.protocol.messages.hello_message`; the node replies
``welcome{admin}`` or ``error{auth_failed}`` and closes with 4401. Tokens never travel in URLs.
What to answer is decided by :class:`engine.protocol.handshake.NodeHandshake` (sans-I/O);
this shell draws the nonce, moves the frames, keeps the per-account connection counts it
feeds to that decision (over the limit: 4409), logs forged hellos on ``kintsugi.security``,
and owns the clock: a connection that does not finish the handshake in time is closed with
4408.

Before the challenge, two caps bound what strangers can open (each connection costs node
memory whether or not it ever authenticates): at most ``max_connections`` connections in all
(:data:`~engine.protocol.limits.MAX_CONNECTIONS`; one more gets ``error{node_full}`` and close
1013, "try again later") and at most ``max_connections_per_address`` from one IP address
(:data:`~engine.protocol.limits.MAX_CONNECTIONS_PER_ADDRESS`; one more gets
``error{too_many_connections}`` and close 4409). Connections still in their handshake count.
Each refusal is logged at most once per :data:`REFUSAL_LOG_INTERVAL` seconds per cap, so a
flood does not flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections import Counter
from collections.abc import Iterable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine import __version__
from engine.ids import AccountID
from engine.net.connection import CLOSE_TIMEOUT, PeerConnection
from engine.net.shell import SyncShell
from engine.protocol.frames import OP, encode_frame
from engine.protocol.handshake import Authenticated, NodeHandshake, Refused
from engine.protocol.limits import (
    CLOSE_TRY_AGAIN_LATER,
    FEATURES,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    CloseCode,
)
from engine.protocol.messages import NONCE_SIZE, Error
from engine.sync.manager import PeerKind

logger = logging.getLogger(__name__)

#: Seconds between two log lines about connections refused by the same cap.
REFUSAL_LOG_INTERVAL = 60.0


class NodeServer:
    """Serves one LocalNode's CoValues to authenticated peers over WebSockets."""

    def __init__(
        self,
        shell: SyncShell,
        *,
        name: str | None = None,
        admins: Iterable[AccountID] = (),
        socket_send_buffer: int | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    ) -> None:
        """``socket_send_buffer`` fixes each accepted socket's kernel send buffer (SO_SNDBUF);
        None keeps the system's autotuning. A small one makes a peer that stops reading show
        up as lagged after kilobytes instead of megabytes (the embedded demo uses it).
        ``max_connections`` and ``max_connections_per_address`` are the caps of the module
        docstring."""
        self.shell = shell
        self.node = shell.node
        self.limits = shell.limits
        self.name = name or f"kintsugi-node-{self.node.account_id[5:13]}"
        self.admins = set(admins)
        self.socket_send_buffer = socket_send_buffer
        self._server: Server | None = None
        self._per_account: Counter[AccountID] = Counter()
        self.max_connections = max_connections
        self.max_connections_per_address = max_connections_per_address
        #: connections open now (handshakes in progress included), in all and by IP address
        self.open_connections = 0
        self._per_address: Counter[str] = Counter()
        #: connections refused by each cap so far ("node_full", "too_many_connections")
        self.refused: Counter[str] = Counter()
        self._refusal_logged: dict[str, float] = {}
        self._ids = itertools.count(1)
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen; returns the ``ws://`` URL (with the actual port when ``port`` is 0)."""
        self._server = await serve(
            self._handle,
            host,
            port,
            compression=None,
            max_size=2 * self.limits.max_frame_size,
            max_queue=16,
            ping_interval=self.limits.ping_interval,
            ping_timeout=self.limits.ping_timeout,
            close_timeout=2,
            open_timeout=self.limits.handshake_timeout,
        )
        sock_host, sock_port = next(iter(self._server.sockets)).getsockname()[:2]
        self.url = f"ws://{sock_host}:{sock_port}"
        logger.info("node %s listening on %s", self.name, self.url)
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            for conn in list(self.shell.connections.values()):
                if conn.peer_id.startswith("in:"):
                    conn.close(CloseCode.GOING_AWAY, "node shutting down")
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, ws: ServerConnection) -> None:
        address = _address_of(ws)
        refusal = self._over_cap(address)
        if refusal is not None:
            await self._refuse_at_cap(ws, address, *refusal)
            return
        self.open_connections += 1
        self._per_address[address] += 1
        try:
            await self._serve(ws)
        finally:
            self.open_connections -= 1
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def _over_cap(self, address: str) -> tuple[Error, int] | None:
        """The refusal (error, close code) for one more connection from ``address``; None
        when it is under both caps."""
        if self.open_connections >= self.max_connections:
            full = f"the node holds its maximum of {self.max_connections} connections"
            return Error("node_full", full), CLOSE_TRY_AGAIN_LATER
        if self._per_address[address] >= self.max_connections_per_address:
            crowded = f"at most {self.max_connections_per_address} connections per address"
            return Error("too_many_connections", crowded), CloseCode.TOO_MANY_CONNECTIONS
        return None

    async def _refuse_at_cap(self, ws: ServerConnection, address: str, error: Error, code: int) -> None:
        self.refused[error.code] += 1
        now = asyncio.get_running_loop().time()
        last = self._refusal_logged.get(error.code)
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            self._refusal_logged[error.code] = now
            logger.warning(
                "refusing connections (%s, last from %s): %s; %d refused so far",
                error.code,
                address,
                error.detail,
                self.refused[error.code],
            )
        try:
            await asyncio.wait_for(ws.send(encode_frame(OP, [error])), CLOSE_TIMEOUT)
            await asyncio.wait_for(ws.close(code, error.code), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionClosed):
            ws.transport.abort()

    async def _serve(self, ws: ServerConnection) -> None:
        if self.socket_send_buffer is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
        handshake = NodeHandshake(
            self.name,
            admins=self.admins | {self.node.account_id},
            limits=self.limits,
            version=__version__,
            features=FEATURES,
        )
        authenticated = await self._handshake(ws, handshake)
        if authenticated is None:
            return
        account = authenticated.account
        decision = handshake.admit(self._per_account[account])
        if isinstance(decision, Refused):
            await ws.send(decision.frame)
            await ws.close(decision.close_code, decision.reason)
            return
        peer_id = f"in:{next(self._ids)}:{account[:16]}"
        self._per_account[account] += 1
        conn = PeerConnection(ws, peer_id, self.limits)
        try:
            conn.send_frame(decision.frame)
            self.shell.attach(conn)
            self.shell.manager.add_peer(peer_id, PeerKind.DOWNSTREAM, account, admin=decision.admin)
            self.shell.dispatch()
            logger.info("peer %s connected (%s, admin=%s)", peer_id, authenticated.hello.role, decision.admin)
            await self.shell.read_loop(ws, conn, rate_limited=True)
        finally:
            self.shell.detach(peer_id)
            self._per_account[account] -= 1
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
            logger.info("peer %s disconnected (code %s)", peer_id, ws.close_code)

    async def _handshake(self, ws: ServerConnection, handshake: NodeHandshake) -> Authenticated | None:
        """Send the challenge and read the hello within the handshake timeout (else close
        4408); apply a refusal. None when the connection ends here."""
        challenge = handshake.challenge(os.urandom(NONCE_SIZE))
        try:
            await ws.send(encode_frame(OP, [challenge]))
            data = await asyncio.wait_for(ws.recv(), self.limits.handshake_timeout)
        except TimeoutError:
            await ws.close(CloseCode.HANDSHAKE_TIMEOUT, "handshake timeout")
            return None
        except ConnectionClosed:
            return None
        decision = handshake.receive(data if isinstance(data, bytes) else data.encode())
        if isinstance(decision, Refused):
            if decision.forged:
                logging.getLogger("kintsugi.security").warning("bad hello signature from %s", ws.remote_address)
            await self._refuse(ws, decision)
            return None
        return decision

    async def _refuse(self, ws: ServerConnection, refused: Refused) -> None:
        try:
            await asyncio.wait_for(ws.send(refused.frame), CLOSE_TIMEOUT)
            await asyncio.wait_for(ws.close(refused.close_code, refused.reason), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionClosed):
            ws.transport.abort()


def _address_of(ws: ServerConnection) -> str:
    """The remote IP address of ``ws`` (its host part only: many ports of one host are one
    address); ``"?"`` when the transport does not say."""
    remote = ws.remote_address
    if isinstance(remote, tuple) and remote:
        return str(remote[0])
    return "?"
