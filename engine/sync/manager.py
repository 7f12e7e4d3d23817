"""The sync state machine (DESIGN §5–7.1), sans-I/O: messages in, messages out.

One :class:`SyncManager` serves one replica (a :class:`SyncHost`, normally a LocalNode) and all
of its peers. It never touches sockets, clocks or files: the network shell feeds it decoded
messages with :meth:`SyncManager.receive`, tells it about connections with
:meth:`SyncManager.add_peer` / :meth:`SyncManager.remove_peer`, and sends what
:meth:`SyncManager.drain` returns. The simulator in the tests drives it the same way.

Rules, in the order they matter:

1. Each peer is ``upstream`` (a node we connected to: its copy is authoritative for us) or
   ``downstream`` (it connected to us: ours is authoritative for it). Corrections only flow
   downstream.
2. On connect, a downstream peer (or we, towards an upstream) sends ``load{id, known}`` for
   everything it holds. The answer is the content the other side lacks (cut at checkpoints
   into frame-sized pieces by :mod:`engine.sync.chunks`), then ``known``.
3. Content is applied only after it verifies (the host does that), and acknowledged with
   ``known`` only after the host has committed it: the shell runs ``receive`` inside the
   host's batch and sends the drained messages after the batch's commit.
4. A fork — seen from a known state (different head at a common length) or from content (a
   correctly signed chunk that disagrees with ours) — is never merged. Towards a downstream
   peer we send ``correction`` with our history; towards an upstream we send our whole copy
   of that session so the upstream sees exactly where it forked and corrects us.
5. A deleted CoValue answers with ``deleted{tombstone}``; content for its other sessions is
   refused, so stale peers stop re-uploading.
6. A downstream peer may read a CoValue only if its account may read it under the owner
   group's roles (or is an admin); otherwise the node behaves as if the id did not exist:
   every message about it gets, byte for byte, the answer an unknown id gets
   (:meth:`SyncManager._answer_as_unknown`), so neither its existence nor its tombstone leaks.
   What such a peer sends that verifies is still kept, quietly, within the quota of
   transactions invalid on arrival (:mod:`engine.sync.strangers`).
7. Admin requests only read. Each gets exactly one ``admin_result`` with its ``rid``: a
   refusal (not an admin, another account's namespace, bad arguments) is ``ok: false`` with
   a stable ``code``, and every reply fits in one frame of ``limits.max_frame_size``
   (:mod:`engine.sync.admin` answers them).
8. A REPLACE exchange (``recover_open``/``recover_next``, DESIGN §7.2) is answered by
   :class:`~engine.recovery.exchange.RecoveryResponder` in its own cursor namespace: it never
   reads or changes what a peer is believed to hold (``known``/``acked``), so it cannot
   disturb incremental sync, and it serves members and admins only.
9. CAS-slot requests (``kv_get``, ``kv_cas``, ``kv_list``, ``kv_watch``) are answered by
   :class:`~engine.sync.kv_service.KvService`, which also keeps each connection's watches.

Sync events (forks, corrections, rejections) go to ``on_event`` as they are decided, stamped
with the host's clock, and into a ring of the last :data:`EVENT_RING_SIZE` with sequence
numbers, which admins read with ``admin{events, after}`` (a cursor: a remote inspector polls).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from engine.covalue import CoValueCore, OutcomeStatus
from engine.errors import ForkError, IntegrityError, KintsugiError, MissingPrefix, SignatureError, StorageUnavailable
from engine.ids import AccountID, CoValueID, SessionID, is_delete_session
from engine.model.fork import ForkPoint, fork_bound_detail, fork_detail
from engine.model.header import Header, OwnedByGroup
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.protocol.limits import DEFAULT_LIMITS, Limits
from engine.protocol.messages import (
    Admin,
    AdminResult,
    Content,
    Correction,
    Deleted,
    Done,
    Error,
    Known,
    Load,
    Message,
    RecoverNext,
    RecoverOpen,
    RecoverPage,
)
from engine.recovery.exchange import RecoveryResponder
from engine.sync.admin import answer_admin
from engine.sync.chunks import longest_stretch, servable_stretch, split_content
from engine.sync.cluster import ClusterReport
from engine.sync.events import EventRing, SyncEvent, SyncEventKind
from engine.sync.kv_service import KV_REPLIES, KV_REPLY_HEADROOM, KV_REQUESTS, KvService, KvWork
from engine.sync.served import ServedRequests
from engine.sync.state import Outbox, PeerKind, PeerState, SyncHost
from engine.sync.strangers import InvalidQuota

logger = logging.getLogger(__name__)
security_log = logging.getLogger("kintsugi.security")

#: Admin ops that change the node: answered by the shell, after it did the work.
ACTION_OPS = frozenset({"recover", "export"})
#: Bytes of a frame kept free around a recovery page's items (envelope, ids, map keys).
RECOVERY_PAGE_MARGIN = 64 * 1024


class SyncManager(ServedRequests):
    """Sync logic for one replica and all its peers. Not thread-safe (one loop drives it)."""

    def __init__(self, host: SyncHost, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.host = host
        self.limits = limits
        self.peers: dict[str, PeerState] = {}
        #: the last :data:`EVENT_RING_SIZE` sync events (:class:`EventRing`)
        self.ring = EventRing(host.clock_ms())
        self.on_event: Callable[[SyncEvent], None] | None = None
        #: receives replies to our own requests (``admin_result``, ``kv_*`` replies) with the peer id
        self.on_reply: Callable[[str, Message], None] | None = None
        #: answers admin ``peers`` requests (the shell installs it; None: not offered)
        self.peers_report: Callable[[], list[dict[str, Any]]] | None = None
        #: the peer log for admin ``peers`` replies, oldest first
        #: (:func:`engine.sync.events.peer_log_json` rows; None: not offered)
        self.peer_log_report: Callable[[], list[dict[str, Any]]] | None = None
        #: answers admin ``cluster`` requests (``node serve`` installs it; None: not offered)
        self.cluster_report: Callable[[], ClusterReport] | None = None
        #: performs admin ops that act (``recover``): called with the peer id, its account
        #: and the request; it must answer with exactly one ``admin_result`` (via send_to)
        self.on_admin_action: Callable[[str, AccountID, Admin], None] | None = None
        #: receives ``error`` messages from peers (a requester's exchange ends on one)
        self.on_error: Callable[[str, Error], None] | None = None
        #: hears every known state a peer announces (``known``), as announced
        self.on_known: Callable[[str, KnownState], None] | None = None
        self.recovery = RecoveryResponder(host, page_budget=limits.max_frame_size - RECOVERY_PAGE_MARGIN)
        #: transactions invalid on arrival kept per downstream account (:mod:`engine.sync.strangers`)
        self.invalid_quota = InvalidQuota()
        self.kv = KvService(host.kv, host.clock_ms, reply_budget=limits.max_frame_size - KV_REPLY_HEADROOM)
        self.kv_offload: Callable[[KvWork], None] | None = None
        self._out: Outbox = []
        self._forwarded_loads: set[CoValueID] = set()
        self._unsubscribe = host.subscribe(lambda event: self.local_changed(event.covalue))

    @property
    def events(self) -> deque[SyncEvent]:
        """The ring's events, oldest first; the newest has number :attr:`event_seq`."""
        return self.ring.events

    @property
    def event_seq(self) -> int:
        return self.ring.seq

    @property
    def epoch(self) -> int:
        """Names this manager's event numbering (see :class:`EventRing`)."""
        return self.ring.epoch

    def close(self) -> None:
        """Stop following the host's changes."""
        self._unsubscribe()

    # -- shell interface ---------------------------------------------------------------------

    def drain(self) -> Outbox:
        """Messages to send, per peer id, in order. Send them after the host's commit."""
        out, self._out = self._out, []
        return out

    def send_to(self, peer_id: str, message: Message) -> None:
        """Queue a request of our own (``admin``, ``kv_list``) for ``peer_id``."""
        peer = self.peers.get(peer_id)
        if peer is not None:
            self._send(peer, message)

    def add_peer(self, peer_id: str, kind: PeerKind, account: AccountID, *, admin: bool = False) -> None:
        """A connection finished its handshake. Towards upstream, load everything we hold."""
        peer = PeerState(peer_id, kind, account, admin)
        self.peers[peer_id] = peer
        if kind is PeerKind.UPSTREAM:
            for cid in self.host.covalue_ids():
                core = self.host.get_or_none(cid)
                if core is not None:
                    peer.interested.add(cid)
                    self._send(peer, Load(cid, core.known_state()))

    def remove_peer(self, peer_id: str) -> None:
        """The connection is gone; what we believed about it is forgotten (a reconnect starts
        with a fresh bulk exchange; a recovery exchange it had open ends)."""
        self.peers.pop(peer_id, None)
        self.recovery.drop_peer(peer_id)
        self.kv.drop_peer(peer_id)

    def load(self, covalue: CoValueID) -> None:
        """Ask upstream peers for ``covalue`` (app code or a downstream load for an unknown id)."""
        core = self.host.get_or_none(covalue)
        known = core.known_state() if core is not None else KnownState(covalue, False, {})
        for peer in self.peers.values():
            if peer.kind is PeerKind.UPSTREAM:
                peer.interested.add(covalue)
                self._send(peer, Load(covalue, known))

    def local_changed(self, covalue: CoValueID) -> None:
        """The host changed ``covalue`` (a local write, applied content, a replace, a delete):
        send each interested peer what it lacks."""
        core = self.host.get_or_none(covalue)
        if core is None:
            return
        for peer in list(self.peers.values()):
            if peer.kind is PeerKind.UPSTREAM:
                peer.interested.add(covalue)
            if covalue in peer.interested and self._may_read(peer, core):
                self._reconcile(peer, core)
            if core.type == "group" and peer.kind is PeerKind.DOWNSTREAM:
                # Roles changed or the group just arrived: CoValues it owns that this peer
                # asked for may have become readable.
                for other in sorted(peer.interested):
                    dependent = self.host.get_or_none(other)
                    if (
                        dependent is not None
                        and isinstance(dependent.header.ruleset, OwnedByGroup)
                        and dependent.header.ruleset.group == covalue
                        and self._may_read(peer, dependent)
                    ):
                        self._reconcile(peer, dependent)

    def receive(self, peer_id: str, message: Message) -> None:
        """Handle one validated message from a peer.

        Runs inside the host's batch: whatever it applies is committed before this returns,
        and the host's change notifications (which reconcile other peers) come after this
        peer's state is updated, so nothing is echoed back to its sender.
        """
        peer = self.peers.get(peer_id)
        if peer is None:
            return
        handler = self._handlers.get(type(message))
        if handler is None:
            self._send(peer, Error("unexpected_message", f"{message.T} is not expected after the handshake"))
            return
        with self.host.batch():
            handler(self, peer, message)

    # -- handlers ----------------------------------------------------------------------------

    def _on_load(self, peer: PeerState, msg: Load) -> None:
        cid = msg.id
        peer.interested.add(cid)
        self._record_known(peer, msg.known)
        core = self.host.get_or_none(cid)
        if core is None or not self._may_read(peer, core):
            self._send(peer, Known(cid, KnownState(cid, False, {})))
            if core is None and cid not in self._forwarded_loads:
                self._forwarded_loads.add(cid)
                self.load(cid)
            return
        self._check_forks(peer, core, msg.known)
        self._reconcile(peer, core)
        self._send(peer, Known(cid, core.known_state()))

    def _on_known(self, peer: PeerState, msg: Known) -> None:
        cid = msg.id
        if self.on_known is not None:
            self.on_known(peer.id, msg.known)
        if not msg.known.header:
            # The peer's answer: it holds nothing of it (or must answer as if it did not, as a
            # node does to an account it takes for no member). Whatever we believed it had,
            # even what we sent, it gets everything, with the header, next time.
            peer.known.pop(cid, None)
        self._record_known(peer, msg.known)
        core = self.host.get_or_none(cid)
        if core is None or not self._may_read(peer, core):
            return
        self._check_forks(peer, core, msg.known)
        self._reconcile(peer, core)

    def _on_content(self, peer: PeerState, msg: Content) -> None:
        cid = msg.id
        servable = {}
        for sid, chunk in msg.new.items():
            stretch = longest_stretch(chunk)
            if stretch > servable_stretch(self.limits.max_frame_size):
                # We could never pass this on in one frame: refuse it now, not when serving.
                self._send(peer, Error("stretch_too_large", f"{sid}: {stretch} bytes between checkpoints", cid))
            else:
                servable[sid] = chunk
        if msg.new and not servable:
            return
        msg = Content(cid, msg.header, servable)
        core = self.host.get_or_none(cid)
        msg = self._within_invalid_quota(peer, core, msg)
        if core is not None and not self._may_read(peer, core):
            self._answer_as_unknown(peer, core, msg)
            return
        if core is None:
            if msg.header is None:
                self._send(peer, Known(cid, KnownState(cid, False, {})))
                return
            core = self.host.add_header(msg.header)
            self._ask_for_owner(peer, msg.header)
        peer.has_header.add(cid)
        if core.deleted:
            deletes = {s: c for s, c in msg.new.items() if is_delete_session(s)}
            if deletes:
                self.host.apply_content(cid, deletes)
            if len(deletes) < len(msg.new):
                self._send_deleted(peer, core)
            return
        held_before = {sid: log.signed_count for sid, log in core.sessions.items()}
        report = self.host.apply_content(cid, msg.new)
        heads = peer.known.setdefault(cid, {})
        acked = peer.acked.setdefault(cid, {})
        for outcome in report.outcomes:
            sid = outcome.session
            if outcome.status in (OutcomeStatus.APPLIED, OutcomeStatus.DUPLICATE) and sid in core.sessions:
                # the sender holds what it sent
                heads[sid] = acked[sid] = core.sessions[sid].head()
            elif outcome.status is OutcomeStatus.FORK and outcome.fork_index is not None:
                self._event(SyncEventKind.FORK_DETECTED, peer, cid, sid, f"content diverges at {outcome.fork_index}")
                self._answer_fork(peer, core, sid, outcome.fork_index)
            elif outcome.status is OutcomeStatus.REJECTED and outcome.error is not None:
                error = outcome.error
                sent = msg.new.get(sid)
                held = held_before.get(sid, 0)
                if isinstance(error, SignatureError) and sent is not None and 0 < sent.after == held:
                    # It starts exactly at our end but does not verify on our chain: either a
                    # fork (signed on the peer's own chain) or a forgery. Our known state (sent
                    # below) lets an honest peer see the fork and send its whole history, which
                    # then shows exactly where it diverged.
                    logger.info("content from %s for %s/%s does not extend our chain", peer.id, cid, sid)
                    self._event(SyncEventKind.FORK_SUSPECTED, peer, cid, sid, str(error))
                elif isinstance(error, IntegrityError):
                    security_log.warning("rejected content from %s for %s/%s: %s", peer.id, cid, sid, error)
                    self._event(SyncEventKind.REJECTED, peer, cid, sid, str(error))
                if not isinstance(error, MissingPrefix):
                    self._send(peer, Error.of(error, cid))
        if core.deleted:
            self._send_deleted(peer, core)
        if self._may_read(peer, core):
            peer.interested.add(cid)
            self._send(peer, Known(cid, core.known_state()))
        else:
            # Content is self-verifying, so it is kept whoever sends it; but a peer that may
            # not read this CoValue (or whose membership cannot be checked yet) learns only
            # that its own sessions arrived.
            known = core.known_state()
            mine = {sid: head for sid, head in known.sessions.items() if sid in msg.new}
            self._send(peer, Known(cid, KnownState(cid, True, mine)))
        if report.changed and not core.deleted:
            # Pass it on now, not only when the host reports its commit: a relay asserts
            # nothing about our disk (only a ``known`` must wait for it).
            self.local_changed(cid)

    def _on_deleted(self, peer: PeerState, msg: Deleted) -> None:
        core = self.host.get_or_none(msg.id)
        if core is None or not self._may_read(peer, core):
            # We never had it (or this peer may not learn that we do): say so, and the sender
            # replies with the header and tombstone.
            self._send(peer, Known(msg.id, KnownState(msg.id, False, {})))
            return
        report = self.host.apply_content(msg.id, msg.tombstone)
        for outcome in report.by_status(OutcomeStatus.REJECTED):
            security_log.warning("rejected tombstone from %s for %s: %s", peer.id, msg.id, outcome.error)
        if core.deleted:
            peer.known[msg.id] = peer.acked[msg.id] = {sid: core.sessions[sid].head() for sid in core.delete_sessions()}
        if self._may_read(peer, core):
            self._send(peer, Known(msg.id, core.known_state()))

    # -- peers that may not read (issue 12, points 3 and 4) ------------------------------------

    def _within_invalid_quota(self, peer: PeerState, core: CoValueCore | None, msg: Content) -> Content:
        """``msg`` without the chunks over the sender's quota of transactions invalid on
        arrival (each refused one gets ``error{invalid_quota_exceeded}``). Upstream and admin
        peers relay everything and are not counted."""
        # An unreadable CoValue counts as unknown here too, so the quota cannot tell them apart.
        header = core.header if core is not None and self._may_read(peer, core) else msg.header
        if not msg.new or header is None or peer.kind is PeerKind.UPSTREAM or peer.admin:
            return msg
        kept, refused = self.invalid_quota.admit(peer.account, header, core, msg.new, self.host.get_or_none)
        for error in refused:
            self._send(peer, Error.of(error, msg.id))
        return msg if not refused else Content(msg.id, msg.header, kept)

    def _answer_as_unknown(self, peer: PeerState, core: CoValueCore, msg: Content) -> None:
        """Content from a peer that may not read ``core``: answer exactly as if this replica
        had never held it — computed on a fresh copy holding only what the message brings —
        then keep what verifies, telling the peer nothing more."""
        cid = core.id
        if msg.header is None:
            self._send(peer, Known(cid, KnownState(cid, False, {})))
            return
        fresh = CoValueCore(msg.header)
        fresh.resolve = core.resolve
        self._ask_for_owner(peer, msg.header)
        peer.has_header.add(cid)
        report = fresh.apply_content(msg.new)
        for outcome in report.by_status(OutcomeStatus.REJECTED):
            if isinstance(outcome.error, IntegrityError):
                security_log.warning(
                    "rejected content from %s for %s/%s: %s", peer.id, cid, outcome.session, outcome.error
                )
            if outcome.error is not None and not isinstance(outcome.error, MissingPrefix):
                self._send(peer, Error.of(outcome.error, cid))
        if fresh.deleted:
            self._send_deleted(peer, fresh)
        sent = {sid: head for sid, head in fresh.known_state().sessions.items() if sid in msg.new}
        self._send(peer, Known(cid, KnownState(cid, True, sent)))
        keep = {sid: chunk for sid, chunk in msg.new.items() if not core.deleted or is_delete_session(sid)}
        if keep and self.host.apply_content(cid, keep).changed and not core.deleted:
            self.local_changed(cid)

    def _on_correction(self, peer: PeerState, msg: Correction) -> None:
        cid, sid = msg.id, msg.sid
        if peer.kind is not PeerKind.UPSTREAM:
            security_log.warning("correction from downstream peer %s ignored (%s/%s)", peer.id, cid, sid)
            self._send(peer, Error("unexpected_correction", "corrections flow from nodes to their peers", cid))
            return
        if self.host.get_or_none(cid) is None:
            return
        try:
            outcome = self.host.replace_session(cid, sid, msg.chunk())
        except KintsugiError as exc:
            security_log.warning("rejected correction from %s for %s/%s: %s", peer.id, cid, sid, exc)
            self._event(SyncEventKind.CORRECTION_REJECTED, peer, cid, sid, str(exc))
            self._send(peer, Error.of(exc, cid))
            return
        core = self.host.get_or_none(cid)
        if core is not None and sid in core.sessions and core.sessions[sid].head() != msg.head:
            logger.warning("correction of %s/%s from %s ended at another head than announced", cid, sid, peer.id)
        peer.known.setdefault(cid, {})[sid] = msg.head
        if outcome.changed:
            fork = outcome.fork or ForkPoint(outcome.diverged_at, b"")
            detail = f"{fork_detail(fork)}, {outcome.dropped} local transactions"
            if outcome.conflict_session is not None:
                detail += f" kept in {outcome.conflict_session}"
            self._event(SyncEventKind.CORRECTION_APPLIED, peer, cid, sid, detail)
        if core is not None:
            self._send(peer, Known(cid, core.known_state()))
        self.local_changed(cid)

    def _on_done(self, peer: PeerState, msg: Done) -> None:
        return None

    def _on_error(self, peer: PeerState, msg: Error) -> None:
        logger.info("peer %s reported %s for %s: %s", peer.id, msg.code, msg.id, msg.detail)
        if msg.code == StorageUnavailable.code and msg.id is not None:
            # Its store refused what we sent of this CoValue (or has not committed it): it
            # holds what it acknowledged, so the rest goes again at the next reconcile (our
            # next write, or its next known state, which it sends once writes resume).
            peer.known[msg.id] = dict(peer.acked.get(msg.id, {}))
        if self.on_error is not None:
            self.on_error(peer.id, msg)

    def _on_admin(self, peer: PeerState, msg: Admin) -> None:
        """Answer an admin request (:func:`~engine.sync.admin.answer_admin`): exactly one
        ``admin_result``; a refusal changes nothing. An op that acts (``recover``) is handed
        to :attr:`on_admin_action` (the shell does the I/O and answers later); without one,
        or for a non-admin, it is refused at once."""
        if msg.op in ACTION_OPS:
            if not peer.admin:
                self._send(peer, AdminResult(msg.rid, False, {"code": "permission_denied", "detail": "admins only"}))
            elif self.on_admin_action is None:
                self._send(
                    peer, AdminResult(msg.rid, False, {"code": "unsupported_op", "detail": f"{msg.op} not served"})
                )
            else:
                self.on_admin_action(peer.id, peer.account, msg)
            return
        self._send(peer, answer_admin(self, peer, msg))

    def _on_reply(self, peer: PeerState, msg: Message) -> None:
        if self.on_reply is not None:
            self.on_reply(peer.id, msg)

    _handlers: ClassVar[dict[type[Message], Callable[[SyncManager, PeerState, Any], None]]] = {
        Load: _on_load,
        Known: _on_known,
        Content: _on_content,
        Deleted: _on_deleted,
        Correction: _on_correction,
        Done: _on_done,
        Error: _on_error,
        Admin: _on_admin,
        AdminResult: _on_reply,
        **dict.fromkeys(KV_REQUESTS, ServedRequests._on_kv),
        **dict.fromkeys(KV_REPLIES, _on_reply),
        RecoverOpen: ServedRequests._on_recover_open,
        RecoverNext: ServedRequests._on_recover_next,
        RecoverPage: _on_reply,
    }

    # -- reconciliation ----------------------------------------------------------------------

    def _record_known(self, peer: PeerState, known: KnownState) -> None:
        """Merge a peer's known state into what we believe it has.

        A count lower than what we already sent is kept at ours (our content is in flight);
        a fork is caught separately from the message itself.
        """
        if known.header:
            peer.has_header.add(known.id)
        else:
            peer.has_header.discard(known.id)
        peer.acked[known.id] = dict(known.sessions)
        heads = peer.known.setdefault(known.id, {})
        core = self.host.get_or_none(known.id)
        for sid, (n, h) in known.sessions.items():
            recorded = heads.get(sid)
            if recorded is None or n >= recorded[0] or not _on_our_chain(core, sid, recorded):
                heads[sid] = (n, h)

    def _check_forks(self, peer: PeerState, core: CoValueCore, known: KnownState) -> None:
        """Forks visible from the peer's known state alone (their head differs from ours)."""
        for fork in core.forks_in_known(known):
            self._event(
                SyncEventKind.FORK_DETECTED, peer, core.id, SessionID(fork.session), fork_bound_detail(fork.index)
            )
            peer.known.setdefault(core.id, {}).pop(SessionID(fork.session), None)
            self._answer_fork(peer, core, SessionID(fork.session), 0)

    def _answer_fork(self, peer: PeerState, core: CoValueCore, sid: SessionID, fork: int) -> None:
        log = core.sessions.get(sid)
        if log is None or not log.signed_count:
            return
        if peer.kind is PeerKind.DOWNSTREAM:
            start = min(fork, log.signed_count)
            chunk = log.chunk(start)
            self._send(peer, Correction(core.id, sid, start, tuple(chunk.txs), dict(chunk.sigs), log.head()))
            peer.known.setdefault(core.id, {})[sid] = log.head()
            self._event(SyncEventKind.CORRECTION_SENT, peer, core.id, sid, f"from {start} to {log.signed_count}")
        else:
            self._send_content(peer, core, {sid: log.chunk(0)})

    def _reconcile(self, peer: PeerState, core: CoValueCore) -> None:
        """Send ``peer`` every checkpointed transaction we believe it lacks."""
        if core.deleted:
            theirs = peer.known.get(core.id, {})
            if set(theirs) != set(core.delete_sessions()):
                self._send_deleted(peer, core)
            return
        theirs = peer.known.get(core.id, {})
        new: dict[SessionID, Chunk] = {}
        for sid, log in core.sessions.items():
            n, head = theirs.get(sid, (0, log.base))
            signed = log.signed_count
            if n and n <= signed and log.hash_at(n) != head:
                # The peer's head for this session is not on our chain: a fork we have not
                # answered yet (say its known state crossed our correction on the wire).
                del theirs[sid]
                self._answer_fork(peer, core, sid, 0)
            elif signed > n and (n == 0 or log.hash_at(n) == head):
                new[sid] = log.chunk(n)
        if new or core.id not in peer.has_header:
            self._send_content(peer, core, new)

    def _send_content(self, peer: PeerState, core: CoValueCore, new: dict[SessionID, Chunk]) -> None:
        header = None if core.id in peer.has_header else core.header
        for part in split_content(new, self.limits.content_budget):
            self._send(peer, Content(core.id, header, part))
            header = None
        if not new and header is not None:
            self._send(peer, Content(core.id, header, {}))
        peer.has_header.add(core.id)
        heads = peer.known.setdefault(core.id, {})
        for sid in new:
            heads[sid] = core.sessions[sid].head()

    def _send_deleted(self, peer: PeerState, core: CoValueCore) -> None:
        """Tell ``peer`` that ``core`` is deleted: ``deleted{tombstone}``, or, when the peer has
        never had the CoValue, ``content`` with the header and the delete sessions (so the
        tombstone reaches replicas that never saw the CoValue alive)."""
        tombstone = {sid: core.sessions[sid].chunk() for sid in core.delete_sessions()}
        if not tombstone:
            return
        if core.id in peer.has_header:
            self._send(peer, Deleted(core.id, tombstone))
        else:
            self._send(peer, Content(core.id, core.header, tombstone))
            peer.has_header.add(core.id)
        peer.known[core.id] = {sid: core.sessions[sid].head() for sid in tombstone}

    def _ask_for_owner(self, peer: PeerState, header: Header) -> None:
        ruleset = header.ruleset
        if isinstance(ruleset, OwnedByGroup) and self.host.get_or_none(ruleset.group) is None:
            peer.interested.add(ruleset.group)
            self._send(peer, Load(ruleset.group, KnownState(ruleset.group, False, {})))

    def _may_read(self, peer: PeerState, core: CoValueCore) -> bool:
        return peer.kind is PeerKind.UPSTREAM or peer.admin or self.host.can_read(peer.account, core.id)

    def _event(
        self, kind: SyncEventKind, peer: PeerState, covalue: CoValueID, session: SessionID | None, detail: str
    ) -> None:
        event = SyncEvent(kind, peer.id, covalue, session, detail, self.host.clock_ms())
        self.ring.append(event)
        logger.info("%s: %s %s/%s %s", kind, peer.id, covalue, session, detail)
        if self.on_event is not None:
            self.on_event(event)


def _on_our_chain(core: CoValueCore | None, sid: SessionID, head: tuple[int, bytes]) -> bool:
    log = core.sessions.get(sid) if core is not None else None
    n, h = head
    return log is not None and n <= log.count and log.hash_at(n) == h


__all__ = [
    "ForkError",
    "Outbox",
    "PeerKind",
    "PeerState",
    "SyncHost",
    "SyncManager",
]
