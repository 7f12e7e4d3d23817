"""A remote node over ``ws://``, seen through an in-memory replica: ``kintsugi-inspector
ws://HOST:PORT --key FILE``.

:meth:`RemoteTarget.open` loads the operator's account key, connects as an ``inspector`` peer
(:class:`~engine.net.remote.RemoteSession`: challenge, signed hello, welcome), asks the node
which CoValues and CAS namespaces this account may see (``admin{list}``; admins see all),
loads them all into the replica and lists the namespaces' slots (``kv_list``). From then on
the target is a :class:`~inspector.targets.node.NodeTarget` over the replica's
:class:`~engine.node.LocalNode`: the node pushes every change of a loaded CoValue, the
replica notifies, and the inspector's throttled update path does the rest. What the node does
not push is fetched by :meth:`RemoteTarget.poll`, which the inspector calls every second: the
peers (``admin{peers}``, admins only), CoValues created since (a fresh ``list``, then a
``load`` of each new one) and the CAS slots. The replica keeps reconnecting by itself if the
connection drops (:class:`~engine.net.client.SyncClient`).

Failures to open are messages, never tracebacks: the client's first failure is final here
(a person is waiting; the connect dialog is the retry button). Codes: ``key_file``,
``connection_refused``, ``not_a_node`` (no WebSocket or no Kintsugi handshake there),
``auth_failed`` (the node did not accept the account), ``unsupported_version``, ``timeout``
(no handshake, or no answer to ``list``/``load``, within the timeout), ``admin_refused``.

What the wire does not carry, this target does not show: CAS values and histories stay on the
node (slots show key, generation and state), and the node's peer log is not sent (the peers
table is).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from engine.crypto import AccountKey
from engine.diagnostics.kv_slots import SlotRow
from engine.diagnostics.peers import PeerInfo
from engine.errors import KintsugiError, ProtocolError
from engine.ids import CoValueID
from engine.kv.store import CASRecord
from engine.net.remote import RemoteSession
from engine.net.shell import PeerLogEntry
from engine.protocol.messages import Admin, AdminResult, KvKeys, KvList, Message
from inspector.targets.base import NodeInfo, TargetSpec, TargetUnavailable
from inspector.targets.node import NodeTarget
from inspector.workers import WorkerPool

__all__ = ["CONNECT_TIMEOUT", "REQUEST_TIMEOUT", "RemoteTarget"]

logger = logging.getLogger(__name__)

#: Seconds to complete the connection and handshake before giving up (``timeout``).
CONNECT_TIMEOUT = 10.0
#: Seconds one request (``list``, ``peers``, ``kv_list``) may wait for its answer.
REQUEST_TIMEOUT = 10.0
#: Seconds loading every listed CoValue may take.
LOAD_TIMEOUT = 60.0
#: Seconds between two looks at the connecting client.
CONNECT_POLL = 0.02

_PEER_FIELDS = {f.name: f for f in dataclasses.fields(PeerInfo)}


def peer_info(row: dict[str, Any]) -> PeerInfo:
    """A ``peers`` row from the wire; fields this build does not know are ignored, missing
    ones take a neutral value (another node version may send other fields)."""
    values: dict[str, Any] = {}
    for name, spec in _PEER_FIELDS.items():
        default: Any = 0 if spec.type in ("int", int) else False if spec.type in ("bool", bool) else ""
        values[name] = row.get(name, default)
    return PeerInfo(**values)


def connect_error(url: str, exc: Exception) -> Exception:
    """The client's failure as the error to show (engine errors keep their codes)."""
    if isinstance(exc, KintsugiError):
        return exc
    if isinstance(exc, InvalidURI):
        return TargetUnavailable("not_a_node", f"{url} is not a WebSocket URL ({exc})")
    if isinstance(exc, InvalidHandshake):
        return TargetUnavailable("not_a_node", f"{url} did not accept a WebSocket connection ({exc})")
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else None
        return TargetUnavailable("not_a_node", f"{url} closed the connection during the handshake (code {code})")
    if isinstance(exc, TimeoutError):
        return TargetUnavailable("timeout", f"{url} did not complete the handshake in time")
    if isinstance(exc, OSError):
        return TargetUnavailable("connection_refused", f"nothing accepts connections at {url} ({exc.strerror or exc})")
    return exc


class RemoteTarget(NodeTarget):
    """``timeout``: seconds for the connection and handshake (:data:`CONNECT_TIMEOUT`)."""

    #: CAS values stay on the node: slots are listed without them
    kv_values = False

    def __init__(self, spec: TargetSpec, pool: WorkerPool, *, timeout: float = CONNECT_TIMEOUT) -> None:
        super().__init__(spec, pool, owns_node=False)
        self.timeout = timeout
        self.session: RemoteSession | None = None
        self._peers: list[PeerInfo] | None = None
        self._peers_note = "Peers are read once connected."
        self._kv: dict[str, list[SlotRow]] = {}
        self._listed: set[CoValueID] = set()

    @property
    def url(self) -> str:
        return self.spec.location

    @property
    def connected(self) -> bool:
        return self.session is not None and self.session.client.connected.is_set()

    # -- opening -----------------------------------------------------------------------------

    async def open(self) -> None:
        if not self.spec.key_file:
            raise TargetUnavailable("key_file", "connecting to a node needs your account key file (--key FILE)")
        key = AccountKey.load(self.spec.key_file)
        session = RemoteSession(self.url, key)
        self.session = session
        self.shell = session.shell
        self.listen()
        try:
            await self._connect(session)
            challenge = session.client.challenge
            assert challenge is not None  # set before the client counts as connected
            self.node_info = NodeInfo(
                challenge.node, challenge.version, challenge.proto, challenge.features, self.url, session.client.admin
            )
            ids, namespaces = await self._list()
            try:
                await session.load_all(ids, LOAD_TIMEOUT)
            except KeyError:  # the connection dropped while loading
                raise TargetUnavailable("timeout", f"{self.url} closed the connection while loading") from None
            self._listed = set(ids)
            self.node = session.node
            await self._read_kv(namespaces)
            await super().open()
            await self._read_peers()
        except BaseException:
            await self.close()
            raise

    async def _connect(self, session: RemoteSession) -> None:
        client = session.client
        client.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while not client.connected.is_set():
            if client.last_error is not None:
                raise connect_error(self.url, client.last_error)
            if loop.time() > deadline:
                detail = f"{self.url} did not complete the handshake within {self.timeout:g} s"
                raise TargetUnavailable("timeout", detail)
            await asyncio.sleep(CONNECT_POLL)

    async def _request(self, message: Admin | KvList) -> Message:
        session = self.session
        if session is None:
            raise ProtocolError("not connected", code="not_connected")
        try:
            return await session.request(message, REQUEST_TIMEOUT)
        except TimeoutError:
            raise TargetUnavailable("timeout", f"{self.url} did not answer {message.T} in time") from None

    async def _list(self) -> tuple[list[CoValueID], list[str]]:
        assert self.session is not None
        reply = await self._request(Admin(self.session.next_rid(), "list"))
        if not isinstance(reply, AdminResult) or not reply.ok:
            raise TargetUnavailable("admin_refused", f"{self.url} answered {reply}")
        ids = sorted(CoValueID(c) for c in reply.result.get("covalues", []))
        return ids, [str(n) for n in reply.result.get("namespaces", [])]

    async def _read_kv(self, namespaces: list[str]) -> None:
        assert self.session is not None
        kv: dict[str, list[SlotRow]] = {}
        for namespace in namespaces:
            reply = await self._request(KvList(self.session.next_rid(), namespace, ""))
            if isinstance(reply, KvKeys):
                kv[namespace] = [
                    SlotRow(namespace, str(i.get("key", "")), int(i.get("generation", 0)), i.get("state") == "present")
                    for i in reply.items
                ]
        self._kv = kv

    async def _read_peers(self) -> None:
        assert self.session is not None
        reply = await self._request(Admin(self.session.next_rid(), "peers"))
        if isinstance(reply, AdminResult) and reply.ok:
            self._peers = [peer_info(row) for row in reply.result.get("peers", []) if isinstance(row, dict)]
        else:
            self._peers = None
            info = self.node_info
            who = f"{info.name}" if info is not None else self.url
            self._peers_note = f"Only admin accounts see the peers of {who}; this key's account is not one."

    # -- live --------------------------------------------------------------------------------

    async def poll(self) -> None:
        if not self.connected or self.node is None or self.session is None:
            return
        try:
            if self.node_info is not None and self.node_info.admin:
                await self._read_peers()
            ids, namespaces = await self._list()
            new = [cid for cid in ids if cid not in self._listed]
            if new:
                # Loaded like the first ones; the replica notifies as each arrives, and the
                # inspector's update path adds the rows.
                for cid in new:
                    self.session.shell.manager.load(cid)
                self.session.shell.dispatch()
                self._listed.update(new)
            await self._read_kv(namespaces)
        except (KintsugiError, TargetUnavailable, KeyError) as exc:
            logger.info("polling %s failed: %s", self.url, exc)

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        await super().close()
        session, self.session = self.session, None
        if session is not None:
            await session.close()
            with contextlib.suppress(KintsugiError):
                session.node.close()

    # -- what the node shows over the wire ---------------------------------------------------

    def kv_namespaces(self) -> list[str]:
        return sorted(self._kv)

    def kv_slots(self, namespace: str) -> list[SlotRow]:
        return list(self._kv.get(namespace, []))

    def kv_history(self, namespace: str, key: str) -> list[CASRecord]:
        return []

    def peers(self) -> list[PeerInfo] | None:
        return None if self._peers is None else list(self._peers)

    def peer_log(self) -> list[PeerLogEntry] | None:
        return None

    def peers_note(self) -> str:
        if self._peers is None:
            return self._peers_note
        return "The node does not send its peer log over the wire: connections and lagged closes show in its own log."
