"""The embedded default of the inspector: a live in-process node with the demo's clients.

:class:`EmbeddedDemo` starts a node (its own store in a working directory) on 127.0.0.1,
plays the demo story against it over real WebSockets — a group with members, CoMaps with
edits, two tabs forking one session, a client SIGKILLed after the node acknowledged what it
never persisted, a deleted CoValue — fills contended CAS slots in the node's store, gives its
replica something to recover (:mod:`engine.demo.repairs`: a corrupt ledger and a stale release,
whose good copies a second in-process node, the *origin*, serves), and then keeps going:
Alice and Bob keep editing, and a peer that stopped reading is closed as lagged and comes
back, again and again. The inspector embeds the node (``demo.node``); an admin key
for connecting from outside is in ``demo.admin_key``; it is an admin of the origin too, and
saved as ``demo.operator_key_file`` for recovering from it (``demo.report["recovery"]`` names
the origin's URL and the two damaged CoValues).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from engine import __version__
from engine.crypto import AccountKey
from engine.demo.live import LiveClient, run_live_demo
from engine.demo.repairs import RecoverySeed, make_seed, write_seed
from engine.demo.scenario import contend_slots
from engine.ids import CoValueID
from engine.model.known_state import KnownState
from engine.net.connection import CLOSE_TIMEOUT
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, encode_frame
from engine.protocol.handshake import PeerHandshake
from engine.protocol.limits import Limits
from engine.protocol.messages import Load
from engine.storage.opener import open_store

logger = logging.getLogger(__name__)

#: Seconds between the live clients' edits.
EDIT_INTERVAL = 0.5
#: The embedded node's limits: a small outgoing queue and a short lag timeout, so the stalled
#: peer is seen lagging within seconds.
EMBEDDED_LIMITS = Limits(max_queue_frames=16, max_queue_bytes=256 * 1024, lag_timeout=3.0)
#: Kernel send buffer of the embedded node's sockets: small, so lag shows within seconds.
SOCKET_SEND_BUFFER = 32 * 1024
#: Transactions in the "telemetry" CoMap the stalled peer asks for and never reads.
TELEMETRY_TRANSACTIONS = 20_000
#: Telemetry transactions written per loop turn (a few milliseconds each).
TELEMETRY_BATCH = 250
#: Seconds the stalled peer waits before it reconnects after being closed.
STALL_RETRY = 3.0
#: Seconds the stalled peer stays connected without reading: past the node's lag timeout and
#: its close timeout, so the node has closed it as lagged by then.
STALL_HOLD = EMBEDDED_LIMITS.lag_timeout + 2 * CLOSE_TIMEOUT + 1.0


class EmbeddedDemo:
    def __init__(self, workdir: Path, *, edit_interval: float = EDIT_INTERVAL) -> None:
        self.workdir = workdir
        self.edit_interval = edit_interval
        self.node_key = AccountKey.generate()
        self.admin_key = AccountKey.generate()
        #: the node's store directory (the demo's tabs open it too, to contend for CAS slots)
        self.store_dir = workdir / "node"
        self.node = LocalNode.open(self.store_dir, self.node_key, instance_id="embedded-node", background_commits=True)
        self.shell = SyncShell(self.node, limits=EMBEDDED_LIMITS)
        self.server = NodeServer(
            self.shell, name="embedded-demo", admins=[self.admin_key.account_id], socket_send_buffer=SOCKET_SEND_BUFFER
        )
        self.url = ""
        self.report: dict[str, Any] = {}
        self.clients: list[LiveClient] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.stalls = 0
        #: the origin: a second node holding the good copies of what the node holds damaged
        self.origin_key = AccountKey.generate()
        self.origin: LocalNode | None = None
        self.origin_shell: SyncShell | None = None
        self.origin_server: NodeServer | None = None
        self.origin_url = ""
        #: ``admin_key`` saved, for recovering the node from the origin
        self.operator_key_file = workdir / "keys" / "operator.key"

    async def start(self) -> None:
        """Listen, play the story, then start the live edits and the stalled peer."""
        self.url = await self.server.start("127.0.0.1", 0)
        self.report = await run_live_demo(self.url, self.workdir / "clients", edits=300)
        # Some forty CAS commits, each synced: on a thread, so the shared loop keeps running.
        await asyncio.to_thread(contend_slots, self.store_dir, self.node.account_id)
        keys = self.workdir / "clients" / "keys"
        await self._start_origin(keys / "bob.key")
        alice = LiveClient("alice-live", AccountKey.load(keys / "alice.key"), self.url)
        bob = LiveClient("bob-live", AccountKey.load(keys / "bob.key"), self.url)
        for client in (alice, bob):
            await client.start()
            for cid in self.report["maps"].values():
                await client.load(CoValueID(cid))
        self.clients = [alice, bob]
        telemetry = alice.node.create_map(CoValueID(self.report["group"]), meta={"name": "telemetry"})
        for start in range(0, TELEMETRY_TRANSACTIONS, TELEMETRY_BATCH):
            with alice.node.batch():
                for i in range(start, min(start + TELEMETRY_BATCH, TELEMETRY_TRANSACTIONS)):
                    alice.node.set(telemetry.id, f"sample-{i % 500}", i)
            await asyncio.sleep(0)  # let the window breathe between batches
        await alice.acked(telemetry.id)
        self.report["maps"]["telemetry"] = telemetry.id
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._edit_forever(alice, "todo"), name="demo-alice"),
            loop.create_task(self._edit_forever(bob, "notes"), name="demo-bob"),
            loop.create_task(
                self._stall_forever(keys / "carol.key", [telemetry.id, CoValueID(self.report["maps"]["todo"])]),
                name="demo-stalled-peer",
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self.clients:
            await client.stop()
        await self.server.close()
        self.shell.close()
        await self.node.aclose()
        if self.origin_server is not None:
            await self.origin_server.close()
        if self.origin_shell is not None:
            self.origin_shell.close()
        if self.origin is not None:
            await self.origin.aclose()

    def _open_origin(self, seed: RecoverySeed) -> LocalNode:
        """The origin's node, over a new store holding the good copies."""
        origin_dir = self.workdir / "origin"
        origin_store = open_store(origin_dir)
        try:
            write_seed(origin_store, seed, seed.good)
        finally:
            origin_store.close()
        return LocalNode.open(origin_dir, self.origin_key, instance_id="embedded-origin")

    async def _start_origin(self, writer_key: Path) -> None:
        """Write the damaged copies into the node's store and the good ones into the
        origin's, and serve the origin on 127.0.0.1 (``admin_key`` is its admin)."""
        await self.node.durable()
        store = self.node.store
        assert store is not None
        seed = make_seed(self.node, CoValueID(self.report["group"]), AccountKey.load(writer_key))
        write_seed(store, seed, seed.damaged)
        # Creating a store takes tens of milliseconds: on a thread, so the shared loop runs on.
        self.origin = await asyncio.to_thread(self._open_origin, seed)
        self.origin_shell = SyncShell(self.origin)
        self.origin_server = NodeServer(self.origin_shell, name="embedded-origin", admins=[self.admin_key.account_id])
        self.origin_url = await self.origin_server.start("127.0.0.1", 0)
        self.operator_key_file.parent.mkdir(parents=True, exist_ok=True)
        self.admin_key.save(self.operator_key_file)
        self.report["recovery"] = {
            **seed.to_json(),
            "origin": self.origin_url,
            "operator_key": str(self.operator_key_file),
        }

    async def _edit_forever(self, client: LiveClient, which: str) -> None:
        rng = random.Random(which)
        cid = CoValueID(self.report["maps"][which])
        n = 0
        while True:
            await asyncio.sleep(self.edit_interval)
            n += 1
            client.node.set(cid, f"live-{rng.randrange(20)}", {"by": client.name, "n": n})

    async def _stall_forever(self, key_file: Path, covalues: list[CoValueID]) -> None:
        """A peer that asks for a large CoValue and one that keeps changing, and never reads:
        the node closes it as lagged; it comes back a little later."""
        key = AccountKey.load(key_file)
        while True:
            with contextlib.suppress(OSError, asyncio.TimeoutError, Exception):
                await self._stall_once(key, covalues)
            self.stalls += 1
            await asyncio.sleep(STALL_RETRY)

    async def _stall_once(self, key: AccountKey, covalues: list[CoValueID]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = self.url.removeprefix("ws://").rsplit(":", 1)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        async with connect(self.url, sock=sock, compression=None, max_size=None, proxy=None, close_timeout=0.5) as ws:
            handshake = PeerHandshake(key, "client", limits=EMBEDDED_LIMITS, version=__version__)
            await ws.send(handshake.take_challenge(await ws.recv(decode=False)).frame)
            handshake.take_reply(await ws.recv(decode=False))
            await ws.send(encode_frame(OP, [Load(cid, KnownState(cid, False, {})) for cid in covalues][:1]))
            for cid in covalues[1:]:
                await ws.send(encode_frame(OP, [Load(cid, KnownState(cid, False, {}))]))
            # Never read again: not even the WebSocket library's own reader, which would
            # otherwise take in up to its queue's worth of frames. The kernel's buffers fill,
            # the node's sends stall, and it closes this peer as lagged.
            ws.transport.pause_reading()
            await asyncio.sleep(STALL_HOLD)
            ws.transport.abort()
