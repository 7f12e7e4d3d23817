"""Anomalies ("expert info", DESIGN §10): what is wrong with a target, ranked by severity.

Each rule reads plain :class:`Facts` — the CoValues with their sessions' verification, the
sync events, peers, peer log, CAS slots, the peers × sessions matrix and the node's version —
and returns :class:`Anomaly` values, each naming the entry it concerns (a CoValue, session
and row; a peer; a CAS slot) so a viewer can go there. :func:`find_anomalies` runs every rule
and ranks the result: severity first (:class:`Severity`), then the order of the rules below,
then the subject. Facts come from a store or a node (:mod:`engine.diagnostics.bundle_gather`),
from what the inspector shows, or from a bundle; the rules neither read nor change anything.

The rules, in rank order within a severity:

- ``signature_failure`` (critical): a stored checkpoint signature does not verify; or
  (high) a peer sent content or a correction whose signature did not verify.
- ``fork`` (high): a sync event reported a session forked and no conflict session holds the
  divergent edits yet; (low) a fork already recovered into a conflict session.
- ``corrupt_chain`` (critical): a stored chain does not verify (broken link, missing or
  unreadable rows, unsigned tail, head mismatch); or (high) a peer's content was rejected.
- ``invalid_transactions`` (medium): transactions kept in a log but not in content.
- ``lagging_peer`` (medium): a connected peer at least :data:`LAGGING_PEER_TRANSACTIONS`
  behind, or with :data:`LAGGING_PEER_BACKLOG` messages waiting.
- ``lost_peer`` (medium): a peer closed as lagged, or gone with an abnormal close code.
- ``cas_contention`` (low): a CAS slot that lost at least :data:`CAS_CONTENTION_LOST` races.
- ``tombstone_unacknowledged`` (medium): a peer that follows a deleted CoValue has not
  acknowledged its delete session.
- ``version_skew``: the node speaks another protocol (medium) or runs another Kintsugi
  version (low) than the tool looking at it.
- ``clock_skew`` (low): a session's newest ``madeAt`` is more than :data:`MAX_CLOCK_SKEW_MS`
  after the time the facts were gathered — no transaction can have been received after
  that, so its author's clock was ahead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.content.common import InvalidTx
from engine.diagnostics.chain_verify import ChainBreak
from engine.diagnostics.matrix import PeersSessionsMatrix
from engine.errors import InvalidInput
from engine.ids import CoValueID, SessionID, SessionKind, parse_session_id
from engine.protocol.limits import CloseCode
from engine.sync.events import FORK_KINDS, PeerEvent, PeerLogEntry, SyncEvent, SyncEventKind
from engine.sync.peers import PeerInfo

__all__ = [
    "CAS_CONTENTION_LOST",
    "LAGGING_PEER_BACKLOG",
    "LAGGING_PEER_TRANSACTIONS",
    "MAX_CLOCK_SKEW_MS",
    "Anomaly",
    "AnomalyKind",
    "CoValueFacts",
    "Facts",
    "NodeFacts",
    "SessionFacts",
    "Severity",
    "SlotFacts",
    "anomalies_from_json",
    "find_anomalies",
    "severity_counts",
]

#: A connected peer this many transactions behind lags.
LAGGING_PEER_TRANSACTIONS = 1000
#: ... or with this many messages waiting to be encoded for it.
LAGGING_PEER_BACKLOG = 1000
#: A CAS slot that lost this many races (in the history kept) is contended.
CAS_CONTENTION_LOST = 3
#: How far (ms) a ``madeAt`` may lie after the time of the check before it is clock skew.
MAX_CLOCK_SKEW_MS = 5 * 60 * 1000
#: Close codes of a peer that went away as it should.
NORMAL_CLOSES = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY})

_AT_INDEX = re.compile(r"\bat (\d+)\b")


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Higher is worse."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.CRITICAL: 4, Severity.HIGH: 3, Severity.MEDIUM: 2, Severity.LOW: 1}


class AnomalyKind(StrEnum):
    """The rules, in rank order within a severity."""

    SIGNATURE_FAILURE = "signature_failure"
    FORK = "fork"
    CORRUPT_CHAIN = "corrupt_chain"
    INVALID_TRANSACTIONS = "invalid_transactions"
    LAGGING_PEER = "lagging_peer"
    LOST_PEER = "lost_peer"
    CAS_CONTENTION = "cas_contention"
    TOMBSTONE_UNACKNOWLEDGED = "tombstone_unacknowledged"
    VERSION_SKEW = "version_skew"
    CLOCK_SKEW = "clock_skew"


_KIND_ORDER = {kind: n for n, kind in enumerate(AnomalyKind)}


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One finding. ``subject`` names what it concerns in one short text; the other fields
    link to the entry (``index``: a row of ``session``; ``namespace``/``key``: a CAS slot)."""

    kind: AnomalyKind
    severity: Severity
    subject: str
    explanation: str
    covalue: CoValueID | None = None
    session: SessionID | None = None
    index: int | None = None
    peer: str | None = None
    namespace: str | None = None
    key: str | None = None

    def sort_key(self) -> tuple[int, int, str]:
        return (-self.severity.rank, _KIND_ORDER[self.kind], self.subject)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": str(self.kind),
            "severity": str(self.severity),
            "subject": self.subject,
            "explanation": self.explanation,
        }
        for name in ("covalue", "session", "index", "peer", "namespace", "key"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, obj: object) -> Anomaly:
        """An anomaly as :meth:`to_json` wrote it; raises :class:`InvalidInput` otherwise."""
        if not isinstance(obj, dict):
            raise InvalidInput("an anomaly is a map")
        try:
            index = obj.get("index")
            return cls(
                AnomalyKind(obj["kind"]),
                Severity(obj["severity"]),
                str(obj["subject"]),
                str(obj["explanation"]),
                CoValueID(obj["covalue"]) if obj.get("covalue") else None,
                SessionID(obj["session"]) if obj.get("session") else None,
                int(index) if index is not None else None,
                str(obj["peer"]) if obj.get("peer") is not None else None,
                str(obj["namespace"]) if obj.get("namespace") is not None else None,
                str(obj["key"]) if obj.get("key") is not None else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"not an anomaly: {exc}") from exc


def anomalies_from_json(rows: object) -> list[Anomaly]:
    """A list written by :meth:`Anomaly.to_json`; raises :class:`InvalidInput`."""
    if not isinstance(rows, list):
        raise InvalidInput("anomalies are a list")
    return [Anomaly.from_json(row) for row in rows]


# -- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionFacts:
    """One session: its stored ``count``, its first broken link (None: it verifies) and the
    ``madeAt`` of its newest transaction (None: not known)."""

    id: SessionID
    kind: SessionKind
    count: int
    broken: ChainBreak | None = None
    last_made_at: int | None = None


@dataclass(frozen=True, slots=True)
class CoValueFacts:
    id: CoValueID
    type: str
    deleted: bool
    sessions: tuple[SessionFacts, ...] = ()
    invalid: tuple[InvalidTx, ...] = ()
    #: the delete session of the valid tombstone (None: not deleted, or not known)
    tombstone_session: SessionID | None = None


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """One CAS slot's history as kept: ``attempts`` and how many were ``lost`` races."""

    namespace: str
    key: str
    attempts: int
    lost: int


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """The node looked at, and the tool looking (versions and protocol of both)."""

    name: str
    version: str
    proto: int
    local_version: str
    local_proto: int


@dataclass(frozen=True)
class Facts:
    """Everything the rules read. ``peers``/``peer_log``/``matrix``/``node`` are None for a
    target that has none (a store). ``now_ms``: when the facts were gathered."""

    covalues: Sequence[CoValueFacts] = ()
    events: Sequence[SyncEvent] = ()
    peers: Sequence[PeerInfo] | None = None
    peer_log: Sequence[PeerLogEntry] | None = None
    slots: Sequence[SlotFacts] = ()
    matrix: PeersSessionsMatrix | None = None
    node: NodeFacts | None = None
    now_ms: int = 0
    #: CoValues whose forks a conflict session already holds, by (CoValue, origin session)
    recovered: frozenset[tuple[CoValueID, SessionID]] = field(default_factory=frozenset)


# -- the rules ---------------------------------------------------------------------------------

Rule = Callable[[Facts], Iterable[Anomaly]]


def _where(covalue: str, session: str | None = None, index: int | None = None) -> str:
    text = covalue if session is None else f"{covalue}/{session}"
    return text if index is None else f"{text}@{index}"


def _is_signature(text: str) -> bool:
    return "signature" in text.lower() or "bad_signature" in text


def _stored_breaks(facts: Facts, signature: bool) -> Iterable[Anomaly]:
    for cv in facts.covalues:
        for s in cv.sessions:
            if s.broken is None or (s.broken.code == "bad_signature") != signature:
                continue
            kind = AnomalyKind.SIGNATURE_FAILURE if signature else AnomalyKind.CORRUPT_CHAIN
            what = "checkpoint signature does not verify" if signature else f"chain broken ({s.broken.code})"
            yield Anomaly(
                kind,
                Severity.CRITICAL,
                _where(cv.id, s.id, s.broken.index),
                f"stored {what} at row {s.broken.index}: {s.broken.reason}; the session is left out of content",
                cv.id,
                s.id,
                s.broken.index,
            )


def _rejected_events(facts: Facts, signature: bool) -> Iterable[Anomaly]:
    seen: set[tuple[str, str | None, str]] = set()
    for event in facts.events:
        if event.kind not in (SyncEventKind.REJECTED, SyncEventKind.CORRECTION_REJECTED):
            continue
        if _is_signature(event.detail) != signature:
            continue
        key = (event.covalue, event.session, event.peer)
        if key in seen:
            continue
        seen.add(key)
        if signature:
            kind, what = AnomalyKind.SIGNATURE_FAILURE, "with a signature that does not verify"
        else:
            kind, what = AnomalyKind.CORRUPT_CHAIN, "that does not verify"
        sent = "a correction" if event.kind == SyncEventKind.CORRECTION_REJECTED else "content"
        yield Anomaly(
            kind,
            Severity.HIGH,
            _where(event.covalue, event.session),
            f"peer {event.peer} sent {sent} {what} (rejected, nothing changed): {event.detail}",
            event.covalue,
            event.session,
            None,
            event.peer,
        )


def rule_signature_failure(facts: Facts) -> Iterable[Anomaly]:
    yield from _stored_breaks(facts, signature=True)
    yield from _rejected_events(facts, signature=True)


def rule_corrupt_chain(facts: Facts) -> Iterable[Anomaly]:
    yield from _stored_breaks(facts, signature=False)
    yield from _rejected_events(facts, signature=False)


def recovered_forks(covalues: Iterable[CoValueFacts]) -> frozenset[tuple[CoValueID, SessionID]]:
    """(CoValue, origin session) of every conflict session: forks already recovered."""
    out = set()
    for cv in covalues:
        for s in cv.sessions:
            if s.kind is SessionKind.CONFLICT:
                out.add((cv.id, parse_session_id(s.id).base))
    return frozenset(out)


def rule_fork(facts: Facts) -> Iterable[Anomaly]:
    recovered = facts.recovered | recovered_forks(facts.covalues)
    reported: dict[tuple[CoValueID, SessionID | None], list[SyncEvent]] = {}
    for event in facts.events:
        if event.kind in FORK_KINDS:
            reported.setdefault((event.covalue, event.session), []).append(event)
    for (cid, sid), events in sorted(reported.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        last = events[-1]
        match = _AT_INDEX.search(last.detail)
        index = int(match.group(1)) if match else None
        if sid is not None and (cid, sid) in recovered:
            continue  # reported below, as recovered
        yield Anomaly(
            AnomalyKind.FORK,
            Severity.HIGH,
            _where(cid, sid, index),
            f"{len(events)} sync event(s) report this session forked ({last.kind} from {last.peer}: "
            f"{last.detail}); no conflict session holds the divergent edits yet",
            cid,
            sid,
            index,
            last.peer,
        )
    for cid, origin in sorted(recovered):
        cv = next((c for c in facts.covalues if c.id == cid), None)
        conflicts = (
            [s.id for s in cv.sessions if s.kind is SessionKind.CONFLICT and s.id.startswith(origin)] if cv else []
        )
        events = reported.get((cid, origin), [])
        seen = f" ({len(events)} sync event(s) reported it)" if events else ""
        yield Anomaly(
            AnomalyKind.FORK,
            Severity.LOW,
            _where(cid, origin),
            f"a fork of this session was recovered{seen}: the divergent edits are kept in "
            f"{', '.join(conflicts) or 'a conflict session'}",
            cid,
            origin,
        )


def rule_invalid_transactions(facts: Facts) -> Iterable[Anomaly]:
    for cv in facts.covalues:
        if not cv.invalid or cv.deleted:
            continue
        first = cv.invalid[0]
        yield Anomaly(
            AnomalyKind.INVALID_TRANSACTIONS,
            Severity.MEDIUM,
            _where(cv.id, first.session, first.index),
            f"{len(cv.invalid)} transaction(s) kept in the log but not in content; the first: {first.reason}",
            cv.id,
            first.session,
            first.index,
        )


def rule_lagging_peer(facts: Facts) -> Iterable[Anomaly]:
    for peer in facts.peers or ():
        if peer.behind < LAGGING_PEER_TRANSACTIONS and peer.backlog < LAGGING_PEER_BACKLOG:
            continue
        yield Anomaly(
            AnomalyKind.LAGGING_PEER,
            Severity.MEDIUM,
            f"peer {peer.peer_id}",
            f"{peer.behind:,} transactions not acknowledged, {peer.backlog:,} messages waiting "
            f"(account {peer.account}, following {peer.following} CoValues)",
            peer=peer.peer_id,
        )


def rule_lost_peer(facts: Facts) -> Iterable[Anomaly]:
    connected = {p.peer_id for p in facts.peers or ()}
    for entry in facts.peer_log or ():
        if entry.event != PeerEvent.DOWN or entry.peer_id in connected:
            continue
        if not entry.lagged and (entry.close_code is None or entry.close_code in NORMAL_CLOSES):
            continue
        why = (
            "closed as lagged (it did not read fast enough)"
            if entry.lagged
            else f"lost (close code {entry.close_code})"
        )
        yield Anomaly(
            AnomalyKind.LOST_PEER,
            Severity.MEDIUM,
            f"peer {entry.peer_id}",
            f"{why} at {_utc(entry.at_ms)}; it catches up from a fresh exchange if it comes back",
            peer=entry.peer_id,
        )


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def rule_cas_contention(facts: Facts) -> Iterable[Anomaly]:
    for slot in facts.slots:
        if slot.lost < CAS_CONTENTION_LOST:
            continue
        yield Anomaly(
            AnomalyKind.CAS_CONTENTION,
            Severity.LOW,
            f"kv {slot.namespace}/{slot.key}",
            f"{slot.lost} of {slot.attempts} CAS attempts lost a race: several writers contend for this slot",
            namespace=slot.namespace,
            key=slot.key,
        )


def rule_tombstone_unacknowledged(facts: Facts) -> Iterable[Anomaly]:
    matrix = facts.matrix
    if matrix is None or not matrix.available:
        return
    for cv in facts.covalues:
        if not cv.deleted or cv.tombstone_session is None:
            continue
        columns = [c for c in matrix.columns_of(cv.id) if matrix.columns[c].session == cv.tombstone_session]
        for row, peer in enumerate(matrix.peers):
            for column in columns:
                cell = matrix.cell(row, column)
                if cell is None or cell.behind == 0:
                    continue
                yield Anomaly(
                    AnomalyKind.TOMBSTONE_UNACKNOWLEDGED,
                    Severity.MEDIUM,
                    f"{_where(cv.id, cv.tombstone_session)} · peer {peer.peer_id}",
                    f"peer {peer.peer_id} follows this deleted CoValue and has acknowledged "
                    f"{cell.acked} of {matrix.columns[column].count} transaction(s) of its delete session",
                    cv.id,
                    cv.tombstone_session,
                    None,
                    peer.peer_id,
                )


def rule_version_skew(facts: Facts) -> Iterable[Anomaly]:
    node = facts.node
    if node is None:
        return
    if node.proto != node.local_proto:
        yield Anomaly(
            AnomalyKind.VERSION_SKEW,
            Severity.MEDIUM,
            f"node {node.name}",
            f"the node speaks protocol {node.proto}, this tool {node.local_proto}: messages may not mean the same",
            peer=node.name,
        )
    elif node.version != node.local_version:
        yield Anomaly(
            AnomalyKind.VERSION_SKEW,
            Severity.LOW,
            f"node {node.name}",
            f"the node runs Kintsugi {node.version}, this tool {node.local_version}",
            peer=node.name,
        )


def rule_clock_skew(facts: Facts) -> Iterable[Anomaly]:
    if not facts.now_ms:
        return
    for cv in facts.covalues:
        for s in cv.sessions:
            if s.last_made_at is None or s.last_made_at - facts.now_ms <= MAX_CLOCK_SKEW_MS:
                continue
            ahead = (s.last_made_at - facts.now_ms) / 1000
            index = s.count - 1
            yield Anomaly(
                AnomalyKind.CLOCK_SKEW,
                Severity.LOW,
                _where(cv.id, s.id, index),
                f"madeAt of the newest transaction is {ahead:,.0f} s after it can have been received: "
                f"the author's clock runs ahead (it still orders that author's edits first)",
                cv.id,
                s.id,
                index,
            )


#: Every rule, in the order their kinds rank.
RULES: tuple[Rule, ...] = (
    rule_signature_failure,
    rule_fork,
    rule_corrupt_chain,
    rule_invalid_transactions,
    rule_lagging_peer,
    rule_lost_peer,
    rule_cas_contention,
    rule_tombstone_unacknowledged,
    rule_version_skew,
    rule_clock_skew,
)


def find_anomalies(facts: Facts) -> list[Anomaly]:
    """Every anomaly of ``facts``, worst first (see the module docstring for the order)."""
    found = [anomaly for rule in RULES for anomaly in rule(facts)]
    return sorted(found, key=Anomaly.sort_key)


def severity_counts(anomalies: Iterable[Anomaly]) -> dict[str, int]:
    """``{severity: count}`` for every severity, worst first (zeros included)."""
    counts = {str(s): 0 for s in Severity}
    for anomaly in anomalies:
        counts[str(anomaly.severity)] += 1
    return counts
