"""Worlds, readers and a recording relay for the ``kintsugi recover`` end-to-end tests
(tests/e2e/test_recover.py).

- :class:`World` is Alice's group and CoMap in an in-memory replica; stores and node stores
  are written from it (or from a copy that forked, went stale or was deleted) before the
  processes start, so each story holds exactly the sessions it needs.
- The readers (:func:`heads`, :func:`content`, :func:`rows`, :func:`all_set_values`) open a
  store read-only and never write to it.
- :func:`kintsugi` runs the real CLI in a subprocess (``--json``) and fails on a traceback.
- :class:`Relay` sits between a peer and a node over loopback WebSockets, records every
  message both ways, and can cut the connection or SIGKILL a process at a chosen page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine import __version__
from engine.crypto import AccountKey
from engine.ids import AccountID, CoValueID, SessionID, new_session_id
from engine.model.transaction import decode_transaction
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.protocol.frames import OP, decode_frame, encode_frame
from engine.protocol.handshake import PeerHandshake
from engine.protocol.limits import DEFAULT_LIMITS
from engine.protocol.messages import Content, Error, Message, RecoverOpen, RecoverPage
from engine.protocol.messages.recovery import RecoveryScope
from engine.storage import open_store
from engine.storage.sqlite.store import store_file
from tests.e2e.conftest import STEP_UNITS, Account, NodeProcess, Processes
from tests.engine._fork import copy_covalue, write_keys
from tests.util import run_cli, timeout

#: Units one ``kintsugi recover`` run may take.
RECOVER_UNITS = 60


#: Largest frame the relay passes (a recovery page fills up to the node's frame budget).
RELAY_MAX_FRAME = 2 * DEFAULT_LIMITS.max_frame_size


#: Bytes of each value in the CoValue that needs more than one recovery page.
BIG_VALUE = 1000


@dataclass
class World:
    """Alice's group (Bob a writer unless told otherwise) and CoMap, in Alice's in-memory
    replica ``origin``; stores and node stores are written from it."""

    processes: Processes
    alice: Account
    bob: Account
    eve: Account
    origin: LocalNode
    group: CoValueID
    doc: CoValueID

    def key(self, account: Account) -> AccountKey:
        return AccountKey.load(account.key)

    def store(self, name: str, account: Account, *, src: LocalNode | None = None) -> Path:
        """A store ``stores/<name>`` holding what ``src`` (default: the origin) holds of the
        doc and its group, opened and closed as ``account``."""
        path = self.processes.workdir / "stores" / name
        node = LocalNode.open(path, self.key(account))
        try:
            copy_covalue(src or self.origin, node, self.doc)
        finally:
            node.close()
        return path

    def node(self, label: str, *, src: LocalNode | None = None, key: Path | None = None) -> NodeProcess:
        """A running ``kintsugi node serve`` whose store holds what ``src`` holds of the doc."""
        path = self.processes.workdir / label
        writer = LocalNode.open(path, AccountKey.generate())
        try:
            copy_covalue(src or self.origin, writer, self.doc)
        finally:
            writer.close()
        return self.processes.node(label, key=key)

    def twin(self) -> LocalNode:
        """An in-memory copy of the origin writing in the origin's own session (a fork)."""
        twin = LocalNode(self.origin.account, None, session=self.origin.session)
        copy_covalue(self.origin, twin, self.doc)
        return twin


def make_world(processes: Processes, *, bob_role: str = "writer", common: int = 10) -> World:
    alice, bob, eve = (processes.account(n) for n in ("alice", "bob", "eve"))
    origin = LocalNode(AccountKey.load(alice.key))
    group = origin.create_group()
    origin.set_role(group.id, AccountID(bob.id), bob_role)
    doc = origin.create_map(group.id)
    write_keys(origin, doc.id, "common", common)
    return World(processes, alice, bob, eve, origin, group.id, doc.id)


def heads(store: Path, covalue: CoValueID) -> dict[str, tuple[int, str]]:
    """Signed count and head of every session of ``covalue`` as the store holds it."""
    opened = open_store(store, readonly=True)
    try:
        core = load_core(opened, covalue)
        assert core is not None, f"{store} lacks {covalue}"
        return {sid: (log.signed_count, log.head()[1].hex()) for sid, log in sorted(core.sessions.items())}
    finally:
        opened.close()


def content(store: Path, covalue: CoValueID, key: Account) -> dict[str, Any]:
    """The CoMap's content as a fresh replica on the store computes it (group loaded too)."""
    account = AccountKey.load(key.key)
    node = LocalNode(account, open_store(store, readonly=True), session=new_session_id(account.account_id))
    try:
        return node.get_map(covalue)
    finally:
        node.close()


def rows(store: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables`` (default: every table), read without writing anything."""
    conn = sqlite3.connect(f"file:{store_file(store)}?mode=ro", uri=True)
    try:
        names = tables or tuple(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in sorted(names)}
    finally:
        conn.close()


def all_set_values(store: Path) -> list[Any]:
    """The value of every ``set`` of every transaction the store holds, in any session."""
    opened = open_store(store, readonly=True)
    values = []
    try:
        for cid, _type, _deleted in opened.covalue_ids():
            core = load_core(opened, cid)
            assert core is not None
            for log in core.sessions.values():
                for tx in log.txs:
                    values += [c[2] for c in decode_transaction(tx).changes if c and c[0] == "set"]
    finally:
        opened.close()
    return values


def kintsugi(*args: str) -> tuple[int, dict[str, Any], str]:
    """Run the CLI with ``--json``: exit code, the JSON document (empty if none), stderr.
    No run may print a traceback."""
    ran = run_cli(*args, "--json", check=False, timeout_units=RECOVER_UNITS)
    assert "Traceback" not in ran.stderr, ran.stderr
    try:
        data = json.loads(ran.stdout) if ran.stdout.strip() else {}
    except json.JSONDecodeError:
        raise AssertionError(f"kintsugi {' '.join(args)} printed no JSON:\n{ran.stdout}\n{ran.stderr}") from None
    return ran.returncode, data, ran.stderr


def recover(action: str, store: Path | str, url: str, key: Account, *scope: str, yes: bool = True) -> tuple:
    args = ["recover", action, str(store), "--from", url, "--key", str(key.key), *scope]
    args += ["--timeout", str(timeout(STEP_UNITS))]
    if yes and action == "apply":
        args.append("--yes")
    return kintsugi(*args)


def verify(store: Path) -> int:
    return run_cli("verify", str(store), check=False).returncode


def audit_verify(store: Path) -> tuple[int, dict[str, Any]]:
    code, report, _ = kintsugi("audit", "verify", str(store))
    return code, report


class Relay:
    """A WebSocket relay on 127.0.0.1 between peers and the node at ``upstream``, in its own
    thread and loop. It records every message both ways (``log``: ``("up" | "down",
    message)``), and after forwarding each frame that holds a ``recover_page`` it calls
    ``on_page(pages so far)``; when that returns True the relay cuts both connections (a
    peer that goes away mid-exchange)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.log: list[tuple[str, Message]] = []
        self.pages = 0
        self.on_page: Callable[[int], bool] | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="relay", daemon=True)
        self.url = ""
        self._server: Server | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Relay:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout(5))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout(10))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout(5))
            self.loop.close()

    async def _start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=RELAY_MAX_FRAME)
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def messages(self, direction: str, kind: type[Message] | None = None) -> list[Any]:
        with self._lock:
            return [m for d, m in self.log if d == direction and (kind is None or isinstance(m, kind))]

    def _record(self, direction: str, data: bytes | str) -> list[Message]:
        raw = data if isinstance(data, bytes) else data.encode()
        try:
            messages = decode_frame(raw, max_size=RELAY_MAX_FRAME, max_messages=100_000).messages
        except Exception:  # a frame the relay cannot read is passed on all the same
            messages = []
        with self._lock:
            self.log += [(direction, m) for m in messages]
        return messages

    async def _handle(self, peer: ServerConnection) -> None:
        try:
            node = await connect(self.upstream, compression=None, max_size=RELAY_MAX_FRAME, open_timeout=timeout(5))
        except OSError:
            await peer.close(1011, "node unreachable")
            return
        cut = asyncio.Event()

        async def up() -> None:
            async for data in peer:
                self._record("up", data)
                await node.send(data)

        async def down() -> None:
            async for data in node:
                messages = self._record("down", data)
                await peer.send(data)
                if any(isinstance(m, RecoverPage) for m in messages):
                    self.pages += 1
                    hook = self.on_page
                    if hook is not None and await asyncio.to_thread(hook, self.pages):
                        cut.set()
                        return

        tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await node.close()
        await peer.close(1001 if cut.is_set() else 1000)


def restart(processes: Processes, node: NodeProcess) -> NodeProcess:
    """The same node (store and key) started again after it was killed (the killed one is
    no longer stopped at teardown: it is gone)."""
    node.reap()
    processes.nodes.remove(node)
    node.ready_file.unlink(missing_ok=True)
    again = NodeProcess(node.label, processes.workdir, key=node.key_file)
    processes.nodes.append(again)
    again.wait_ready()
    return again


def flip_byte(store: Path, covalue: CoValueID, part: str) -> None:
    """Flip one byte of the last stored transaction (the last byte of its ``blocks`` row) or
    of the last checkpoint signature of ``covalue``'s session in the database file."""
    conn = sqlite3.connect(store_file(store), isolation_level=None)
    try:
        (sid,) = conn.execute("SELECT sid FROM sessions WHERE covalue = ?", (covalue,)).fetchone()
        if part == "transaction":
            start, blob = conn.execute(
                "SELECT start, txs FROM blocks WHERE sid = ? ORDER BY start DESC LIMIT 1", (sid,)
            ).fetchone()
            changed = blob[:-1] + bytes([blob[-1] ^ 0x01])
            conn.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", (changed, sid, start))
        else:
            n, sig = conn.execute(
                "SELECT n, sig FROM signatures WHERE sid = ? ORDER BY n DESC LIMIT 1", (sid,)
            ).fetchone()
            changed = bytes([sig[0] ^ 0x01]) + sig[1:]
            conn.execute("UPDATE signatures SET sig = ? WHERE sid = ? AND n = ?", (changed, sid, n))
    finally:
        conn.close()


async def raw_recover_open(url: str, key: AccountKey, rid: int, xid: bytes, covalue: CoValueID) -> bytes:
    """Open one exchange over a bare WebSocket (the real handshake) and return the raw frame
    of the node's answer."""
    async with connect(url, compression=None, max_size=RELAY_MAX_FRAME, open_timeout=timeout(5)) as ws:
        handshake = PeerHandshake(key, "inspector", limits=DEFAULT_LIMITS, version=__version__)
        challenged = handshake.receive(await recv(ws))
        await ws.send(encode_frame(OP, [challenged.hello]))
        handshake.receive(await recv(ws))
        await ws.send(encode_frame(OP, [RecoverOpen(rid, xid, RecoveryScope(covalues=(covalue,)))]))
        while True:
            raw = await recv(ws)
            messages = decode_frame(raw, max_size=RELAY_MAX_FRAME, max_messages=100_000).messages
            if any(isinstance(m, RecoverPage | Error) for m in messages):
                return raw


async def recv(ws: ClientConnection) -> bytes:
    async with asyncio.timeout(timeout(STEP_UNITS)):
        data = await ws.recv()
    return data if isinstance(data, bytes) else data.encode()


def unknown_id_like(known: CoValueID) -> CoValueID:
    """The id of a CoMap nobody ever stored, of the same length as ``known``."""
    stranger = LocalNode(AccountKey.generate())
    while True:
        cid = stranger.create_map(None).id
        if len(cid) == len(known):
            return cid


def write_big(node: LocalNode, covalue: CoValueID, n: int, tag: str = "big") -> None:
    """``n`` sets of :data:`BIG_VALUE`-byte values: enough of them fill several recovery pages."""
    with node.batch():
        for i in range(n):
            node.set(covalue, f"{tag}{i % 500}", f"{tag}{i}".ljust(BIG_VALUE, "."))


def big_world(processes: Processes) -> tuple[World, Path]:
    """A doc of about 9 MB on the node (three pages or more); Bob's store holds its first
    ten transactions."""
    w = make_world(processes)
    store = w.store("bob", w.bob)
    write_big(w.origin, w.doc, 9_000)
    return w, store


def opened_xids(relay: Relay) -> list[bytes]:
    return [m.xid for m in relay.messages("up", RecoverOpen)]


def sent_transactions(relay: Relay, direction: str, covalue: CoValueID) -> int:
    return sum(len(c.txs) for m in relay.messages(direction, Content) if m.id == covalue for c in m.new.values())


def forked_world(processes: Processes) -> tuple[World, LocalNode, SessionID]:
    """Alice's session forked after 10 common transactions: the node's copy (the twin's)
    has three more batches of 3, written first; Alice's own copy has a batch of 4 of her
    own, written after them (so clocks alone cannot tell where her tail forked off)."""
    w = make_world(processes)
    twin = w.twin()
    for i in range(3):
        write_keys(twin, w.doc, f"theirs{i}", 3)
    write_keys(w.origin, w.doc, "mine", 4)
    return w, twin, w.origin.session


def node_heads(node: NodeProcess, covalue: CoValueID) -> dict[str, tuple[int, str]]:
    return heads(node.store, covalue)
