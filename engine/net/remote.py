"""One-shot remote operations for the CLI and the inspector: connect, ask, load, report.

:func:`inspect_remote` connects to a node as an ``inspector`` peer with an account key, asks
which CoValues and CAS namespaces that account may see (admins: all), loads them into an
in-memory replica and describes them in the same JSON shape as ``kintsugi inspect STORE``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from engine.crypto import AccountKey
from engine.diagnostics.report import describe_covalue
from engine.errors import KintsugiError, ProtocolError
from engine.ids import CoValueID
from engine.net.client import Backoff, SyncClient
from engine.net.shell import SyncShell
from engine.node import LocalNode
from engine.protocol.messages import Admin, AdminResult, Error, KvKeys, KvList, Message

#: Seconds a remote inspection may take before it gives up.
REMOTE_TIMEOUT = 60.0


class RemoteSession:
    """A connected in-memory replica that can send requests and await their replies."""

    def __init__(self, url: str, key: AccountKey) -> None:
        self.node = LocalNode(key, instance_id="inspector")
        self.shell = SyncShell(self.node)
        self.client = SyncClient(self.shell, url, key=key, role="inspector", backoff=Backoff(initial=0.2, cap=1.0))
        self._rids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self.shell.manager.on_reply = self._on_reply

    def _on_reply(self, _peer: str, message: Message) -> None:
        rid = getattr(message, "rid", None)
        future = self._waiting.pop(rid, None) if isinstance(rid, int) else None
        if future is not None and not future.done():
            future.set_result(message)

    @property
    def peer_id(self) -> str:
        upstream = [pid for pid in self.shell.connections if pid.startswith("out:")]
        if not upstream:
            raise ProtocolError("not connected", code="not_connected")
        return upstream[-1]

    async def open(self, timeout: float) -> None:
        task = self.client.start()
        waiter = asyncio.ensure_future(self.client.connected.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            error = self.client.last_error
            await self.close()
            if isinstance(error, KintsugiError):
                raise error
            raise ProtocolError(f"could not connect to {self.client.url}: {error}", code="connect_failed")

    async def request(self, message: Admin | KvList, timeout: float) -> Message:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[message.rid] = future
        self.shell.manager.send_to(self.peer_id, message)
        self.shell.dispatch()
        return await asyncio.wait_for(future, timeout)

    def next_rid(self) -> int:
        return next(self._rids)

    async def load_all(self, ids: list[CoValueID], timeout: float) -> None:
        """Load ``ids`` and wait until the node has answered each with its known state."""
        for cid in ids:
            self.shell.manager.load(cid)
        self.shell.dispatch()
        peer = self.shell.manager.peers[self.peer_id]
        deadline = asyncio.get_running_loop().time() + timeout
        while not all(cid in peer.known for cid in ids):
            if asyncio.get_running_loop().time() > deadline:
                missing = [cid for cid in ids if cid not in peer.known]
                raise ProtocolError(f"node did not answer for {len(missing)} CoValues", code="timeout")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.client.stop()
        self.shell.close()


async def inspect_remote(url: str, key: AccountKey, timeout: float = REMOTE_TIMEOUT) -> dict[str, Any]:
    session = RemoteSession(url, key)
    await session.open(timeout)
    try:
        listing = await session.request(Admin(session.next_rid(), "list"), timeout)
        if isinstance(listing, Error) or not isinstance(listing, AdminResult) or not listing.ok:
            raise ProtocolError("the node refused to list CoValues", code="admin_refused")
        ids = [CoValueID(c) for c in listing.result.get("covalues", [])]
        await session.load_all(ids, timeout)
        covalues = []
        for cid in sorted(ids):
            core = session.node.get_or_none(cid)
            if core is not None:
                covalues.append(describe_covalue(core))
        kv: list[dict[str, Any]] = []
        for namespace in listing.result.get("namespaces", []):
            reply = await session.request(KvList(session.next_rid(), namespace, ""), timeout)
            if isinstance(reply, KvKeys):
                kv += [{"namespace": namespace, **item} for item in reply.items]
        return {
            "covalues": covalues,
            "kv": kv,
            "node": session.client.challenge.node if session.client.challenge else None,
        }
    finally:
        await session.close()
