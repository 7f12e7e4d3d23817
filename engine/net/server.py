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
from engine.protocol.limits import FEATURES, CloseCode
from engine.protocol.messages import NONCE_SIZE
from engine.sync.manager import PeerKind

logger = logging.getLogger(__name__)


class NodeServer:
    """Serves one LocalNode's CoValues to authenticated peers over WebSockets."""

    def __init__(
        self,
        shell: SyncShell,
        *,
        name: str | None = None,
        admins: Iterable[AccountID] = (),
        socket_send_buffer: int | None = None,
    ) -> None:
        """``socket_send_buffer`` fixes each accepted socket's kernel send buffer (SO_SNDBUF);
        None keeps the system's autotuning. A small one makes a peer that stops reading show
        up as lagged after kilobytes instead of megabytes (the embedded demo uses it)."""
        self.shell = shell
        self.node = shell.node
        self.limits = shell.limits
        self.name = name or f"kintsugi-node-{self.node.account_id[5:13]}"
        self.admins = set(admins)
        self.socket_send_buffer = socket_send_buffer
        self._server: Server | None = None
        self._per_account: Counter[AccountID] = Counter()
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
