"""The glue between one LocalNode's SyncManager and its live connections.

:class:`SyncShell` owns the reading side of every connection and the routing of the
manager's outbox to each peer's bounded queue. Reading only moves bytes: each frame goes to
the connection's :class:`~engine.protocol.guard.FrameGuard` (rate limit, decoding, malformed
budget, all decided sans-I/O) and the shell applies the decision — errors sent, messages fed
to the sync manager inside one store batch per frame, or a close with the documented code
after the error that explains it.

Acknowledgements leave only after the batch has committed, so a ``known`` always describes
durable data: with background commits (:class:`~engine.node.LocalNode`), a ``known`` waits
in :attr:`SyncShell.held` until the node's commits up to then have finished. Everything else
leaves at once: content relayed to other peers asserts nothing about this node's disk. A
reader with more than :data:`MAX_COMMITS_IN_FLIGHT` commits outstanding waits for them
before reading on.

A held ``known`` leaves only if what it confirms is still what the node holds once those
commits finished: every session head it names on the node's chain and within what the store
holds. A commit can fail and memory take another history before the retry goes through (on a
cluster, another node's commit of a forked copy won the session and this node caught up with
the store): the acknowledgement computed before would confirm a history the store refused.
It is dropped, and its peer answered afresh, as if it had just sent an empty ``content`` for
that CoValue: it learns what the node holds, sees the fork, and is corrected (at once, by a
``correction``, when the node can already tell that the peer's head is not on its chain).

A full disk (the node's :attr:`~engine.node.LocalNode.storage_unavailable`) never leaves a
writer waiting in silence: each peer whose acknowledgement is held gets one
``error{storage_unavailable, id}`` per CoValue, and while the store refuses writes every
incoming write (``content``, ``deleted``, ``correction``) is answered with that error and not
applied; everything else — loads, known states, admin requests — is served as usual. When a
commit succeeds again (space returned), writes are taken again and the held
acknowledgements leave, and each peer whose write was refused is answered as if it had just
sent an empty ``content`` for that CoValue: it learns what the node holds (or, as for any
empty content, what the access rules let it learn) and sends the refused write again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from engine.errors import FrameTooLarge, KintsugiError, StorageEnvironmentError
from engine.ids import CoValueID, SessionID
from engine.model.known_state import KnownState
from engine.net.connection import PeerConnection
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, encode_frame
from engine.protocol.guard import Close, FrameGuard, Reject
from engine.protocol.limits import DEFAULT_LIMITS, CloseCode, Limits
from engine.protocol.messages import Content, Correction, Deleted, Error, Known, Message
from engine.storage.interface import ChangeFeed
from engine.sync.events import PEER_LOG_SIZE, PeerEvent, PeerLogEntry, SyncEvent, peer_log_json
from engine.sync.manager import SyncManager
from engine.sync.peers import PeerInfo, peer_report

logger = logging.getLogger(__name__)

#: Background commits a node may have outstanding before its readers stop reading frames.
MAX_COMMITS_IN_FLIGHT = 8


class StoreFollower(Protocol):
    """What the shell uses of the follower of a store other nodes write
    (:class:`~engine.net.follow.ClusterFollower`)."""

    feed: ChangeFeed

    def unsure(self, covalue: CoValueID) -> bool:
        """Whether the store may hold more of ``covalue`` than memory, beyond a
        notification's delay."""
        ...


class SyncShell:
    """Routes messages between a node's :class:`SyncManager` and its connections."""

    def __init__(self, node: LocalNode, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.node = node
        self.limits = limits
        self.manager = SyncManager(node, limits=limits)
        self.connections: dict[str, PeerConnection] = {}
        self.event_listeners: list[Callable[[SyncEvent], None]] = []
        self.manager.on_event = self._on_event
        self._dispatch_scheduled = False
        self._unsubscribe = node.subscribe(lambda _event: self.schedule_dispatch())
        self._unlisten = node.on_commit(self.schedule_dispatch)
        #: Acknowledgements waiting for a commit: (node.submitted_seq when drained, peer, message).
        self.held: deque[tuple[int, str, Message]] = deque()
        #: (peer, CoValue) told that the store refuses writes, while it does
        self._told_unavailable: set[tuple[str, str]] = set()
        #: (peer, CoValue) whose writes were refused: answered once writes resume
        self._refused: set[tuple[str, CoValueID]] = set()
        self.frames_received = 0
        self.peer_log: deque[PeerLogEntry] = deque(maxlen=PEER_LOG_SIZE)
        self.manager.peers_report = self._peers_report
        self.manager.peer_log_report = self._peer_log_report
        self._lease_keeper: asyncio.TimerHandle | None = None
        #: Set (the :class:`~engine.net.follow.ClusterFollower`) when other nodes write the
        #: node's store: content from peers is then judged against the store, read off the loop.
        self.follower: StoreFollower | None = None

    def peers(self) -> list[PeerInfo]:
        """Every peer of this node with how far behind it is and its queue figures."""
        return peer_report(self.manager, self.node.covalues, self.connections)

    def _peers_report(self) -> list[dict[str, Any]]:
        return [info.to_json() for info in self.peers()]

    def _peer_log_report(self) -> list[dict[str, Any]]:
        return peer_log_json(self.peer_log)

    def close(self) -> None:
        if self._lease_keeper is not None:
            self._lease_keeper.cancel()
            self._lease_keeper = None
        self._unsubscribe()
        self._unlisten()
        self.manager.close()

    def _keep_lease(self) -> None:
        """Renew the node's session lease every third of its lifetime while connected, so an
        idle node never loses it to another process of the same account. A renewal the store
        fails is logged and tried again at the next turn: the keeper never stops."""
        interval = self.node.leases.ttl_ms / 3000
        self._lease_keeper = asyncio.get_running_loop().call_later(interval, self._keep_lease)
        try:
            self.node.renew_lease()
        except StorageEnvironmentError as exc:
            logger.warning("could not renew the session lease; trying again in %.1f s: %s", interval, exc)

    def _on_event(self, event: SyncEvent) -> None:
        for listener in list(self.event_listeners):
            listener(event)

    # -- outgoing ----------------------------------------------------------------------------

    def schedule_dispatch(self) -> None:
        """Send what the manager produced, soon (coalesces many changes into one pass)."""
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            asyncio.get_running_loop().call_soon(self.dispatch)

    def dispatch(self) -> None:
        """Drain the manager's outbox into the peers' queues, packed into frames.

        A ``known`` may acknowledge anything flushed before it was drained, so it leaves once
        the node's commits up to then have finished; acknowledgements keep their order. One
        that no longer holds by then is dropped and its peer answered afresh (module docstring).
        """
        self._dispatch_scheduled = False
        self._answer_refused()
        by_peer: dict[str, list[Message]] = defaultdict(list)
        stale: set[tuple[str, CoValueID]] = set()
        while self.held and self.held[0][0] <= self.node.committed_seq:
            _seq, peer_id, message = self.held.popleft()
            assert isinstance(message, Known)
            if self._still_holds(message.known):
                by_peer[peer_id].append(message)
            else:
                logger.info("the acknowledgement of %s to %s no longer holds; answering afresh", message.id, peer_id)
                stale.add((peer_id, message.id))
        self._answer_afresh(sorted(stale), "after its acknowledgement was withdrawn")
        outbox = self.manager.drain()
        submitted, committed = self.node.submitted_seq, self.node.committed_seq
        for peer_id, message in outbox:
            if isinstance(message, Known) and submitted > committed:
                self.held.append((submitted, peer_id, message))
            else:
                by_peer[peer_id].append(message)
        self._tell_unavailable(by_peer)
        for peer_id, messages in by_peer.items():
            conn = self.connections.get(peer_id)
            if conn is not None:
                conn.send_messages(messages)

    def _tell_unavailable(self, by_peer: dict[str, list[Message]]) -> None:
        """While the store refuses writes, one ``storage_unavailable`` error to each peer
        per CoValue whose acknowledgement waits for a commit."""
        unavailable = self.node.storage_unavailable
        if unavailable is None:
            self._told_unavailable.clear()
            return
        for _seq, peer_id, message in self.held:
            assert isinstance(message, Known)
            key = (peer_id, message.id)
            if key not in self._told_unavailable:
                self._told_unavailable.add(key)
                by_peer[peer_id].append(Error.of(unavailable, message.id))

    def _answer_refused(self) -> None:
        """Once the store takes writes again, answer each peer whose write was refused as if it
        had sent an empty ``content`` for that CoValue (see the module docstring)."""
        if not self._refused or self.node.storage_unavailable is not None:
            return
        refused, self._refused = sorted(self._refused), set()
        self._answer_afresh(refused, "after writes resumed")

    def _still_holds(self, known: KnownState) -> bool:
        """True when the node holds every session head ``known`` names: on the signed chain
        in memory, and within what the store holds as far as the node knows. False when
        memory took another history since (its commit was refused and the node took the
        store's copy, or a correction replaced it), or the session or CoValue is gone."""
        if not known.sessions:
            return True
        core = self.node.get_or_none(known.id)
        if core is None:
            return False
        stored = self.node.store is not None
        for sid, (count, head) in known.sessions.items():
            log = core.sessions.get(sid)
            if count and (log is None or count > log.signed_count or log.hash_at(count) != head):
                return False
            if stored and count > self.node.stored_count(known.id, sid):
                return False
        return True

    def _answer_afresh(self, pairs: Iterable[tuple[str, CoValueID]], why: str) -> None:
        """Answer each (peer, CoValue) as if the peer had just sent an empty ``content`` for
        it: it learns what the node holds now (or what the access rules let it learn)."""
        for peer_id, covalue in pairs:
            if peer_id in self.connections:
                try:
                    self.manager.receive(peer_id, Content(covalue, None, {}))
                except KintsugiError as exc:
                    logger.warning("could not answer %s about %s %s: %s", peer_id, covalue, why, exc)

    async def settle(self) -> None:
        """Wait for the node's commits, then send everything the manager produced."""
        await self.node.durable()
        self.dispatch()

    def send_to(self, peer_id: str, message: Message) -> None:
        """Queue ``message`` for ``peer_id`` through the manager and send it soon (answers
        that the shell produces later, such as an admin action's result)."""
        self.manager.send_to(peer_id, message)
        self.schedule_dispatch()

    def send_error(self, conn: PeerConnection, exc: KintsugiError) -> None:
        conn.send_frame(encode_frame(OP, [Error.of(exc)]))

    # -- incoming ----------------------------------------------------------------------------

    def attach(self, conn: PeerConnection) -> None:
        if self._lease_keeper is None:
            self._keep_lease()
        self.connections[conn.peer_id] = conn
        self.peer_log.append(PeerLogEntry(_now_ms(), conn.peer_id, PeerEvent.UP))

    def detach(self, peer_id: str) -> None:
        conn = self.connections.pop(peer_id, None)
        self.manager.remove_peer(peer_id)
        if conn is not None:
            code = conn.close_code_sent if conn.close_code_sent is not None else conn.ws.close_code
            self.peer_log.append(PeerLogEntry(_now_ms(), peer_id, PeerEvent.DOWN, code, conn.lagged))

    async def read_loop(self, ws: Connection, conn: PeerConnection, *, rate_limited: bool) -> None:
        """Read frames until the connection ends, applying the :class:`FrameGuard`'s decision
        for each: send the errors and feed the messages to the manager (one store batch per
        frame), reject the frame and read on, or close with the documented code."""
        loop = asyncio.get_running_loop()
        guard = FrameGuard(self.limits, loop.time(), rate_limited=rate_limited)
        try:
            async for raw in ws:
                decoded = guard.decoded
                decision = guard.receive(raw.encode() if isinstance(raw, str) else raw, loop.time())
                self.frames_received += guard.decoded - decoded
                if isinstance(decision, Close):
                    _log_refusal(conn, decision)
                    conn.close(decision.code, decision.reason, final=decision.error)
                    return
                if isinstance(decision, Reject):
                    _log_refusal(conn, decision)
                    conn.send_frame(encode_frame(OP, [decision.error]))
                    continue
                for error in decision.errors:
                    conn.send_frame(encode_frame(OP, [error]))
                messages = self._refuse_writes(conn, decision.messages)
                follower = self.follower
                checked = await self._check_against_store(follower, messages) if follower is not None else ()
                with self.node.checked_against_store(checked), self.node.batch():
                    for message in messages:
                        try:
                            self.manager.receive(conn.peer_id, message)
                        except KintsugiError as exc:
                            self.send_error(conn, exc)
                self.dispatch()
                if self.node.commits_in_flight > MAX_COMMITS_IN_FLIGHT:
                    await self.node.durable()
        except ConnectionClosed:
            return

    async def _check_against_store(self, follower: StoreFollower, messages: Sequence[Message]) -> set[CoValueID]:
        """Bring the sessions the frame's content names up to what the shared store holds,
        reading it for the whole frame at once while the loop serves others
        (:mod:`engine.node.cluster`); returns the CoValues so checked. A failed read checks
        nothing: the node then reads the store itself as it applies (and reports the error).

        Only the CoValues the follower is unsure of are read (a commit of theirs announced and
        not taken in yet, or the follower not listening or failing): memory holds what the
        store held of the others a notification's delay ago, and a commit made by another
        node within that delay is caught by the commit itself (the store refuses to append to
        another history; the acknowledgement held for it never leaves as it was, see the
        module docstring)."""
        wanted: dict[CoValueID, set[SessionID]] = {}
        for message in messages:
            if isinstance(message, Content) and message.new:
                wanted.setdefault(message.id, set()).update(message.new)
            elif isinstance(message, Deleted) and message.tombstone:
                wanted.setdefault(message.id, set()).update(message.tombstone)
        requests = {
            cid: r
            for cid, ss in wanted.items()
            if follower.unsure(cid) and (r := self.node.stored_request(cid, ss)) is not None
        }
        if requests:
            try:
                tails = await asyncio.wrap_future(follower.feed.read_tails(requests, exclude=self.node.session))
            except KintsugiError as exc:
                logger.warning("could not read the store to check content against it: %s", exc)
                return set()
            if self.node.closed:
                return set()
            if any([self.node.absorb_tails(cid, tails.get(cid, [])) for cid in requests]):
                self.schedule_dispatch()
        return set(wanted)

    def _refuse_writes(self, conn: PeerConnection, messages: Sequence[Message]) -> Sequence[Message]:
        """The messages to feed the manager: all of them, unless the store refuses writes
        (disk full); then each write is answered with that error and left out."""
        unavailable = self.node.storage_unavailable
        if unavailable is None:
            return messages
        kept: list[Message] = []
        refused: list[Message] = []
        for message in messages:
            if isinstance(message, Content | Deleted | Correction):
                refused.append(Error.of(unavailable, message.id))
                self._refused.add((conn.peer_id, message.id))
            else:
                kept.append(message)
        if refused:
            conn.send_messages(refused)
        return kept


def _log_refusal(conn: PeerConnection, decision: Close | Reject) -> None:
    """Log the refusals an operator wants to see: floods and oversized frames."""
    if isinstance(decision, Close) and decision.code == CloseCode.RATE_LIMITED:
        logger.warning("peer %s exceeded the rate limit; closing", conn.peer_id)
    elif isinstance(decision.cause, FrameTooLarge):
        logger.warning("peer %s sent a %d-byte frame", conn.peer_id, decision.cause.size)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
