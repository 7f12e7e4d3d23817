"""One-shot remote operations for the CLI and the inspector: connect, ask, load, report.

:class:`RemoteSession` is an in-memory replica connected to a node as an ``inspector`` peer
with an account key. :meth:`RemoteSession.open` returns once the handshake completed and
raises a typed error (:mod:`engine.errors`) as soon as it cannot: nothing accepts
connections there (``connection_refused``), no WebSocket or no Kintsugi handshake
(``not_a_node``), the node refused the account (``auth_failed``), speaks another protocol
(``unsupported_version``) or closed during the handshake (``handshake_closed``) — or, only
when the node says nothing at all, at the deadline (``timeout``). Given several node URLs
(the nodes of one cluster), it connects to the first that completes the handshake and raises
only once every one has failed, with the error of the last one tried; once open, its client
moves to another of them when its node goes away (:class:`~engine.net.client.SyncClient`).

Requests (:meth:`RemoteSession.admin`, :meth:`RemoteSession.request`) are matched to their
replies by ``rid``; a refusal (``admin_result{ok: false}``) raises
:class:`~engine.errors.AdminRefused` with the node's code. The admin reads an inspector
needs have typed helpers: :meth:`~RemoteSession.peers` (rows and peer log),
:meth:`~RemoteSession.kv_slot` (a slot's value and CAS history) and
:meth:`~RemoteSession.events` (the node's sync events after a cursor, :class:`EventCursor`).

:func:`inspect_remote` asks which CoValues and CAS namespaces the account may see (admins:
all), loads them into the replica and describes them in the same JSON shape as
``kintsugi inspect STORE``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.crypto import AccountKey
from engine.errors import AdminRefused, HandshakeTimeout, KintsugiError, ProtocolError
from engine.ids import CoValueID
from engine.kv.detail import SlotDetail, slot_detail_from_json
from engine.model.known_state import KnownState
from engine.net.client import Backoff, SyncClient, connect_error
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.messages import MAX_ADMIN_EVENTS, MAX_ADMIN_HISTORY, Admin, AdminResult, KvList, Message
from engine.sync.events import PeerLogEntry, SyncEvent, SyncEventKind, peer_log_from_json
from engine.sync.peers import PeerInfo, peer_info_from_json

__all__ = ["REMOTE_TIMEOUT", "EventCursor", "RemoteSession", "connect_error"]

#: Seconds a remote inspection may take before it gives up.
REMOTE_TIMEOUT = 60.0
#: Seconds a load may see no session grow (and none refused) before it stops waiting.
LOAD_QUIET = 10.0
#: Sync events that end the wait for a session: its content was refused here.
REFUSED_KINDS = frozenset({SyncEventKind.REJECTED, SyncEventKind.FORK_DETECTED, SyncEventKind.FORK_SUSPECTED})


class _FailureSignal(Backoff):
    """The client's backoff, which also tells :meth:`RemoteSession.open` about each failure:
    the client asks it for the next delay right after recording ``last_error``."""

    __slots__ = ("on_failure",)

    def __init__(self, initial: float, cap: float) -> None:
        super().__init__(initial, cap)
        self.on_failure: asyncio.Event | None = None

    def next_delay(self) -> float:
        if self.on_failure is not None:
            self.on_failure.set()
        return Backoff.next_delay(self)


@dataclass(slots=True)
class EventCursor:
    """Where a reader of a node's sync events is: the node's event ``epoch`` (None: not read
    yet) and the sequence number of the last event read. ``missed`` counts events the node
    dropped from its ring before they were read (or sent unreadable); ``more`` says the last
    read stopped short of the node's newest event (ask again)."""

    epoch: int | None = None
    after: int = 0
    missed: int = 0
    more: bool = False


class RemoteSession:
    """A connected in-memory replica that can send requests and await their replies."""

    def __init__(self, url: str | Sequence[str], key: AccountKey) -> None:
        self.node = LocalNode(key, instance_id="inspector")
        self.shell = SyncShell(self.node)
        self._failures = _FailureSignal(initial=0.2, cap=1.0)
        self.client = SyncClient(self.shell, url, key=key, role="inspector", backoff=self._failures)
        self._rids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Message]] = {}
        self.shell.manager.on_reply = self._on_reply

    def _on_reply(self, _peer: str, message: Message) -> None:
        rid = getattr(message, "rid", None)
        future = self._waiting.pop(rid, None) if isinstance(rid, int) else None
        if future is not None and not future.done():
            future.set_result(message)

    @property
    def url(self) -> str:
        """The URL of the node connected to (or tried last)."""
        return self.client.url

    @property
    def urls(self) -> tuple[str, ...]:
        """Every node URL the session may use."""
        return self.client.urls

    @property
    def peer_id(self) -> str:
        upstream = [pid for pid in self.shell.connections if pid.startswith("out:")]
        if not upstream:
            raise ProtocolError("not connected", code="not_connected")
        return upstream[-1]

    async def open(self, timeout: float) -> None:
        """Connect and complete the handshake within ``timeout`` seconds.

        Raises at the first failure (with several URLs: once each has failed, the last
        one's), with nothing left open: :class:`NodeUnreachable`,
        :class:`NotANode`, :class:`HandshakeClosed`,
        :class:`~engine.protocol.handshake.AuthFailed` (``auth_failed``),
        :class:`~engine.errors.UnsupportedVersion`, another :class:`ProtocolError` the node
        sent instead of ``welcome``, or :class:`HandshakeTimeout` at the deadline.
        """
        failed = asyncio.Event()
        self._failures.on_failure = failed
        task = self.client.start()
        waiters = {asyncio.ensure_future(self.client.connected.wait()), asyncio.ensure_future(failed.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
            self._failures.on_failure = None
        if self.client.connected.is_set():
            return
        error = self.client.last_error
        task.cancel()  # waiting to retry (or still trying): no retry, and nothing to wait for
        await self.close()
        if failed.is_set() and error is not None:
            raise connect_error(self.url, error, self.client.limits.handshake_timeout)
        raise HandshakeTimeout(self.url, timeout)

    async def request(self, message: Admin | KvList, timeout: float) -> Message:
        """Send ``message`` and return the reply with its ``rid``. Raises ``TimeoutError``
        when none comes in ``timeout`` seconds, ``ProtocolError(not_connected)`` when not
        connected."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[message.rid] = future
        try:
            self.shell.manager.send_to(self.peer_id, message)
            self.shell.dispatch()
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(message.rid, None)

    async def admin(self, op: str, args: dict[str, Any] | None, timeout: float) -> Any:
        """The ``result`` of admin request ``op``. Raises :class:`AdminRefused` when the node
        answers ``ok: false`` (its code in ``reason``), :class:`ProtocolError` when it answers
        something else, ``TimeoutError`` when it does not answer in time."""
        reply = await self.request(Admin(self.next_rid(), op, dict(args or {})), timeout)
        if not isinstance(reply, AdminResult):
            raise ProtocolError(f"the node answered admin {op} with {reply.T}", code="unexpected_message")
        if not reply.ok:
            result = reply.result if isinstance(reply.result, dict) else {}
            raise AdminRefused(op, str(result.get("code", "refused")), str(result.get("detail", "")))
        return reply.result

    async def peers(self, timeout: float) -> tuple[list[PeerInfo], list[PeerLogEntry] | None]:
        """The node's connected peers and its peer log, oldest first (None: the node sends no
        log). Admins only (:class:`AdminRefused` ``permission_denied`` otherwise)."""
        result = await self.admin("peers", None, timeout)
        if not isinstance(result, dict):
            raise ProtocolError("peers reply is not a map", code="invalid_message")
        rows = [peer_info_from_json(row) for row in result.get("peers", []) if isinstance(row, dict)]
        return rows, peer_log_from_json(result["log"]) if "log" in result else None

    async def kv_slot(
        self, namespace: str, key: str, timeout: float, *, history: int = MAX_ADMIN_HISTORY
    ) -> SlotDetail:
        """One slot of the node with its value and newest ``history`` CAS records. The caller's
        own namespace, or any for an admin (:class:`AdminRefused` ``kv_access_denied``)."""
        args = Admin.kv_slot(0, namespace, key, history).args
        return slot_detail_from_json(await self.admin("kv_slot", args, timeout))

    async def events(self, cursor: EventCursor, timeout: float, *, limit: int = MAX_ADMIN_EVENTS) -> list[SyncEvent]:
        """The node's sync events after ``cursor`` (at most ``limit``), oldest first; advances
        ``cursor``. A cursor from another epoch (the node restarted) starts over from the
        node's oldest kept event. Admins only. Events that do not parse are skipped (and
        counted in ``cursor.missed``)."""
        result = await self._events_reply(cursor, timeout, limit)
        if cursor.epoch is not None and result["epoch"] != cursor.epoch:
            cursor.after = 0  # numbered anew: read the new epoch's events from its start
            result = await self._events_reply(cursor, timeout, limit)
        cursor.epoch = result["epoch"]
        first = result.get("first")
        if type(first) is int and first > cursor.after + 1:
            cursor.missed += first - cursor.after - 1
        out: list[SyncEvent] = []
        for row in result.get("events", []):
            seq = row.get("seq") if isinstance(row, dict) else None
            if type(seq) is not int or seq <= cursor.after:
                cursor.missed += 1
                continue
            cursor.after = seq
            try:
                out.append(SyncEvent.from_json(row))
            except KintsugiError:
                cursor.missed += 1
        cursor.more = result.get("more") is True
        return out

    async def _events_reply(self, cursor: EventCursor, timeout: float, limit: int) -> dict[str, Any]:
        result = await self.admin("events", {"after": cursor.after, "limit": limit}, timeout)
        if not isinstance(result, dict) or type(result.get("epoch")) is not int:
            raise ProtocolError("events reply without an epoch", code="invalid_message")
        return result

    def next_rid(self) -> int:
        return next(self._rids)

    async def load_all(self, ids: list[CoValueID], timeout: float) -> None:
        """Load ``ids`` and wait until the node has answered each with its known state and
        every session it announced has arrived in full (a large session comes in several
        frames around that answer), or was refused here (it did not verify: a sync event
        says so). Should nothing arrive for :data:`LOAD_QUIET` seconds, the wait ends with
        what is there."""
        announced: dict[CoValueID, KnownState] = {}
        refused: set[tuple[CoValueID, str]] = set()
        manager = self.shell.manager

        def on_known(peer_id: str, known: KnownState) -> None:
            if peer_id == self.peer_id:
                announced[known.id] = known

        def on_event(event: SyncEvent) -> None:
            if event.kind in REFUSED_KINDS and event.session is not None:
                refused.add((event.covalue, event.session))

        previous, manager.on_known = manager.on_known, on_known
        self.shell.event_listeners.append(on_event)
        try:
            for cid in ids:
                manager.load(cid)
            self.shell.dispatch()
            await self._wait_loaded(ids, timeout, announced, refused)
        finally:
            manager.on_known = previous
            self.shell.event_listeners.remove(on_event)

    async def _wait_loaded(
        self,
        ids: list[CoValueID],
        timeout: float,
        announced: dict[CoValueID, KnownState],
        refused: set[tuple[CoValueID, str]],
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        progress, changed_at = -1, loop.time()
        while True:
            now = loop.time()
            missing = [cid for cid in ids if cid not in announced]
            behind, held = self._behind(ids, announced, refused)
            if not missing and behind == 0:
                return
            if held != progress:
                progress, changed_at = held, now
            elif not missing and now - changed_at >= LOAD_QUIET:
                return
            if now > deadline:
                if missing:
                    raise ProtocolError(f"node did not answer for {len(missing)} CoValues", code="timeout")
                return
            await asyncio.sleep(0.01)

    def _behind(
        self, ids: list[CoValueID], announced: dict[CoValueID, KnownState], refused: set[tuple[CoValueID, str]]
    ) -> tuple[int, int]:
        """Transactions the node announced that are not here yet, and how many are here."""
        behind = held = 0
        for cid in ids:
            theirs = announced.get(cid)
            core = self.node.covalues.get(cid)
            if theirs is None or not theirs.header or (core is not None and core.deleted):
                continue  # not answered yet, unknown to the node, or a tombstone
            ours = core.known_state().sessions if core is not None else {}
            for sid, (n, _h) in theirs.sessions.items():
                if (cid, sid) in refused:
                    continue
                have = ours.get(sid, (0, b""))[0]
                held += have
                behind += max(0, n - have)
        return behind, held

    async def close(self) -> None:
        await self.client.stop()
        self.shell.close()
