"""A remote node over ``ws://``, seen through an in-memory replica: ``kintsugi-inspector
ws://HOST:PORT --key FILE``.

:meth:`RemoteTarget.open` loads the operator's account key, connects as an ``inspector`` peer
(:class:`~engine.net.remote.RemoteSession`: challenge, signed hello, welcome), asks the node
which CoValues and CAS namespaces this account may see (``admin{list}``; admins see all),
loads them all into the replica, lists the namespaces' slots (``kv_list``, page after page
while the node says ``more``) and reads each
slot's value and CAS history (``admin{kv_slot}``). From then on the target is a
:class:`~inspector.targets.node.NodeTarget` over the replica's
:class:`~engine.node.LocalNode`: the node pushes every change of a loaded CoValue, the
replica notifies, and the inspector's throttled update path does the rest. What the node does
not push is fetched by :meth:`RemoteTarget.poll`, which the inspector calls every second: the
peers and the node's peer log (``admin{peers}``) with the peers × sessions matrix
(``admin{matrix}``), the node's own sync events after the last
one read (``admin{events}``, a cursor), the cluster of nodes sharing its store
(``admin{cluster}``, with the peers), CoValues created since (a fresh ``list``, then a
``load`` of each new one) and the CAS slots — a slot's value and history again when its
generation changed, and every poll for the few slots whose history was last looked at
(:data:`FOLLOWED_SLOTS`), so lost races, which leave the generation alone, show too. The
replica keeps reconnecting by itself if the connection drops
(:class:`~engine.net.client.SyncClient`).

Peers, the peer log and the node's events are for admin accounts; another account sees its
own CAS slots (values and histories included) and no peers.

A node older than ``kv_slot``, ``events``, ``matrix`` and the peer log does not announce them
(features ``admin_kv_slot``, ``admin_events``, ``admin_matrix``, ``admin_peer_log``) and is
not asked; should a node that
announces them not answer, the target waits :data:`REQUEST_TIMEOUT` for the first of each
(one request, so the node never counts many bad messages). Either way it then shows what the
node sends — slots without values (``kv_values`` False), peers without a log, no node events.

The node's events go into the target's recorder (origin ``node``), next to those of the
replica's own sync manager, so a fork the node detected between itself and one of its
clients puts the ``forked`` badge on the CoValue, with the node's time.

Failures to open are messages, never tracebacks: the client's first failure is final here
(a person is waiting; the connect dialog is the retry button). Codes: ``key_file``,
``connection_refused``, ``not_a_node`` (no WebSocket or no Kintsugi handshake there),
``handshake_closed`` (the node closed during the handshake without an error message),
``auth_failed`` (the node did not accept the account), ``unsupported_version``, ``timeout``
(no handshake, or no answer to ``list``/``load``, within the timeout), ``admin_refused``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from engine.crypto import AccountKey
from engine.diagnostics.matrix import PeersSessionsMatrix, matrix_from_json
from engine.errors import AdminRefused, InvalidInput, KintsugiError, ProtocolError
from engine.ids import CoValueID
from engine.kv.detail import SlotDetail, SlotRow
from engine.kv.store import CASRecord
from engine.net.client import Backoff
from engine.net.remote import EventCursor, RemoteSession, connect_error
from engine.protocol.limits import Limits
from engine.protocol.messages import Admin, AdminResult, KvKeys, KvList, Message
from engine.sync.cluster import ClusterReport
from engine.sync.events import PeerLogEntry
from engine.sync.peers import PeerInfo, peer_info_from_json
from inspector.targets.base import ConnectionState, NodeInfo, TargetSpec, TargetUnavailable
from inspector.targets.node import NodeTarget
from inspector.workers import WorkerPool

__all__ = [
    "CONNECT_TIMEOUT",
    "FOLLOWED_SLOTS",
    "MAX_EVENT_READS",
    "MAX_SLOT_READS",
    "REQUEST_TIMEOUT",
    "RemoteTarget",
    "connect_error",
    "peer_info",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds to complete the connection and handshake before giving up (``timeout``).
CONNECT_TIMEOUT = 10.0
#: Seconds one request (``list``, ``peers``, ``kv_list``, ``kv_slot``, ``events``) may wait
#: for its answer.
REQUEST_TIMEOUT = 10.0
#: Seconds loading every listed CoValue may take.
LOAD_TIMEOUT = 60.0
#: Slots whose value and history are (re)read in one open or poll, at most; slots asked for
#: most recently go first, the rest wait for the next poll.
MAX_SLOT_READS = 200
#: ``kv_slot`` requests in flight at once (they travel packed in a few frames).
SLOT_READS_IN_FLIGHT = 50
#: Slots whose history was asked for most recently, re-read on every poll (a lost race does
#: not change the generation, so nothing else would show it).
FOLLOWED_SLOTS = 8
#: ``events`` requests in one open or poll, at most (each brings up to 256 events).
MAX_EVENT_READS = 8

#: A ``peers`` row from the wire (kept under its old name).
peer_info = peer_info_from_json


class _ObservedBackoff(Backoff):
    """The replica client's reconnect delays, reported to the target as they are taken: the
    client asks for the next delay right after a connection ends or a try fails."""

    __slots__ = ("on_delay",)

    def __init__(self, initial: float, cap: float, on_delay: Callable[[float, int], None]) -> None:
        super().__init__(initial, cap)
        self.on_delay = on_delay

    def next_delay(self) -> float:
        delay = Backoff.next_delay(self)
        self.on_delay(delay, self.failures)
        return delay


class RemoteTarget(NodeTarget):
    """``timeout``: seconds for the connection and handshake (:data:`CONNECT_TIMEOUT`);
    ``limits``: the replica's connection limits (ping interval and timeout: how soon a silent
    node counts as lost; handshake timeout), None for the defaults.

    :meth:`connection` says ``live`` or ``reconnecting`` (since when, which attempt, when the
    next), and :attr:`progress` what :meth:`open` is doing."""

    def __init__(
        self, spec: TargetSpec, pool: WorkerPool, *, timeout: float = CONNECT_TIMEOUT, limits: Limits | None = None
    ) -> None:
        super().__init__(spec, pool, owns_node=False)
        self.timeout = timeout
        self.limits = limits
        #: False once the node turned out not to send slot values (older than ``kv_slot``)
        self.kv_values = True
        #: keys asked for per ``kv_list`` page (None: as many as the node sends in one)
        self.kv_page: int | None = None
        #: True once the node answered a kv_slot request (None: not yet asked)
        self._slot_answered: bool | None = None
        self.session: RemoteSession | None = None
        self._peers: list[PeerInfo] | None = None
        self._peer_log: list[PeerLogEntry] | None = None
        self._peers_note = "Peers are read once connected."
        self._kv: dict[str, list[SlotRow]] = {}
        #: value and history of each slot read, by (namespace, key)
        self._slots: dict[tuple[str, str], SlotDetail] = {}
        #: slots whose history was asked for, least recent first (at most FOLLOWED_SLOTS)
        self._followed: dict[tuple[str, str], None] = {}
        self._listed: set[CoValueID] = set()
        #: where reading the node's sync events is (None epoch: not read yet)
        self.event_cursor = EventCursor()
        self._node_events = True
        #: the node's peers × sessions matrix as last read (None: not sent, see _read_matrix)
        self._matrix: PeersSessionsMatrix | None = None
        self._node_matrix = True
        #: the node's cluster as last read (None: not read, refused, or an older node)
        self._cluster: ClusterReport | None = None
        self._node_cluster = True
        self._cluster_note = "The cluster is read once connected."
        #: since when the connection is lost (wall clock; None: connected or never opened)
        self._lost_at: float | None = None
        #: the next reconnect try: its number and its time.monotonic() deadline
        self._attempt = 0
        self._next_try: float | None = None

    @property
    def url(self) -> str:
        return self.spec.location

    @property
    def connected(self) -> bool:
        return self.session is not None and self.session.client.connected.is_set()

    @property
    def _admin(self) -> bool:
        return self.node_info is not None and self.node_info.admin

    # -- opening -----------------------------------------------------------------------------

    async def open(self) -> None:
        if not self.spec.key_file:
            raise TargetUnavailable("key_file", "connecting to a node needs your account key file (--key FILE)")
        key = AccountKey.load(self.spec.key_file)
        session = RemoteSession(self.url, key)
        if self.limits is not None:
            session.client.limits = self.limits
        self.session = session
        self.shell = session.shell
        self.listen()
        try:
            self.progress = f"connecting to {self.url}"
            await session.open(self.timeout)
            # From now on each lost connection and failed try is seen (for the status bar).
            old = session.client.backoff
            session.client.backoff = _ObservedBackoff(old.initial, old.cap, self._on_retry)
            challenge = session.client.challenge
            assert challenge is not None  # set before the client counts as connected
            self.node_info = NodeInfo(
                challenge.node, challenge.version, challenge.proto, challenge.features, self.url, session.client.admin
            )
            # A node announces the admin reads it answers; an older one is not asked at all.
            if "admin_kv_slot" not in challenge.features:
                self.kv_values = False
            if "admin_events" not in challenge.features:
                self._node_events = False
            if "admin_matrix" not in challenge.features:
                self._node_matrix = False
            if "admin_cluster" not in challenge.features:
                self._node_cluster = False
                self._cluster_note = f"{challenge.node} runs an older Kintsugi: it does not show its cluster."
            self.progress = f"listing the CoValues of {challenge.node}"
            ids, namespaces = await self._list()
            self.progress = f"loading {len(ids)} CoValues from {challenge.node}"
            try:
                await session.load_all(ids, LOAD_TIMEOUT)
            except KeyError:  # the connection dropped while loading
                raise TargetUnavailable("timeout", f"{self.url} closed the connection while loading") from None
            self._listed = set(ids)
            self.node = session.node
            self.progress = f"reading the CAS slots of {challenge.node}"
            await self._read_kv(namespaces)
            if self._admin:
                # before the summaries: a fork the node saw before we came marks its CoValue
                await self._read_events()
            self.progress = "summarising the CoValues"
            await super().open()
            await self._read_peers()
            self.progress = ""
        except BaseException:
            await self.close()
            raise

    def _on_retry(self, delay: float, attempt: int) -> None:
        if self._lost_at is None:
            self._lost_at = time.time()
        self._attempt = attempt
        self._next_try = time.monotonic() + delay

    def connection(self) -> ConnectionState:
        """``live`` while connected; ``reconnecting`` from the moment the connection drops
        until it is back (the replica's client retries by itself, see
        :class:`~engine.net.client.SyncClient`)."""
        if self.session is None or self.connected:
            self._lost_at, self._attempt, self._next_try = None, 0, None
            return ConnectionState("live")
        if self._lost_at is None:  # dropped a moment ago: the client has not asked for a delay yet
            self._lost_at = time.time()
        next_try = self._next_try if self._next_try is not None and self._next_try > time.monotonic() else None
        return ConnectionState("reconnecting", lost_at=self._lost_at, attempt=max(self._attempt, 1), next_try=next_try)

    async def _ask(self, request: Awaitable[T], what: str) -> T:
        """Await a request of the session; its timeout becomes ``TargetUnavailable(timeout)``."""
        try:
            return await request
        except TimeoutError:
            raise TargetUnavailable("timeout", f"{self.url} did not answer {what} in time") from None

    async def _request(self, message: Admin | KvList) -> Message:
        session = self.session
        if session is None:
            raise ProtocolError("not connected", code="not_connected")
        return await self._ask(session.request(message, REQUEST_TIMEOUT), message.T)

    async def _list(self) -> tuple[list[CoValueID], list[str]]:
        assert self.session is not None
        reply = await self._request(Admin(self.session.next_rid(), "list"))
        if not isinstance(reply, AdminResult) or not reply.ok:
            raise TargetUnavailable("admin_refused", f"{self.url} answered {reply}")
        ids = sorted(CoValueID(c) for c in reply.result.get("covalues", []))
        return ids, [str(n) for n in reply.result.get("namespaces", [])]

    # -- CAS slots ---------------------------------------------------------------------------

    async def _read_kv(self, namespaces: list[str]) -> None:
        assert self.session is not None
        kv: dict[str, list[SlotRow]] = {}
        for namespace in namespaces:
            # Page after page (``after`` = the last key) while the node says ``more``.
            after: str | None = None
            while True:
                reply = await self._request(KvList(self.session.next_rid(), namespace, "", after, self.kv_page))
                if not isinstance(reply, KvKeys):
                    break
                kv.setdefault(namespace, []).extend(
                    SlotRow(namespace, str(i.get("key", "")), int(i.get("generation", 0)), i.get("state") == "present")
                    for i in reply.items
                )
                if not reply.more or not reply.items:
                    break
                after = str(reply.items[-1].get("key", ""))
        self._kv = kv
        listed = {(ns, row.key) for ns, rows in kv.items() for row in rows}
        for gone in set(self._slots) - listed:
            del self._slots[gone]
        await self._read_slots()

    def _stale_slots(self) -> list[tuple[str, str]]:
        """Slots to read now: the followed ones (most recent first), then those not read yet or
        whose generation changed; at most :data:`MAX_SLOT_READS`."""
        wanted = [slot for slot in reversed(self._followed) if slot[0] in self._kv]
        for namespace, rows in self._kv.items():
            for row in rows:
                held = self._slots.get((namespace, row.key))
                if (held is None or held.row.generation != row.generation) and (namespace, row.key) not in wanted:
                    wanted.append((namespace, row.key))
        return wanted[:MAX_SLOT_READS]

    async def _read_slots(self) -> None:
        session = self.session
        assert session is not None
        if not self.kv_values:
            return
        wanted = self._stale_slots()
        # Until the node has answered one kv_slot, ask one: a node older than the op answers
        # each with an error, and closes a connection that sends too many bad messages.
        first = 1 if self._slot_answered is None else SLOT_READS_IN_FLIGHT
        while wanted and self.kv_values:
            batch, wanted = wanted[:first], wanted[first:]
            first = SLOT_READS_IN_FLIGHT
            replies = await asyncio.gather(
                *(session.kv_slot(ns, key, REQUEST_TIMEOUT) for ns, key in batch), return_exceptions=True
            )
            for slot, reply in zip(batch, replies, strict=True):
                if isinstance(reply, SlotDetail):
                    self._slots[slot] = reply
                    self._slot_answered = True
                elif isinstance(reply, TimeoutError):
                    if self._slot_answered is None:
                        # Never answered: a node older than kv_slot (it answers the unknown op
                        # with an error that names no request). Slots show without values.
                        logger.warning("%s does not answer kv_slot: CAS values and histories stay there", self.url)
                        self.kv_values = False
                        return
                    raise TargetUnavailable("timeout", f"{self.url} did not answer kv_slot in time")
                elif isinstance(reply, KintsugiError):
                    # refused (a namespace this account may not read): the slot shows without
                    # its value and history
                    self._slot_answered = True
                    logger.info("reading slot %s/%s of %s failed: %s", *slot, self.url, reply)
                elif isinstance(reply, BaseException):
                    raise reply

    def kv_namespaces(self) -> list[str]:
        return sorted(self._kv)

    def kv_slots(self, namespace: str) -> list[SlotRow]:
        """The slots as last listed, with the value last read for each (a slot whose value is
        not read yet shows ``None``; it is read by the next poll)."""
        out = []
        for row in self._kv.get(namespace, []):
            held = self._slots.get((namespace, row.key))
            out.append(held.row if held is not None and held.row.generation == row.generation else row)
        return out

    def kv_history(self, namespace: str, key: str) -> list[CASRecord]:
        """The slot's CAS history as last read (the node's newest records, oldest first). Asking
        makes the slot *followed*: it is read again on every poll."""
        slot = (namespace, key)
        self._followed.pop(slot, None)
        self._followed[slot] = None
        while len(self._followed) > FOLLOWED_SLOTS:
            del self._followed[next(iter(self._followed))]
        held = self._slots.get(slot)
        return list(held.history) if held is not None else []

    # -- the node's sync events --------------------------------------------------------------

    async def _read_events(self) -> None:
        """Feed the node's events after the cursor to the recorder (origin ``node``)."""
        session = self.session
        if session is None or not self._node_events:
            return
        for _ in range(MAX_EVENT_READS):
            try:
                events = await session.events(self.event_cursor, REQUEST_TIMEOUT)
            except (AdminRefused, TimeoutError) as exc:
                if self.event_cursor.epoch is not None and isinstance(exc, TimeoutError):
                    raise TargetUnavailable("timeout", f"{self.url} did not answer events in time") from None
                # refused, or never answered (a node older than the events op)
                logger.warning("%s does not send its sync events: %s", self.url, str(exc) or "no answer")
                self._node_events = False
                return
            for event in events:
                self.recorder.record(event, origin="node")
            if not self.event_cursor.more:
                return

    # -- live --------------------------------------------------------------------------------

    async def poll(self) -> None:
        if not self.connected or self.node is None or self.session is None:
            return
        try:
            if self._admin:
                await self._read_peers()
                await self._read_events()
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

    async def _read_peers(self) -> None:
        assert self.session is not None
        try:
            self._peers, self._peer_log = await self._ask(self.session.peers(REQUEST_TIMEOUT), "peers")
        except AdminRefused:
            self._peers = self._peer_log = None
            self._matrix = None
            info = self.node_info
            who = f"{info.name}" if info is not None else self.url
            self._peers_note = f"Only admin accounts see the peers of {who}; this key's account is not one."
            self._cluster, self._cluster_note = None, f"Only admin accounts see the cluster of {who}."
            return
        await self._read_matrix()
        await self._read_cluster()

    async def _read_cluster(self) -> None:
        """The node's cluster (``admin{cluster}``), read with the peers; a node without the
        feature is not asked, and one that refuses is not asked again."""
        if not self._node_cluster or self.session is None:
            return
        try:
            self._cluster = ClusterReport.from_json(await self.session.admin("cluster", None, REQUEST_TIMEOUT))
        except (AdminRefused, ProtocolError, InvalidInput, TimeoutError) as exc:
            logger.warning("%s does not show its cluster: %s", self.url, str(exc) or "no answer")
            self._cluster, self._node_cluster = None, False
            self._cluster_note = f"{self.url} did not show its cluster ({str(exc) or 'no answer'})."

    async def _read_matrix(self) -> None:
        """The node's peers × sessions matrix (``admin{matrix}``, every cell), read with the
        peers; a node without the feature is not asked, and one that refuses is not asked
        again (the matrix model then shows the peers' rows with their total lag)."""
        if not self._node_matrix or self.session is None:
            return
        try:
            self._matrix = matrix_from_json(await self.session.admin("matrix", None, REQUEST_TIMEOUT))
        except (AdminRefused, ProtocolError, InvalidInput, TimeoutError) as exc:
            # refused, or never answered (a node that announces the op but predates it)
            logger.warning("%s does not send its peers × sessions matrix: %s", self.url, str(exc) or "no answer")
            self._matrix, self._node_matrix = None, False

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        await super().close()
        session, self.session = self.session, None
        if session is not None:
            await session.close()
            with contextlib.suppress(KintsugiError):
                session.node.close()

    # -- what the node shows over the wire ---------------------------------------------------

    def peers(self) -> list[PeerInfo] | None:
        return None if self._peers is None else list(self._peers)

    def matrix(self) -> PeersSessionsMatrix | None:
        """The matrix the node sent with its peers (None: not an admin, or an older node)."""
        return self._matrix

    def peer_log(self) -> list[PeerLogEntry] | None:
        return None if self._peer_log is None else list(self._peer_log)

    def cluster(self) -> ClusterReport | None:
        return self._cluster

    def cluster_note(self) -> str:
        return self._cluster_note

    def peers_note(self) -> str:
        if self._peers is None:
            return self._peers_note
        return "The node sends no peer log (it runs an older Kintsugi): its own log shows connections."
