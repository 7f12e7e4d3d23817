"""The JSON lines of a bundle, written from gathered records with redaction applied.

One function per member form (see :mod:`engine.diagnostics.bundle_format`): a CoValue
(:func:`record_json`), its content (:func:`content_json`), a CAS slot (:func:`slot_json`),
and the tombstones with who acknowledged them (:func:`tombstone_rows`). What is user data —
header metadata and uniqueness, a CoMap's keys and values, CAS keys and values — passes
:meth:`Redaction.hide <engine.diagnostics.redact.Redaction.hide>`; identities (accounts,
sessions, CoValues), counts, hashes, signatures and times are kept, since they are what a
reader needs to locate a fork or follow a peer, and they say nothing of the content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from engine.diagnostics.bundle_format import raw_value
from engine.diagnostics.bundle_gather import CoValueRecord, SessionRecord, SlotDump
from engine.diagnostics.covalue_summary import ContentSnapshot, TombstoneInfo, header_name
from engine.diagnostics.matrix import PeersSessionsMatrix
from engine.diagnostics.redact import Redaction
from engine.model.fork import decode_conflict_fork
from engine.sync.events import FORK_KINDS, SyncEvent

__all__ = ["content_json", "record_json", "session_json", "slot_json", "tombstone_rows"]

_AT_INDEX = re.compile(r"\bat (\d+)\b")


def _value(value: Any, redaction: Redaction) -> Any:
    return redaction.hide(value) if redaction.policy.redact else raw_value(value)


def session_json(s: SessionRecord) -> dict[str, Any]:
    return {
        "id": s.id,
        "kind": str(s.kind),
        "account": s.account,
        "conflict_n": s.conflict_n,
        "origin": s.origin,
        "count": s.count,
        "head": s.head.hex() if s.head is not None else None,
        "verified": s.verified,
        "broken": {"index": s.broken.index, "code": s.broken.code, "reason": s.broken.reason} if s.broken else None,
        "last_made_at": s.last_made_at,
        "checkpoints": [[n, h.hex(), sig.hex()] for n, h, sig in s.checkpoints],
        "fork_record": s.fork_record.hex() if s.fork_record is not None else None,
        "rows": s.rows_member,
        "rows_written": s.rows_written,
    }


def _forks(record: CoValueRecord, events: Iterable[SyncEvent]) -> list[dict[str, Any]]:
    """Fork points: each conflict session (the fork was recovered; its index when the store
    kept a fork record for it) and each sync event that reported a fork, with its index."""
    out: list[dict[str, Any]] = []
    for s in record.sessions:
        if s.conflict_n:
            decoded = decode_conflict_fork(s.fork_record) if s.fork_record is not None else None
            index = decoded[1].index if decoded is not None else None
            out.append({"session": s.origin, "index": index, "source": "conflict_session", "conflict_session": s.id})
    for event in events:
        if event.kind in FORK_KINDS:
            match = _AT_INDEX.search(event.detail)
            out.append(
                {
                    "session": event.session,
                    "index": int(match.group(1)) if match else None,
                    "source": str(event.kind),
                    "peer": event.peer,
                    "at_ms": event.at_ms,
                    "detail": event.detail,
                }
            )
    return out


def record_json(record: CoValueRecord, redaction: Redaction, events: Iterable[SyncEvent] = ()) -> dict[str, Any]:
    """One ``covalues.jsonl`` line."""
    header: dict[str, Any] | None = None
    name = None
    if record.header is not None:
        obj = record.header.to_obj()
        header = {
            "type": obj["type"],
            "ruleset": obj["ruleset"],
            "meta": None if obj["meta"] is None else _value(obj["meta"], redaction),
            "uniqueness": None if obj["uniqueness"] is None else _value(obj["uniqueness"], redaction),
            "createdAt": obj["createdAt"],
        }
        if redaction.policy.include_content or not redaction.policy.redact:
            header["cbor"] = record.header.encode().hex()
        shown = header_name(record.header)
        name = redaction.hide_text(shown) if shown is not None else None
    return {
        "id": record.id,
        "type": record.type,
        "name": name,
        "deleted": record.deleted,
        "header": header,
        "analysed": record.analysed,
        "transactions": record.transactions,
        "sessions": [session_json(s) for s in record.sessions],
        "forks": _forks(record, events),
        "invalid": [{"session": i.session, "index": i.index, "reason": i.reason} for i in record.invalid],
        "tombstones": [_tombstone(t) for t in record.tombstones],
    }


def _tombstone(t: TombstoneInfo) -> dict[str, Any]:
    return {"session": t.session, "by": t.by, "at": t.at, "valid": t.valid, "problem": t.problem}


def content_json(snapshot: ContentSnapshot, redaction: Redaction) -> dict[str, Any]:
    """One ``content.jsonl`` line: ``[key, value, deleted, madeAt, session, index, change]``
    per entry. A group's members and roles are not user data and stay in clear."""
    clear = snapshot.type == "group"
    entries = []
    for key, entry in sorted(snapshot.entries.items()):
        made_at, session, index, change = entry.order
        value = entry.value if clear else (None if entry.deleted else _value(entry.value, redaction))
        entries.append(
            [key if clear else redaction.hide_text(key), value, entry.deleted, made_at, session, index, change]
        )
    return {"id": snapshot.covalue, "type": snapshot.type, "transactions": snapshot.transactions, "entries": entries}


def slot_json(dump: SlotDump, redaction: Redaction) -> dict[str, Any]:
    """One ``kv.jsonl`` line."""
    row = dump.row
    return {
        "namespace": row.namespace,
        "key": redaction.hide_text(row.key),
        "generation": row.generation,
        "state": row.state,
        "value": _value(row.value, redaction) if row.present else None,
        "deleted_at": row.deleted_at,
        "deleted_by": row.deleted_by,
        "history": [
            {
                "at_ms": r.at_ms,
                "expected_gen": r.expected_gen,
                "outcome": r.outcome,
                "generation": r.generation,
                "writer": r.writer,
            }
            for r in dump.history
        ],
        "history_dropped": dump.history_dropped,
    }


def tombstone_rows(tombstones: Sequence[TombstoneInfo], matrix: PeersSessionsMatrix | None) -> list[dict[str, Any]]:
    """``tombstones.json``: every delete marker, and for the valid ones, which peers that
    follow the CoValue acknowledged its delete session and which have not (None: unknown)."""
    out = []
    for t in tombstones:
        row: dict[str, Any] = {"covalue": t.covalue, **_tombstone(t), "acknowledged_by": None, "pending": None}
        if matrix is not None and matrix.available:
            acked: list[str] = []
            pending: list[str] = []
            for column in matrix.columns_of(t.covalue):
                if matrix.columns[column].session != t.session:
                    continue
                for r, peer in enumerate(matrix.peers):
                    cell = matrix.cell(r, column)
                    if cell is not None:
                        (pending if cell.behind else acked).append(peer.peer_id)
            row.update(acknowledged_by=acked, pending=pending)
        out.append(row)
    return out
