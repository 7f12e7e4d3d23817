"""Anomaly rules (engine.diagnostics.anomalies): each rule has a case that raises it and one
that does not; the ranking; the JSON form."""

from __future__ import annotations

from engine.content.common import InvalidTx
from engine.diagnostics.anomalies import (
    CAS_CONTENTION_LOST,
    LAGGING_PEER_TRANSACTIONS,
    MAX_CLOCK_SKEW_MS,
    Anomaly,
    AnomalyKind,
    CoValueFacts,
    Facts,
    NodeFacts,
    SessionFacts,
    Severity,
    SlotFacts,
    anomalies_from_json,
    find_anomalies,
    severity_counts,
)
from engine.diagnostics.chain_verify import ChainBreak
from engine.diagnostics.matrix import MatrixCell, MatrixColumn, MatrixPeer, PeersSessionsMatrix
from engine.ids import CoValueID, SessionID, SessionKind
from engine.sync.events import PeerEvent, PeerLogEntry, SyncEvent, SyncEventKind
from engine.sync.peers import PeerInfo
from tests.engine.diagnostics._build import key, session_of

CID = CoValueID("co_z2JdQcVpyoMxwa65z8o6kmq44WACb")
WHO = key(1)
SID = session_of(WHO)
CONFLICT = SessionID(SID + "!")
DELETE = SessionID(f"{WHO.account_id}_session_d2UeKBqK5pHbm$")
NOW = 1_800_000_000_000


def session(sid: SessionID = SID, kind: SessionKind = SessionKind.ACTIVE, **kw: object) -> SessionFacts:
    return SessionFacts(sid, kind, 10, **kw)  # type: ignore[arg-type]


def covalue(*sessions: SessionFacts, **kw: object) -> CoValueFacts:
    return CoValueFacts(CID, "comap", kw.pop("deleted", False), sessions, **kw)  # type: ignore[arg-type]


def kinds(facts: Facts) -> list[tuple[str, str]]:
    return [(str(a.kind), str(a.severity)) for a in find_anomalies(facts)]


def peer(peer_id: str = "in:1", behind: int = 0, backlog: int = 0) -> PeerInfo:
    return PeerInfo(peer_id, "in", WHO.account_id, "downstream", False, 1, behind, 0, 0, backlog)


def test_signature_failure_stored_and_from_a_peer() -> None:
    broken = session(broken=ChainBreak(99, "bad_signature", "signature of checkpoint 100 does not verify"))
    found = find_anomalies(Facts(covalues=[covalue(broken)]))
    assert [(a.kind, a.severity, a.covalue, a.session, a.index) for a in found] == [
        (AnomalyKind.SIGNATURE_FAILURE, Severity.CRITICAL, CID, SID, 99)
    ]
    event = SyncEvent(SyncEventKind.REJECTED, "in:4", CID, SID, "bad_signature: checkpoint 5 signature")
    assert kinds(Facts(events=[event])) == [("signature_failure", "high")]
    assert kinds(Facts(covalues=[covalue(session())])) == []


def test_corrupt_chain_stored_and_from_a_peer() -> None:
    broken = session(broken=ChainBreak(7, "broken_chain", "stored hash does not match"))
    assert kinds(Facts(covalues=[covalue(broken)])) == [("corrupt_chain", "critical")]
    event = SyncEvent(SyncEventKind.REJECTED, "in:4", CID, SID, "broken_chain at 3")
    assert kinds(Facts(events=[event])) == [("corrupt_chain", "high")]
    other = SyncEvent(SyncEventKind.CORRECTION_SENT, "in:4", CID, SID, "from 3 to 9")
    assert kinds(Facts(events=[other])) == []


def test_fork_unrepaired_is_high_recovered_is_low() -> None:
    event = SyncEvent(SyncEventKind.FORK_DETECTED, "in:2", CID, SID, "content diverges at 42")
    (found,) = find_anomalies(Facts(covalues=[covalue(session())], events=[event]))
    assert (found.kind, found.severity, found.index, found.peer) == (AnomalyKind.FORK, Severity.HIGH, 42, "in:2")
    recovered = covalue(session(), session(CONFLICT, SessionKind.CONFLICT))
    (low,) = find_anomalies(Facts(covalues=[recovered], events=[event]))
    assert (low.severity, low.session) == (Severity.LOW, SID) and CONFLICT in low.explanation
    assert kinds(Facts(covalues=[covalue(session())])) == []


def test_invalid_transactions() -> None:
    invalid = (InvalidTx(SID, 3, "author is not a writer"),)
    (found,) = find_anomalies(Facts(covalues=[covalue(session(), invalid=invalid)]))
    assert (found.kind, found.severity, found.index) == (AnomalyKind.INVALID_TRANSACTIONS, Severity.MEDIUM, 3)
    assert kinds(Facts(covalues=[covalue(session(), invalid=invalid, deleted=True)])) == []
    assert kinds(Facts(covalues=[covalue(session())])) == []


def test_lagging_peer() -> None:
    assert kinds(Facts(peers=[peer(behind=LAGGING_PEER_TRANSACTIONS)])) == [("lagging_peer", "medium")]
    assert kinds(Facts(peers=[peer(behind=LAGGING_PEER_TRANSACTIONS - 1)])) == []


def test_lost_peer() -> None:
    lagged = PeerLogEntry(NOW, "in:7", PeerEvent.DOWN, 4412, True)
    dropped = PeerLogEntry(NOW, "in:8", PeerEvent.DOWN, 1006, False)
    normal = PeerLogEntry(NOW, "in:9", PeerEvent.DOWN, 1000, False)
    up = PeerLogEntry(NOW, "in:10", PeerEvent.UP)
    found = find_anomalies(Facts(peers=[], peer_log=[lagged, dropped, normal, up]))
    assert [(a.kind, a.peer) for a in found] == [(AnomalyKind.LOST_PEER, "in:7"), (AnomalyKind.LOST_PEER, "in:8")]
    assert kinds(Facts(peers=[], peer_log=[normal, up])) == []


def test_cas_contention() -> None:
    hot = SlotFacts("acc_zX", "prefs", 10, CAS_CONTENTION_LOST)
    (found,) = find_anomalies(Facts(slots=[hot]))
    assert (found.kind, found.namespace, found.key) == (AnomalyKind.CAS_CONTENTION, "acc_zX", "prefs")
    assert kinds(Facts(slots=[SlotFacts("acc_zX", "prefs", 10, CAS_CONTENTION_LOST - 1)])) == []


def test_tombstone_not_yet_acknowledged() -> None:
    deleted = covalue(session(DELETE, SessionKind.DELETE), deleted=True, tombstone_session=DELETE)
    peers = (MatrixPeer("in:1", WHO.account_id, "downstream"), MatrixPeer("in:2", WHO.account_id, "downstream"))
    columns = (MatrixColumn(CID, DELETE, 1),)
    pending = PeersSessionsMatrix(peers, columns, {(0, 0): MatrixCell(1, 0), (1, 0): MatrixCell(0, 1)})
    (found,) = find_anomalies(Facts(covalues=[deleted], matrix=pending))
    assert (found.kind, found.peer, found.session) == (AnomalyKind.TOMBSTONE_UNACKNOWLEDGED, "in:2", DELETE)
    acked = PeersSessionsMatrix(peers, columns, {(0, 0): MatrixCell(1, 0), (1, 0): MatrixCell(1, 0)})
    assert kinds(Facts(covalues=[deleted], matrix=acked)) == []
    assert kinds(Facts(covalues=[deleted])) == []  # no matrix: nothing known


def test_version_skew() -> None:
    assert kinds(Facts(node=NodeFacts("n", "9.9", 1, "0.1", 1))) == [("version_skew", "low")]
    assert kinds(Facts(node=NodeFacts("n", "0.1", 2, "0.1", 1))) == [("version_skew", "medium")]
    assert kinds(Facts(node=NodeFacts("n", "0.1", 1, "0.1", 1))) == []


def test_clock_skew() -> None:
    ahead = session(last_made_at=NOW + MAX_CLOCK_SKEW_MS + 60_000)
    (found,) = find_anomalies(Facts(covalues=[covalue(ahead)], now_ms=NOW))
    assert (found.kind, found.index) == (AnomalyKind.CLOCK_SKEW, 9) and "360 s" in found.explanation
    assert kinds(Facts(covalues=[covalue(session(last_made_at=NOW + MAX_CLOCK_SKEW_MS))], now_ms=NOW)) == []
    assert kinds(Facts(covalues=[covalue(session(last_made_at=NOW - 10**9))], now_ms=NOW)) == []


def test_ranked_by_severity_then_rule_and_round_trip_json() -> None:
    conflict = session(CONFLICT, SessionKind.CONFLICT)
    facts = Facts(
        covalues=[covalue(session(broken=ChainBreak(0, "broken_chain", "x")), conflict)],
        slots=[SlotFacts("acc_zX", "k", 9, 9)],
        peers=[peer(behind=5000)],
        node=NodeFacts("n", "9.9", 1, "0.1", 1),
    )
    found = find_anomalies(facts)
    assert [a.severity.rank for a in found] == sorted((a.severity.rank for a in found), reverse=True)
    assert found[0].kind is AnomalyKind.CORRUPT_CHAIN
    assert anomalies_from_json([a.to_json() for a in found]) == found
    assert severity_counts(found) == {"critical": 1, "high": 0, "medium": 1, "low": 3}
    assert set(Anomaly.from_json(found[0].to_json()).to_json()) >= {"kind", "severity", "subject", "explanation"}
