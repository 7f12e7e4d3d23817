"""Admin requests (docs/protocol.md, "Admin requests"), sans-I/O: one request in, its reply out.

An operator's ``admin{rid, op, args}`` gets exactly one ``admin_result`` with the same ``rid``
from :func:`answer_admin`; the sync manager sends it like any other message. The rules:

1. Admin requests only read. The ops see the replica and the sync manager only through the
   read-only protocols here (:class:`AdminHost`, :class:`AdminView`), so an op that tried to
   change either would not type-check.
2. A refusal — not an admin (``permission_denied``), another account's namespace
   (``kv_access_denied``), bad arguments (``invalid_message``), a key the store refuses
   (``kv``), an op this replica cannot answer (``unsupported_op``) — is ``ok: false`` with
   that stable ``code``, and changes nothing.
3. Every reply fits in one frame of ``limits.max_frame_size``: its ``result`` takes at most
   that minus :data:`ADMIN_REPLY_HEADROOM`, and what is cut to fit is said in the reply.

The sync events an admin reads with ``events`` are the manager's ring of recent events
(:data:`engine.sync.manager.EVENT_RING_SIZE`); this module reads it through a cursor.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from engine import codec
from engine.errors import KintsugiError, KVAccessDenied, PermissionDenied, ProtocolError
from engine.ids import AccountID, CoValueID, SessionID
from engine.kv.detail import slot_detail_json
from engine.kv.envelope import Slot
from engine.kv.store import CASRecord
from engine.model.header import Header, OwnedByGroup
from engine.model.session_log import SessionLog
from engine.protocol.limits import Limits
from engine.protocol.messages import MAX_TEXT, Admin, AdminArgs, AdminResult, EventsArgs, KvSlotArgs, admin_args
from engine.protocol.messages.admin import MatrixArgs
from engine.sync.cluster import ClusterReport

logger = logging.getLogger(__name__)

#: Bytes of a frame kept free around an admin reply's ``result``: the frame envelope, the
#: ``admin_result`` map and its ``rid``. Everything else of a reply must fit in the rest.
ADMIN_REPLY_HEADROOM = 1024


class SlotReader(Protocol):
    """The reading half of :class:`engine.kv.store.KVStore`."""

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]: ...

    def history(self, namespace: str, key: str) -> list[CASRecord]: ...


class HeldCoValue(Protocol):
    """What ``matrix`` reads of a CoValue the replica holds (:class:`engine.covalue.CoValueCore`)."""

    @property
    def header(self) -> Header: ...

    @property
    def sessions(self) -> Mapping[SessionID, SessionLog]: ...


class AdminHost(Protocol):
    """What admin requests read of the replica (part of :class:`engine.sync.manager.SyncHost`)."""

    def covalue_ids(self) -> list[CoValueID]: ...

    def get_or_none(self, covalue: CoValueID) -> HeldCoValue | None: ...

    def can_read(self, account: AccountID, covalue: CoValueID) -> bool: ...

    def kv_namespaces(self) -> list[str]: ...

    @property
    def kv(self) -> SlotReader:
        """The replica's CAS slots (only read here, for admins' ``kv_slot``)."""
        ...


class Requester(Protocol):
    """Who sent a request (a :class:`engine.sync.manager.PeerState`)."""

    @property
    def id(self) -> str: ...

    @property
    def account(self) -> AccountID: ...

    @property
    def admin(self) -> bool: ...


class PeerKind(Protocol):
    @property
    def value(self) -> str: ...


class AckingPeer(Protocol):
    """A peer as the sync manager believes it (:class:`engine.sync.manager.PeerState`): what
    it follows and what it acknowledged of each session (count and head)."""

    @property
    def account(self) -> AccountID: ...

    @property
    def kind(self) -> PeerKind: ...

    @property
    def interested(self) -> set[CoValueID]: ...

    @property
    def acked(self) -> Mapping[CoValueID, Mapping[SessionID, tuple[int, bytes]]]: ...


class RingEvent(Protocol):
    """A sync event as the ring holds it (:class:`engine.sync.manager.SyncEvent`)."""

    def to_json(self) -> dict[str, Any]: ...


class AdminView(Protocol):
    """What admin requests read of the sync manager (:class:`engine.sync.manager.SyncManager`)."""

    @property
    def host(self) -> AdminHost: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def peers(self) -> Mapping[str, AckingPeer]:
        """The connected peers by peer id (read by ``matrix``)."""
        ...

    @property
    def peers_report(self) -> Callable[[], list[dict[str, Any]]] | None:
        """Rows for ``peers`` (None: this replica has no network shell, ``unsupported_op``)."""
        ...

    @property
    def peer_log_report(self) -> Callable[[], list[dict[str, Any]]] | None:
        """The peer log for ``peers``, oldest first (None: the reply has no log)."""
        ...

    @property
    def cluster_report(self) -> Callable[[], ClusterReport] | None:
        """The cluster for ``cluster`` (None: this replica is not a served node,
        ``unsupported_op``)."""
        ...

    @property
    def events(self) -> Sequence[RingEvent]:
        """The recent sync events, oldest first; the newest is number :attr:`event_seq`."""
        ...

    @property
    def event_seq(self) -> int: ...

    @property
    def epoch(self) -> int:
        """Names the event numbering: a cursor from another epoch starts over."""
        ...


def answer_admin(view: AdminView, peer: Requester, msg: Admin) -> AdminResult:
    """The one ``admin_result`` for ``msg`` from ``peer``: ``ok: true`` with the op's result,
    or, for a refusal (any :class:`KintsugiError`), ``ok: false`` with ``{code, detail}``."""
    try:
        result = _OPS[msg.op](view, peer, admin_args(msg))
    except KintsugiError as exc:
        logger.info("admin %s from %s refused: %s %s", msg.op, peer.id, exc.code, exc.detail)
        return AdminResult(msg.rid, False, {"code": exc.code, "detail": exc.detail[:MAX_TEXT]})
    return AdminResult(msg.rid, True, result)


def _reply_budget(view: AdminView) -> int:
    """Bytes an admin reply's ``result`` may take."""
    return max(0, view.limits.max_frame_size - ADMIN_REPLY_HEADROOM)


def _list(view: AdminView, peer: Requester, _args: AdminArgs) -> dict[str, Any]:
    ids = [cid for cid in view.host.covalue_ids() if peer.admin or view.host.can_read(peer.account, cid)]
    namespaces = view.host.kv_namespaces() if peer.admin else [peer.account]
    return {"covalues": ids, "namespaces": namespaces}


def _peers(view: AdminView, peer: Requester, _args: AdminArgs) -> dict[str, Any]:
    """``{peers: [row], log: [entry], log_dropped: n}``: the log keeps its newest entries
    that fit in a frame next to the rows (``log_dropped`` counts the ones left out). Rows
    that would not fit a frame (tens of thousands of peers) are cut, ``peers_dropped``
    saying how many."""
    _require_admin(peer, "peers")
    if view.peers_report is None:
        raise ProtocolError("this node does not report its peers", code="unsupported_op")
    budget = _reply_budget(view) - 64
    rows, rows_dropped = first_within(view.peers_report(), budget)
    result: dict[str, Any] = {"peers": rows}
    if rows_dropped:
        result["peers_dropped"] = rows_dropped
    if view.peer_log_report is not None:
        log, dropped = newest_within(view.peer_log_report(), budget - len(codec.encode(rows)))
        result.update(log=log, log_dropped=dropped)
    return result


def _cluster(view: AdminView, peer: Requester, _args: AdminArgs) -> dict[str, Any]:
    """The :class:`~engine.sync.cluster.ClusterReport` of this node's store, as JSON: every
    node registered there with its URL, liveness, last heartbeat, peers and lag (a node on a
    store that is not shared: itself alone). Node rows that would not fit a frame are cut from
    the end, ``nodes_dropped`` saying how many."""
    _require_admin(peer, "cluster")
    if view.cluster_report is None:
        raise ProtocolError("this replica is not a served node: it has no cluster", code="unsupported_op")
    report = view.cluster_report()
    result = report.to_json()
    rows, dropped = first_within(result["nodes"], _reply_budget(view) - 256 - len(codec.encode(report.note)))
    result["nodes"] = rows
    if dropped:
        result["nodes_dropped"] = report.nodes_dropped + dropped
    return result


def _kv_slot(view: AdminView, peer: Requester, args: AdminArgs) -> dict[str, Any]:
    """One slot with its value and newest CAS records (see :func:`slot_detail_json`)."""
    assert isinstance(args, KvSlotArgs)
    if args.namespace != peer.account and not peer.admin:
        raise KVAccessDenied(f"{peer.account} may not read namespace {args.namespace!r}")
    generation, slot = view.host.kv.get(args.namespace, args.key)
    history = view.host.kv.history(args.namespace, args.key) if args.history else []
    return slot_detail_json(
        args.namespace,
        args.key,
        generation,
        slot,
        history,
        max_records=args.history,
        max_bytes=_reply_budget(view),
    )


def _events(view: AdminView, peer: Requester, args: AdminArgs) -> dict[str, Any]:
    """``{epoch, events: [{seq, ...event}], first, last, more}``: events numbered above
    ``after``, oldest first, as many as ``limit`` and the frame allow. ``first`` and
    ``last`` are the numbers of the oldest and newest events kept (``first > after + 1``
    means some were dropped before they were read); ``more`` says another request would
    get more."""
    assert isinstance(args, EventsArgs)
    _require_admin(peer, "events")
    first = view.event_seq - len(view.events) + 1
    start = max(0, args.after + 1 - first)
    budget = _reply_budget(view) - 128
    out: list[dict[str, Any]] = []
    for seq, event in enumerate(itertools.islice(view.events, start, None), first + start):
        if len(out) == args.limit:
            break
        row = {"seq": seq, **event.to_json()}
        budget -= len(codec.encode(row))
        if budget < 0:
            break
        out.append(row)
    last_sent = out[-1]["seq"] if out else max(args.after, first - 1)
    return {
        "epoch": view.epoch,
        "events": out,
        "first": first,
        "last": view.event_seq,
        "more": last_sent < view.event_seq,
    }


def _matrix(view: AdminView, peer: Requester, args: AdminArgs) -> dict[str, Any]:
    """The peers × sessions matrix in the form of
    :meth:`engine.diagnostics.matrix.PeersSessionsMatrix.to_json`: ``{available, note,
    peers: [{peer_id, account, kind, behind}], sessions: [{covalue, session, count}], cells:
    [[row, column, acked, behind, diverged]], owners}``. Columns are the sessions of the
    CoValues some peer follows (``covalue`` given: its own and those of the CoValues it
    owns), each with the count this node holds; a cell is what a peer acknowledged of a
    session of a CoValue it follows, ``diverged`` when its head is not on this node's chain.
    Columns that would not fit a frame are cut from the end (``sessions_dropped``)."""
    assert isinstance(args, MatrixArgs)
    _require_admin(peer, "matrix")
    host = view.host
    peers = sorted(view.peers.items())
    followed = sorted({cid for _pid, p in peers for cid in p.interested})
    held = {cid: core for cid in followed if (core := host.get_or_none(cid)) is not None}
    owners = {
        cid: core.header.ruleset.group for cid, core in held.items() if isinstance(core.header.ruleset, OwnedByGroup)
    }
    if args.covalue:
        held = {cid: core for cid, core in held.items() if cid == args.covalue or owners.get(cid) == args.covalue}
    columns = [(cid, sid, log) for cid, core in sorted(held.items()) for sid, log in sorted(core.sessions.items())]
    budget = _reply_budget(view) - 256
    rows = [{"peer_id": pid, "account": str(p.account), "kind": str(p.kind.value), "behind": 0} for pid, p in peers]
    budget -= len(codec.encode(rows)) + len(codec.encode(owners))
    sessions: list[dict[str, Any]] = []
    cells: list[list[Any]] = []
    for column, (cid, sid, log) in enumerate(columns):
        entry = {"covalue": cid, "session": sid, "count": log.signed_count}
        new_cells = []
        for row, (_pid, p) in enumerate(peers):
            if cid not in p.interested:
                continue
            count, head = p.acked.get(cid, {}).get(sid, (0, b""))
            diverged = count > log.count or (count > 0 and head != log.hash_at(count))
            new_cells.append([row, column, count, max(0, log.signed_count - count), diverged])
        budget -= len(codec.encode(entry)) + len(codec.encode(new_cells))
        if budget < 0:
            break
        sessions.append(entry)
        cells.extend(new_cells)
    for _row, _column, _acked, behind, _diverged in cells:
        rows[_row]["behind"] += behind
    result: dict[str, Any] = {
        "available": True,
        "note": "",
        "peers": rows,
        "sessions": sessions,
        "cells": cells,
        "owners": dict(sorted(owners.items())),
    }
    if len(sessions) < len(columns):
        result["sessions_dropped"] = len(columns) - len(sessions)
        result["note"] = f"{len(columns) - len(sessions)} sessions left out to fit one frame"
    return result


def _acts(_view: AdminView, _peer: Requester, _args: AdminArgs) -> dict[str, Any]:
    """Ops that change the node are the shell's (the sync manager hands them over); here they
    are refused."""
    raise ProtocolError("this op is performed by the node's shell", code="unsupported_op")


#: The ops, by name: the names :attr:`Admin.OPS` lets the decoder admit.
_OPS: dict[str, Callable[[AdminView, Requester, AdminArgs], dict[str, Any]]] = {
    "list": _list,
    "peers": _peers,
    "kv_slot": _kv_slot,
    "events": _events,
    "matrix": _matrix,
    "cluster": _cluster,
    "recover": _acts,
    "export": _acts,
}


def _require_admin(peer: Requester, op: str) -> None:
    if not peer.admin:
        raise PermissionDenied(f"{op} is for admin accounts only")


def first_within(items: list[Any], budget: int) -> tuple[list[Any], int]:
    """The first of ``items`` whose canonical CBOR fits in ``budget`` bytes together, and how
    many later ones were left out."""
    kept = 0
    for item in items:
        budget -= len(codec.encode(item))
        if budget < 0:
            break
        kept += 1
    return items[:kept], len(items) - kept


def newest_within(items: list[Any], budget: int) -> tuple[list[Any], int]:
    """The newest (last) of ``items`` whose canonical CBOR fits in ``budget`` bytes together,
    oldest first, and how many older ones were left out."""
    kept = 0
    for item in reversed(items):
        budget -= len(codec.encode(item))
        if budget < 0:
            break
        kept += 1
    return items[len(items) - kept :], len(items) - kept


__all__ = [
    "ADMIN_REPLY_HEADROOM",
    "AdminHost",
    "AdminView",
    "AckingPeer",
    "HeldCoValue",
    "Requester",
    "RingEvent",
    "SlotReader",
    "answer_admin",
    "first_within",
    "newest_within",
]
