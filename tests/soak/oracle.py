"""The soak's oracle: given what every client journaled (:mod:`tests.soak.journal`) and what
every store holds, is anything lost?

The checks, each a pure function of that data (the planted-loss tests feed them directly):

- :func:`check_acks` — every acknowledgement holds on the node: it has at least ``n``
  transactions of the session and its chain hash at ``n`` is the acknowledged one (so those
  ``n`` are exactly the client's). Run at every node kill, on the dead node's store, and at
  the end.
- :func:`check_kept` — a client's store holds every transaction it journaled as durable (in
  its own session, or moved into one of that session's conflict sessions). Run at every
  client kill and at the end.
- :func:`check_soak` — the end: the written set is every journaled transaction plus every
  transaction the clients' stores hold in their own sessions (a kill between a commit and its
  journal record loses the record, not the transaction). Each written transaction is on the
  node exactly once — at its own session and index, or moved into a conflict session of that
  session — with the same ``madeAt`` and changes; an acknowledged one was never moved; the
  node holds no transaction nobody wrote; every client holds exactly the node's sessions; and
  the content the node computes, and every client's, equals the content an independent model
  computes from the written set: last writer wins per key by ``(madeAt, session, index)``.

A transaction is named by its token (``(label, life, n)``, carried in its first change), so
it is recognised wherever it ends up. ``lost`` counts the transactions some check found
missing, duplicated, altered, misplaced or not where an acknowledgement put them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey, chain_base, chain_extend
from engine.ids import CoValueID, is_conflict_of, new_session_id
from engine.model.transaction import decode_transaction, encode_transaction
from engine.node.facade import LocalNode
from engine.storage import open_store
from tests.soak.journal import Journal, Token, Write, token_of

#: Kinds of problem that lose the transactions they name (the others fail the run too).
LOSSES = frozenset({"missing", "duplicated", "altered", "misplaced", "ack_broken", "ack_moved", "lost_locally"})


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    detail: str
    tokens: frozenset[Token] = frozenset()

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(slots=True)
class Replica:
    """What one store holds of the shared CoMaps: every session's signed transactions, the
    content the engine computes, and the sessions that failed verification."""

    name: str
    sessions: dict[str, dict[str, list[bytes]]]
    content: dict[str, dict[str, Any]]
    corrupt: dict[str, list[str]] = field(default_factory=dict)


def read_replica(name: str, store: Path, covalues: Iterable[str]) -> Replica:
    """Read ``covalues`` from the store at ``store`` without writing to it (a replica of a
    throwaway account, on no leased session; the owner groups load as needed)."""
    key = AccountKey.generate()
    node = LocalNode(key, open_store(store, readonly=True), session=new_session_id(key.account_id))
    try:
        replica = Replica(name, {}, {})
        for cid in covalues:
            core = node.get_or_none(CoValueID(cid))
            if core is None:
                replica.sessions[cid] = {}
                replica.content[cid] = {}
                continue
            replica.sessions[cid] = {sid: list(log.txs[: log.signed_count]) for sid, log in core.sessions.items()}
            replica.content[cid] = core.comap().items()
            if core.corrupt:
                replica.corrupt[cid] = sorted(core.corrupt)
        return replica
    finally:
        node.close()


def read_sessions(name: str, store: Path, covalues: Iterable[str], wanted: Callable[[str], bool]) -> Replica:
    """Only the ``wanted`` sessions of ``covalues``, read as stored (unverified, no content):
    the checks at kills need a few sessions, and :func:`read_replica` verifies everything
    at the end."""
    opened = open_store(store, readonly=True)
    try:
        replica = Replica(name, {}, {})
        for cid in covalues:
            held = replica.sessions.setdefault(cid, {})
            for row in opened.stored_sessions(CoValueID(cid)):
                if wanted(row.session):
                    log = opened.load_session(CoValueID(cid), row.session)
                    held[row.session] = list(log.txs[: log.signed_count])
        return replica
    finally:
        opened.close()


def read_heads(store: Path, covalues: Iterable[str]) -> dict[str, dict[str, tuple[int, bytes]]]:
    """Count and head of every stored session of ``covalues`` (cheap: no transaction read)."""
    opened = open_store(store, readonly=True)
    try:
        return {
            cid: {row.session: (row.count, row.head) for row in opened.stored_sessions(CoValueID(cid))}
            for cid in covalues
        }
    finally:
        opened.close()


@dataclass(frozen=True, slots=True)
class Place:
    """Where a transaction is found in a replica."""

    covalue: str
    session: str
    index: int
    made_at: int
    changes: list[list[Any]]


def places(replica: Replica) -> tuple[dict[Token, list[Place]], list[Place]]:
    """Every soak transaction of ``replica`` by token, and the transactions without one."""
    found: dict[Token, list[Place]] = defaultdict(list)
    untokened = []
    for cid, sessions in replica.sessions.items():
        for sid, txs in sessions.items():
            for index, raw in enumerate(txs):
                tx = decode_transaction(raw)
                place = Place(cid, sid, index, tx.made_at, tx.changes)
                token = token_of(tx.changes)
                if token is None:
                    untokened.append(place)
                else:
                    found[token].append(place)
    return found, untokened


def origin_of(session: str) -> str:
    """The active session a conflict session was split off (itself for an active one)."""
    return session.split("!", 1)[0]


def fits(place: Place, write: Write) -> bool:
    """Is ``place`` where ``write`` may be: its own session and index, or a conflict session
    of its session?"""
    if place.covalue != write.covalue:
        return False
    if place.session == write.session and place.index == write.index:
        return True
    return is_conflict_of(place.session, origin_of(write.session))


def owned(sid: str, sessions: Iterable[str]) -> bool:
    return any(sid == s or is_conflict_of(sid, s) for s in sessions)


def chain_hash(covalue: str, session: str, txs: list[bytes], n: int) -> bytes:
    """``h(n)`` of a session holding ``txs``."""
    base = chain_base(covalue, session)
    return chain_extend(base, txs[:n])[-1] if n else base


def check_acks(journals: Iterable[Journal], node: Replica) -> list[Problem]:
    """Every acknowledgement journaled so far holds on ``node``."""
    problems = []
    for journal in journals:
        writes = {(w.covalue, w.session, w.index): w for w in journal.writes}
        best: dict[tuple[str, str], tuple[int, bytes]] = {}
        for ack in journal.acks:
            key = (ack.covalue, ack.session)
            if ack.count > best.get(key, (0, b""))[0]:
                best[key] = (ack.count, ack.head)
        for (cid, sid), (n, head) in sorted(best.items()):
            txs = node.sessions.get(cid, {}).get(sid, [])
            if len(txs) >= n and chain_hash(cid, sid, txs, n) == head:
                continue
            lost = set()
            for index in range(n):
                write = writes.get((cid, sid, index))
                if write is not None and (
                    index >= len(txs) or token_of(decode_transaction(txs[index]).changes) != write.token
                ):
                    lost.add(write.token)
            detail = f"{journal.client}: node holds {len(txs)} of {cid}/{sid}, acknowledged {n} at {head.hex()[:16]}"
            problems.append(Problem("ack_broken", detail, frozenset(lost)))
    return problems


def check_kept(journal: Journal, store: Replica) -> list[Problem]:
    """``store`` (the client's own) holds every transaction ``journal`` says is durable."""
    moved: list[Write] = []
    for write in journal.writes:
        txs = store.sessions.get(write.covalue, {}).get(write.session, [])
        if write.index >= len(txs) or txs[write.index] != encode_transaction(write.made_at, write.changes):
            moved.append(write)  # not where it was written: look further
    if not moved:
        return []
    found, _ = places(store)
    lost = set()
    for write in moved:
        if not any(fits(place, write) for place in found.get(write.token, [])):
            lost.add(write.token)
    if not lost:
        return []
    example = min(lost)
    return [
        Problem(
            "lost_locally", f"{journal.client}: {len(lost)} durable transactions gone, e.g. {example}", frozenset(lost)
        )
    ]


def model_content(entries: Iterable[tuple[int, str, int, list[list[Any]]]]) -> dict[str, Any]:
    """CoMap content from ``(madeAt, session, index, changes)``: last writer wins per key in
    the order ``(madeAt, session, index)``, changes of one transaction in order."""
    items: dict[str, Any] = {}
    for _t, _s, _i, changes in sorted(entries, key=lambda e: (e[0], e[1], e[2])):
        for change in changes:
            if change[0] == "set":
                items[change[1]] = change[2]
            elif change[0] == "del":
                items.pop(change[1], None)
    return items


@dataclass(slots=True)
class Verdict:
    """What the oracle found."""

    written: int
    acknowledged: int
    kills: int
    faults: int
    problems: list[Problem]

    @property
    def lost(self) -> int:
        tokens: set[Token] = set()
        for problem in self.problems:
            if problem.kind in LOSSES:
                tokens |= problem.tokens
        return len(tokens)

    @property
    def line(self) -> str:
        return (
            f"soak: {self.written} written, {self.acknowledged} acknowledged, {self.kills} kills, "
            f"{self.faults} faults, {self.lost} lost"
        )

    def report(self, limit: int = 40) -> str:
        shown = [str(p) for p in self.problems[:limit]]
        more = len(self.problems) - len(shown)
        return "\n".join([self.line, *shown, *([f"... and {more} more"] if more > 0 else [])])


def written_set(journals: dict[str, Journal], clients: dict[str, Replica]) -> dict[Token, Write]:
    """Every journaled transaction, plus those a client's store holds in its own sessions
    that its journal missed (placed where the store holds them)."""
    written: dict[Token, Write] = {}
    for journal in journals.values():
        for write in journal.writes:
            written.setdefault(write.token, write)
    for label, replica in sorted(clients.items()):
        sessions = journals[label].sessions
        found, _ = places(replica)
        for token, where in sorted(found.items()):
            for place in where:
                if token not in written and owned(place.session, sessions):
                    written[token] = Write(
                        label, place.covalue, place.session, place.index, place.made_at, place.changes
                    )
    return written


def check_soak(
    journals: dict[str, Journal],
    node: Replica,
    clients: dict[str, Replica],
    *,
    kills: int,
    faults: int,
    earlier: Iterable[Problem] = (),
) -> Verdict:
    """The end-of-soak verdict (see the module docstring); ``earlier`` are the problems the
    checks at kills found."""
    problems = list(earlier)
    written = written_set(journals, clients)
    on_node, untokened = places(node)
    acked_counts = {label: j.acked_counts() for label, j in journals.items()}
    acknowledged = 0
    for token, write in sorted(written.items()):
        acked = acked_counts[write.client].get((write.covalue, write.session), 0) > write.index
        acknowledged += acked
        where = on_node.get(token, [])
        name = f"{token} ({write.covalue}/{write.session}[{write.index}])"
        if not where:
            problems.append(Problem("missing", f"{name} is not on the node", frozenset({token})))
            continue
        if len(where) > 1:
            at = ", ".join(f"{p.session}[{p.index}]" for p in where)
            problems.append(
                Problem("duplicated", f"{name} is on the node {len(where)} times: {at}", frozenset({token}))
            )
            continue
        place = where[0]
        if place.made_at != write.made_at or place.changes != write.changes or place.covalue != write.covalue:
            problems.append(Problem("altered", f"{name} differs on the node: {place}", frozenset({token})))
        elif not fits(place, write):
            problems.append(Problem("misplaced", f"{name} is at {place.session}[{place.index}]", frozenset({token})))
        elif acked and (place.session, place.index) != (write.session, write.index):
            problems.append(Problem("ack_moved", f"{name} was acknowledged, then moved", frozenset({token})))
    for token in sorted(set(on_node) - set(written)):
        problems.append(Problem("phantom", f"the node holds {token}, which no client wrote"))
    for place in untokened:
        problems.append(Problem("phantom", f"the node holds an unknown transaction at {place.session}[{place.index}]"))
    problems += check_acks(journals.values(), node)
    for label, replica in sorted(clients.items()):
        problems += check_kept(journals[label], replica)
    for journal in journals.values():
        for odd in journal.odd:
            problems.append(Problem("fork", f"{journal.client}: the node announced another history: {odd}"))
    for name, replica in [("node", node), *sorted(clients.items())]:
        for cid, sessions in replica.corrupt.items():
            problems.append(Problem("corrupt", f"{name}: {cid} has corrupt sessions {sessions}"))
    problems += check_content(written, on_node, node, clients)
    return Verdict(len(written), acknowledged, kills, faults, problems)


def check_content(
    written: dict[Token, Write], on_node: dict[Token, list[Place]], node: Replica, clients: dict[str, Replica]
) -> list[Problem]:
    """The node's content is the model's; every client holds the node's sessions and content."""
    problems = []
    by_covalue: dict[str, list[tuple[int, str, int, list[list[Any]]]]] = defaultdict(list)
    for token in written:
        for place in on_node.get(token, [])[:1]:
            by_covalue[place.covalue].append((place.made_at, place.session, place.index, place.changes))
    for cid, content in sorted(node.content.items()):
        model = model_content(by_covalue.get(cid, []))
        if content != model:
            diff = sorted(k for k in set(content) | set(model) if content.get(k) != model.get(k))
            problems.append(Problem("content", f"node's {cid} differs from the model at keys {diff}"))
    for label, replica in sorted(clients.items()):
        for cid, sessions in sorted(node.sessions.items()):
            theirs = replica.sessions.get(cid, {})
            if theirs != sessions:
                differ = sorted(
                    f"{sid}: node {len(sessions.get(sid, []))}, client {len(theirs.get(sid, []))}"
                    for sid in set(sessions) | set(theirs)
                    if sessions.get(sid) != theirs.get(sid)
                )
                problems.append(Problem("diverged", f"{label} holds other sessions of {cid} than the node: {differ}"))
            if replica.content.get(cid) != node.content[cid]:
                problems.append(Problem("content", f"{label}'s content of {cid} differs from the node's"))
    return problems
