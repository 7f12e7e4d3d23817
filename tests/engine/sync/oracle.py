"""An edit oracle for the seeded simulator: nothing anyone wrote is lost (issue 15).

Convergence alone (every replica equal to the node) would pass if every replica agreed on a
loss. The oracle keeps its own books, outside the engine: every transaction each writer
created (what its replica accepted from a local write; a write refused with PermissionDenied
is not created) and every acknowledgement the writer received from the node. At heal,
:meth:`EditOracle.check` holds every replica to those books.

**Identity of a created transaction** is ``(CoValue, author account, madeAt, canonical CBOR
of its changes)`` (:class:`TxKey`). Session, index and chain hashes cannot be part of it: a
correction moves an owner's divergent tail into a conflict session, verbatim but at other
positions of another chain (DESIGN §7.1). The meta is left out too: it is the author's claim
about what it had seen of the owner group, which says nothing about what the edit is. One
writer may create two transactions with one identity (the same value for the same key at the
same madeAt), so the books are a multiset and "exactly once" means "as many times as
created".

**Acknowledgements.** A writer learns that the node holds its transactions from the node's
``known`` messages: ``(n, h(n))`` per session. When the writer's own copy of that session has
the same ``h(n)``, the chain hash commits to the whole prefix, so the node holds exactly the
writer's transactions ``[0, n)``, at those positions. Each of the writer's created
transactions found there is acknowledged *at that position*; the node keeps what it
acknowledged first (DESIGN §5), so at heal it must still hold it there.

**The check**, for every CoValue that is not deleted, on every replica: each created
transaction is present exactly once, in its own session or in a conflict session of it; none
is missing, none duplicated, and nothing is there that nobody created; every acknowledged one
is on the node where it was acknowledged; and the content the replica computes equals what
an independent model computes from the oracle's transactions at the places the replica holds
them (CoMap: last writer wins per key by ``(madeAt, sessionID, index, change index)``; group:
role changes applied in that order over the initial admin). The model covers groups whose
roles are only ever granted or raised, which is all the simulator's main run does; when a
created change lowers a role, content is not modeled (the report says so) and only presence
is checked. A deleted CoValue is checked only for its tombstone: every replica holds it as
deleted, with the delete session the oracle saw created and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cbor2

from engine.covalue import CoValueCore
from engine.ids import AccountID, CoValueID, SessionID, is_conflict_of, is_delete_session, session_account
from engine.model.header import GroupRuleset, OwnedByGroup
from engine.model.known_state import KnownState
from engine.model.session_log import SessionLog
from engine.node.facade import LocalNode
from engine.sync.manager import SyncManager

#: At most this many problems are spelled out in a failure message (all are counted).
MAX_PROBLEMS_SHOWN = 25
#: Roles ordered by power, for telling a grant from a demotion.
ROLE_RANK = {"revoked": 0, "reader": 1, "writer": 2, "admin": 3}
#: Roles whose holders' CoMap writes count.
WRITING_ROLES = frozenset({"writer", "admin"})

Place = tuple[SessionID, int]


@dataclass(frozen=True, slots=True)
class TxKey:
    """What identifies a created transaction wherever it ends up (see the module docstring)."""

    covalue: CoValueID
    author: AccountID
    made_at: int
    changes: bytes


@dataclass(slots=True, eq=False)
class Created:
    """One transaction a writer created: where it was made, and where the node acknowledged it
    (None: no acknowledgement received)."""

    key: TxKey
    writer: str
    session: SessionID
    index: int
    changes: list[list[Any]]
    acked_at: Place | None = None

    def fits(self, place: Place) -> bool:
        """May this transaction sit at ``place``: its own session, or a conflict session of it?"""
        return place[0] == self.session or is_conflict_of(place[0], self.session)

    def __str__(self) -> str:
        return (
            f"{self.writer}'s {self.changes} made at {self.key.made_at} "
            f"in {short(self.session)}[{self.index}] of {self.key.covalue}"
        )


@dataclass(slots=True)
class OracleReport:
    """What one check found: the figures and every problem (empty when nothing was lost)."""

    seed: int
    created: int = 0
    acked: int = 0
    moved: int = 0
    tombstones: int = 0
    lost: int = 0
    duplicated: int = 0
    unmodeled: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        line = (
            f"seed {self.seed}: {self.created} created, {self.acked} acked, "
            f"{self.moved} moved to conflict sessions, {self.tombstones} tombstones checked, "
            f"{self.lost} lost, {self.duplicated} duplicated"
        )
        if self.unmodeled:
            line += f" (content not modeled for {', '.join(self.unmodeled)})"
        return line

    def failure(self) -> str:
        """The summary, the problems (the first :data:`MAX_PROBLEMS_SHOWN`) and how to replay."""
        shown = [f"  {p}" for p in self.problems[:MAX_PROBLEMS_SHOWN]]
        if len(self.problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"  ... and {len(self.problems) - MAX_PROBLEMS_SHOWN} more")
        return "\n".join([self.summary, *shown, f"replay with KINTSUGI_SIM_SEED={self.seed}"])


def short(session: str) -> str:
    """A session id without its account (``z3Fq…`` plus any ``!n`` or ``$``): enough to tell the
    sessions of one run apart in a message."""
    return session.split("_session_", 1)[-1]


class EditOracle:
    """The books of one simulated run: created transactions and acknowledgements."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.created: list[Created] = []
        #: the created delete marker of each deleted CoValue
        self.tombstones: dict[CoValueID, Created] = {}
        self._unacked: dict[tuple[str, TxKey], list[Created]] = defaultdict(list)
        #: node positions already credited to an acknowledgement
        self._credited: set[tuple[CoValueID, SessionID, int]] = set()
        #: per (writer, CoValue, session): the acknowledged prefix already scanned
        self._scanned: dict[tuple[str, CoValueID, SessionID], tuple[int, bytes]] = {}
        self._decoded: dict[bytes, tuple[int, bytes, list[list[Any]]]] = {}

    # -- recording ---------------------------------------------------------------------------

    def watch(self, writer: str, replica: LocalNode, manager: SyncManager) -> None:
        """Hear every known state ``writer``'s sync manager receives (from the node, its only
        peer), keeping any listener already installed."""
        previous = manager.on_known

        def on_known(peer_id: str, known: KnownState) -> None:
            self.acknowledged(writer, replica, known)
            if previous is not None:
                previous(peer_id, known)

        manager.on_known = on_known

    @contextmanager
    def writing(
        self, writer: str, replica: LocalNode, covalue: CoValueID, intent: list[list[Any]] | None
    ) -> Iterator[None]:
        """Around one local write of ``writer`` to ``covalue``: records what its replica accepted
        (transactions that appeared in its own account's sessions), even when the write then
        raised. ``intent`` is the changes the writer asked for (None: not checked)."""
        account = replica.account_id
        core = replica.get_or_none(covalue)
        before = {} if core is None else {sid: log.count for sid, log in core.sessions.items() if _owns(account, sid)}
        try:
            yield
        finally:
            core = replica.get_or_none(covalue)
            for sid, log in [] if core is None else list(core.sessions.items()):
                if not _owns(account, sid):
                    continue
                for index in range(before.get(sid, 0), log.count):
                    self._record(writer, covalue, sid, index, log.txs[index], intent=intent)

    def _record(
        self, writer: str, covalue: CoValueID, sid: SessionID, index: int, tx: bytes, *, intent: list[list[Any]] | None
    ) -> None:
        key = self.key_of(covalue, sid, tx)
        created = Created(key, writer, sid, index, self._decoded[tx][2])
        if intent is not None and created.changes != intent:
            raise AssertionError(f"seed {self.seed}: {writer} asked for {intent} but its replica wrote {created}")
        self.created.append(created)
        self._unacked[(writer, key)].append(created)
        if is_delete_session(sid):
            self.tombstones[covalue] = created

    def acknowledged(self, writer: str, replica: LocalNode, known: KnownState) -> None:
        """``writer`` received the node's known state ``known``: credit each of its created
        transactions that the node provably holds (see the module docstring)."""
        cid = known.id
        core = replica.get_or_none(cid)
        if core is None:
            return
        for sid, (n, head) in known.sessions.items():
            log = core.sessions.get(sid)
            if not _owns(replica.account_id, sid) or log is None or not 0 < n <= log.count or log.hash_at(n) != head:
                continue
            start = 0
            scanned = self._scanned.get((writer, cid, sid))
            if scanned is not None and scanned[0] <= log.count and log.hash_at(scanned[0]) == scanned[1]:
                if scanned[0] >= n:
                    continue  # nothing this writer has not already been told
                start = scanned[0]
            self._scanned[(writer, cid, sid)] = (n, head)
            for index in range(start, n):
                if (cid, sid, index) in self._credited:
                    continue
                waiting = self._unacked.get((writer, self.key_of(cid, sid, log.txs[index])))
                match = next((c for c in waiting or () if c.fits((sid, index))), None)
                if match is not None and waiting is not None:
                    waiting.remove(match)
                    match.acked_at = (sid, index)
                    self._credited.add((cid, sid, index))

    # -- identities --------------------------------------------------------------------------

    def key_of(self, covalue: CoValueID, sid: SessionID, tx: bytes) -> TxKey:
        """The identity of transaction bytes ``tx`` held in ``sid`` of ``covalue``."""
        decoded = self._decoded.get(tx)
        if decoded is None:
            # Decoded here with cbor2 itself, not the engine's decoder: the books must not
            # share the engine's mistakes.
            body = cbor2.loads(tx)
            decoded = self._decoded[tx] = (body["t"], cbor2.dumps(body["c"], canonical=True), body["c"])
        return TxKey(covalue, session_account(sid), decoded[0], decoded[1])

    # -- the check at heal -------------------------------------------------------------------

    def check(self, replicas: Mapping[str, LocalNode], node: str, covalues: Iterable[CoValueID]) -> OracleReport:
        """Hold every replica (``node`` names the serving node among them) to the books, for
        ``covalues``. Returns the report; :meth:`verify` raises on a failed one."""
        report = OracleReport(self.seed, created=len(self.created))
        report.acked = sum(c.acked_at is not None for c in self.created)
        lost: set[Created] = set()
        by_covalue: dict[CoValueID, list[Created]] = defaultdict(list)
        for created in self.created:
            by_covalue[created.key.covalue].append(created)
        for cid in covalues:
            if cid in self.tombstones:
                report.tombstones += 1
                self._check_tombstone(report, replicas, self.tombstones[cid])
                continue
            roles = self._model_roles(cid, replicas[node], by_covalue, report)
            for name, replica in replicas.items():
                core = replica.get_or_none(cid)
                if core is None:
                    report.problems.append(f"{name} lacks {cid} altogether")
                    lost.update(by_covalue[cid])
                    continue
                if core.deleted:
                    report.problems.append(f"{name} holds {cid} as deleted, but no writer deleted it")
                    continue
                placed = self._match(report, name, core.sessions, by_covalue[cid], lost)
                if name == node:
                    report.moved += sum(sid != c.session for c, (sid, _) in placed.items())
                    self._check_acked(report, name, core.sessions, by_covalue[cid], lost)
                if roles is not None:
                    self._check_content(report, name, core, placed, roles)
        report.lost = len(lost)
        return report

    def verify(self, replicas: Mapping[str, LocalNode], node: str, covalues: Iterable[CoValueID]) -> OracleReport:
        """:meth:`check`, raising AssertionError with :meth:`OracleReport.failure` unless ok."""
        report = self.check(replicas, node, covalues)
        if not report.ok:
            raise AssertionError(report.failure())
        return report

    def _match(
        self,
        report: OracleReport,
        name: str,
        sessions: Mapping[SessionID, SessionLog],
        created: list[Created],
        lost: set[Created],
    ) -> dict[Created, Place]:
        """Where ``name`` holds each created transaction of one CoValue; records every one
        missing, duplicated or never created as a problem."""
        held: dict[TxKey, list[Place]] = defaultdict(list)
        for sid, log in sessions.items():
            for index, tx in enumerate(log.txs):
                held[self.key_of(log.covalue, sid, tx)].append((sid, index))
        wanted: dict[TxKey, list[Created]] = defaultdict(list)
        for c in created:
            wanted[c.key].append(c)
        placed: dict[Created, Place] = {}
        for key, places in held.items():
            owners = wanted.pop(key, [])
            free = list(places)
            # where it was made first, then any conflict session of that session
            for c in owners:
                if (c.session, c.index) in free:
                    free.remove((c.session, c.index))
                    placed[c] = (c.session, c.index)
            for c in owners:
                if c not in placed:
                    spot = next((p for p in free if c.fits(p)), None)
                    if spot is not None:
                        free.remove(spot)
                        placed[c] = spot
            for c in owners:
                if c not in placed:
                    lost.add(c)
                    report.problems.append(f"{name} lacks {c}")
            for sid, index in free:
                where = f"{short(sid)}[{index}]"
                fitting = [c for c in owners if c.fits((sid, index))]
                if fitting:
                    report.duplicated += 1
                    report.problems.append(f"{name} holds a duplicate at {where} of {fitting[0]}")
                elif owners:
                    report.problems.append(
                        f"{name} holds at {where}, outside its session and that session's conflict sessions, "
                        f"{owners[0]}"
                    )
                else:
                    author = key.author[:12]
                    report.problems.append(
                        f"{name} holds at {where} of {key.covalue} a transaction nobody created "
                        f"(by {author}…, made at {key.made_at})"
                    )
        for owners in wanted.values():
            for c in owners:
                lost.add(c)
                report.problems.append(f"{name} lacks {c}")
        return placed

    def _check_acked(
        self,
        report: OracleReport,
        name: str,
        sessions: Mapping[SessionID, SessionLog],
        created: list[Created],
        lost: set[Created],
    ) -> None:
        for c in created:
            if c.acked_at is None:
                continue
            sid, index = c.acked_at
            log = sessions.get(sid)
            if log is None or index >= log.count or self.key_of(c.key.covalue, sid, log.txs[index]) != c.key:
                lost.add(c)
                report.problems.append(
                    f"{name} no longer holds at {short(sid)}[{index}], where it acknowledged it to its writer, {c}"
                )

    def _check_tombstone(self, report: OracleReport, replicas: Mapping[str, LocalNode], marker: Created) -> None:
        cid = marker.key.covalue
        for name, replica in replicas.items():
            core = replica.get_or_none(cid)
            if core is None or not core.deleted:
                state = "lacks it" if core is None else "holds it alive"
                report.problems.append(f"{name} {state}, but {cid} was deleted by {marker}")
                continue
            log = core.sessions.get(marker.session)
            if log is None or log.count != 1 or self.key_of(cid, marker.session, log.txs[0]) != marker.key:
                report.problems.append(f"{name} holds {cid} deleted without the delete session of {marker}")
            others = sorted(short(sid) for sid in core.sessions if not is_delete_session(sid))
            if others:
                report.problems.append(f"{name} still holds sessions {others} of deleted {cid}")

    # -- the independent content model -------------------------------------------------------

    def _model_roles(
        self,
        cid: CoValueID,
        node: LocalNode,
        by_covalue: Mapping[CoValueID, list[Created]],
        report: OracleReport,
    ) -> dict[AccountID, str] | None:
        """The roles of the group that decides who writes ``cid`` (``cid`` itself for a
        group), from the oracle's role changes in ``madeAt`` order; None when the model does
        not apply (a role was lowered) or ``cid`` has no owner group."""
        core = node.get_or_none(cid)
        if core is None:
            return None
        ruleset = core.header.ruleset
        group = None
        if isinstance(ruleset, GroupRuleset):
            group = cid
        elif isinstance(ruleset, OwnedByGroup):
            group = ruleset.group
        owner = node.get_or_none(group) if group is not None else None
        if owner is None or not isinstance(owner.header.ruleset, GroupRuleset):
            return None
        roles: dict[AccountID, str] = {owner.header.ruleset.initial_admin: "admin"}
        changes = [(c.key.made_at, ci, ch) for c in by_covalue.get(owner.id, []) for ci, ch in enumerate(c.changes)]
        for _, _, (_, account, role) in sorted(changes, key=lambda item: item[:2]):
            if ROLE_RANK[role] < ROLE_RANK.get(roles.get(account, "revoked"), 0):
                if owner.id not in report.unmodeled:
                    report.unmodeled.append(owner.id)
                return None
            roles[AccountID(account)] = role
        return roles

    def _check_content(
        self,
        report: OracleReport,
        name: str,
        core: CoValueCore,
        placed: Mapping[Created, Place],
        roles: dict[AccountID, str],
    ) -> None:
        """Compare what ``name`` computes for ``core`` with the model over the placed
        transactions (a grant-only group: applied in order; a CoMap: last writer wins)."""
        ruleset = core.header.ruleset
        if isinstance(ruleset, GroupRuleset):
            model: dict[Any, Any] = {ruleset.initial_admin: "admin"}
            for _order, (_, account, role) in sorted(_ordered_changes(placed)):
                model[account] = role
            computed: dict[Any, Any] = dict(core.group().roles)
        else:
            entries: dict[str, tuple[tuple[int, str, int, int], bool, Any]] = {}
            for order, change in _ordered_changes(placed, author_roles=roles):
                key = change[1]
                if key not in entries or entries[key][0] < order:
                    entries[key] = (order, change[0] == "set", change[2] if change[0] == "set" else None)
            model = {k: v for k, (_, present, v) in sorted(entries.items()) if present}
            computed = dict(core.comap().items())
        if computed != model:
            differing = sorted(k for k in model.keys() | computed.keys() if model.get(k) != computed.get(k))
            detail = ", ".join(f"{k}: {computed.get(k)!r} (model {model.get(k)!r})" for k in differing[:5])
            report.problems.append(f"{name} computes other content for {core.id} than the model: {detail}")


def _ordered_changes(
    placed: Mapping[Created, Place], author_roles: Mapping[AccountID, str] | None = None
) -> list[tuple[tuple[int, str, int, int], list[Any]]]:
    """Every change of the placed transactions with its order key ``(madeAt, sessionID,
    index, change index)``, leaving out those whose author may not write (when
    ``author_roles`` is given)."""
    out: list[tuple[tuple[int, str, int, int], list[Any]]] = []
    for c, (sid, index) in placed.items():
        if author_roles is not None and author_roles.get(c.key.author) not in WRITING_ROLES:
            continue
        out.extend(((c.key.made_at, sid, index, ci), change) for ci, change in enumerate(c.changes))
    return out


def _owns(account: AccountID, session: str) -> bool:
    return session.startswith(account + "_")
