"""REPLACE recovery on a node's replica (DESIGN §7.2): its local side and the atomic apply.

The exchange with the chosen peer (:mod:`engine.recovery.exchange`) and the plan
(:mod:`engine.recovery.plan`) are pure; this module reads the replica's side of a scope and
applies a plan to the replica and its store.

Rules kept here:

- **The plan applied is the plan shown.** :func:`apply_recovery` computes the plan again from
  the replica as it is at that moment and refuses (``recovery_failed``, nothing changed) when
  its hash differs from the one the operator confirmed.
- **All or nothing.** Every replacement of the scope, the receipt and the audit record are one
  store transaction, ordered after the node's queued commits. A crash leaves the old state or
  the new one; an applied recovery applied again plans nothing and changes nothing.
- **REPLACE, never union; derived state rebuilt.** Each CoValue in the plan is dropped from
  memory after the write and loaded again from the store, so its content, roles, ownership
  and tombstone are computed afresh, never merged into what was there.
- **No signed transaction lost without a copy.** Owned divergent tails become conflict
  sessions re-signed by the operator (original ``madeAt`` kept: the transaction bytes are
  unchanged); every other local-only transaction goes into the signed receipt's archive.
  Each such conflict session gets its conflict fork record (:mod:`engine.model.fork`), as
  automatic recovery gives one, so a comparison with its origin aligns at the true fork.
- **A peer's tombstone is believed only if it verifies here**: a delete marker counts only
  when its author is an admin of the owner group as this replica (or the fetched scope)
  knows it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.covalue import CoValueCore
from engine.crypto import AccountKey, chain_extend
from engine.errors import ChainError, RecoveryError
from engine.ids import CoValueID, SessionID, is_delete_session
from engine.model.audit import AuditAction, AuditRecord, append_record
from engine.model.fork import CONFLICT_FORK_NAMESPACE, ForkPoint, conflict_fork_key, encode_conflict_fork
from engine.model.header import OwnedByGroup
from engine.model.session_log import SessionLog
from engine.node.changes import ChangeEvent, ChangeKind
from engine.recovery.plan import (
    CoValueAction,
    FetchedCoValue,
    LocalCoValue,
    Plan,
    SessionAction,
    compute_plan,
)
from engine.recovery.receipt import ArchivedStretch, Receipt, SignedReceipt
from engine.storage.interface import CoValueReplace, Store, StoredReceipt

if TYPE_CHECKING:
    from engine.node.facade import LocalNode

__all__ = ["append_audit", "apply_recovery", "believe_tombstones", "local_state", "plan_recovery", "scope_ids"]

logger = logging.getLogger(__name__)


def scope_ids(node: LocalNode, covalues: Sequence[CoValueID], group: CoValueID | None) -> list[CoValueID]:
    """The local CoValues a scope names: ``covalues``, or ``group`` and every CoValue this
    replica holds that it owns."""
    if group is None:
        return list(dict.fromkeys(covalues))
    return [group, *node.covalues_owned_by(group)]


def _verified_prefix(raw: SessionLog, broken_at: int) -> SessionLog:
    """The longest checkpointed prefix of ``raw`` before ``broken_at`` that verifies whole
    (empty when none does)."""
    marks = sorted(n for n in raw.sigs if n <= min(broken_at, raw.count))
    for n in reversed(marks):
        log = SessionLog(raw.covalue, raw.session)
        log.txs.extend(raw.txs[:n])
        log.hashes.extend(chain_extend(log.base, log.txs))
        log.sigs.update({k: s for k, s in raw.sigs.items() if k <= n})
        if log.verify_all() is None:
            return log
    return SessionLog(raw.covalue, raw.session)


def _local(node: LocalNode, covalue: CoValueID) -> LocalCoValue | None:
    core = node.get_or_none(covalue)
    if core is None:
        return None
    sessions = {sid: log for sid, log in core.sessions.items() if log.signed_count}
    corrupt: dict[SessionID, tuple[int, int]] = {}
    for sid, error in core.corrupt.items():
        broken_at = getattr(error, "index", 0)
        raw = SessionLog(covalue, sid)
        if node.store is not None:
            try:
                raw = node.store.load_session(covalue, sid)
            except ChainError:
                raw = SessionLog(covalue, sid)
        prefix = _verified_prefix(raw, broken_at)
        if prefix.count:
            sessions[sid] = prefix
        corrupt[sid] = (broken_at, max(raw.count, broken_at))
    return LocalCoValue(covalue, core.header, core.deleted, sessions, corrupt)


def local_state(node: LocalNode, covalues: Iterable[CoValueID]) -> dict[CoValueID, LocalCoValue]:
    """What this replica holds of each CoValue in scope (signed prefixes; for a corrupt
    session, the part before its first broken link that still verifies)."""
    node.flush()
    out = {}
    for cid in covalues:
        local = _local(node, cid)
        if local is not None:
            out[cid] = local
    return out


def believe_tombstones(node: LocalNode, fetched: Sequence[FetchedCoValue]) -> list[FetchedCoValue]:
    """The fetched scope with each ``deleted`` claim checked here: a CoValue counts as
    deleted only when one of its delete sessions holds a delete marker by an admin of its
    owner group (the group as fetched in the same scope, else as this replica holds it)."""
    groups = {f.id: f for f in fetched if f.header is not None and f.header.type == "group"}

    def resolve(gid: CoValueID) -> CoValueCore | None:
        if gid in groups:
            g = groups[gid]
            assert g.header is not None
            core = CoValueCore(g.header, gid)
            core.install_sessions(g.sessions.values())
            return core
        return node.get_or_none(gid)

    out = []
    for item in fetched:
        if not item.deleted or item.header is None:
            out.append(item)
            continue
        core = CoValueCore(item.header, item.id)
        core.resolve = resolve
        core.install_sessions(log for sid, log in item.sessions.items() if is_delete_session(sid))
        core.recheck_deleted()
        if not core.deleted:
            logger.warning("%s: the peer says deleted, but no valid delete marker came with it", item.id)
        out.append(FetchedCoValue(item.id, item.header, core.deleted, item.sessions))
    return out


def plan_recovery(
    node: LocalNode,
    fetched: Sequence[FetchedCoValue],
    *,
    peer: str,
    operator: AccountKey,
    scope: Sequence[CoValueID],
    only: frozenset[SessionID] | None = None,
) -> Plan:
    """The plan for applying ``fetched`` (verified pages from ``peer``) to this replica,
    for the local CoValues ``scope`` names."""
    ids = list(dict.fromkeys([*scope, *(f.id for f in fetched)]))
    return compute_plan(
        local_state(node, ids), believe_tombstones(node, fetched), peer=peer, operator=operator.account_id, only=only
    )


@dataclass(slots=True)
class _Prepared:
    writes: list[CoValueReplace]
    before: dict[CoValueID, dict[SessionID, tuple[int, bytes]]]
    after: dict[CoValueID, dict[SessionID, tuple[int, bytes]]]
    preserved: dict[CoValueID, dict[SessionID, SessionID]]
    archived: list[ArchivedStretch]
    #: conflict fork records of the preserved tails: ``(key, value)`` in
    #: :data:`~engine.model.fork.CONFLICT_FORK_NAMESPACE`
    forks: list[tuple[str, bytes]] = field(default_factory=list)


def _prepare(
    plan: Plan,
    local: Mapping[CoValueID, LocalCoValue],
    fetched: Mapping[CoValueID, FetchedCoValue],
    operator: AccountKey,
) -> _Prepared:
    out = _Prepared([], {}, {}, {}, [])
    for cp in plan.covalues:
        if not cp.changes:
            continue
        got = fetched[cp.id]
        assert got.header is not None
        mine = local.get(cp.id)
        logs: list[SessionLog] = []
        remove: list[SessionID] = []
        before: dict[SessionID, tuple[int, bytes]] = {}
        after: dict[SessionID, tuple[int, bytes]] = {}
        for sp in cp.sessions:
            old = mine.sessions.get(sp.session) if mine is not None else None
            if old is not None:
                before[sp.session] = old.head()
            if sp.action in (SessionAction.REPLACED, SessionAction.ADDED):
                new = got.sessions[sp.session]
                logs.append(new)
                after[sp.session] = new.head()
            elif sp.action is SessionAction.REMOVED:
                remove.append(sp.session)
            elif old is not None:
                after[sp.session] = old.head()
            if old is None or not sp.at_risk:
                continue
            tail = old.txs[sp.common : old.signed_count]
            if sp.preserved_as is not None:
                kept = SessionLog(cp.id, sp.preserved_as)
                kept.rebuild_signed(tail, operator)
                logs.append(kept)
                after[sp.preserved_as] = kept.head()
                out.preserved.setdefault(cp.id, {})[sp.session] = sp.preserved_as
                # Its transaction j stood at index common + j of the origin; the origin's
                # h(common) is the same before and after the replace (the shared prefix).
                fork = ForkPoint(sp.common, old.hash_at(sp.common))
                key = conflict_fork_key(cp.id, sp.preserved_as)
                out.forks.append((key, encode_conflict_fork(sp.session, fork)))
            else:
                sigs = {n: s for n, s in old.sigs.items() if sp.common < n <= old.signed_count}
                out.archived.append(ArchivedStretch(cp.id, sp.session, sp.common, old.hash_at(sp.common), tail, sigs))
        deleted = cp.action is CoValueAction.BECOME_DELETED
        out.writes.append(CoValueReplace(got.header, logs, remove, deleted))
        out.before[cp.id] = before
        out.after[cp.id] = after
    return out


def append_audit(
    store: Store,
    operator: AccountKey,
    action: AuditAction | str,
    target: str,
    *,
    details: Mapping[str, object],
    at_ms: int,
) -> AuditRecord:
    """Append one operator action to the store's audit log and return the record."""
    log = store.audit_log()
    record = append_record(log[-1] if log else None, operator, action, target, details=details, at_ms=at_ms)
    store.append_audit(record)
    return record


def apply_recovery(
    node: LocalNode,
    plan: Plan,
    fetched: Sequence[FetchedCoValue],
    *,
    operator: AccountKey,
    scope: Sequence[CoValueID],
    only: frozenset[SessionID] | None = None,
    at_ms: int | None = None,
    audit_details: Mapping[str, object] | None = None,
) -> SignedReceipt:
    """Apply ``plan`` (as the operator saw it) with what was fetched; returns the signed
    receipt. Raises :class:`RecoveryError` with nothing changed when the replica moved on
    since the plan, when the node has no store, or when the store refuses (its errors pass
    through, with nothing changed)."""
    if node.store is None or node.store.readonly:
        raise RecoveryError("recovery writes to a store: open it for writing")
    if operator.account_id != plan.operator:
        raise RecoveryError(f"the plan was made for {plan.operator}, not {operator.account_id}")
    node.flush()
    store = node._store_now()
    believed = believe_tombstones(node, fetched)
    ids = list(dict.fromkeys([*scope, *(f.id for f in fetched)]))
    local = local_state(node, ids)
    again = compute_plan(local, believed, peer=plan.peer, operator=plan.operator, only=only)
    if again.digest() != plan.digest():
        raise RecoveryError("this replica changed since the plan was made; make the plan again")
    when = node.clock_ms() if at_ms is None else at_ms
    prepared = _prepare(plan, local, {f.id: f for f in believed}, operator)
    signed = Receipt(
        plan.digest(),
        plan.peer,
        operator.account_id,
        when,
        prepared.before,
        prepared.after,
        prepared.preserved,
        prepared.archived,
    ).sign(operator)
    summary = plan.summary()
    history = store.audit_log()
    record = append_record(
        history[-1] if history else None,
        operator,
        AuditAction.RECOVER,
        store.location,
        details={
            "peer": plan.peer,
            "plan": plan.digest().hex(),
            "receipt": signed.id.hex(),
            "summary": summary,
            **(audit_details or {}),
        },
        at_ms=when,
    )
    # the conflict sessions' fork records go in the same transaction as the sessions
    forks = [(CONFLICT_FORK_NAMESPACE, key, value) for key, value in prepared.forks]
    if plan.changes:
        store.apply_recovery(
            prepared.writes,
            receipt=StoredReceipt(signed.id, when, signed.body, signed.sig),
            audit=record,
            checkpoints=forks,
        )
    else:
        store.append_audit(record)
    for write in prepared.writes:
        _reload(node, write.header.covalue_id())
    _move_off_replaced_session(node, prepared)
    return signed


def _reload(node: LocalNode, covalue: CoValueID) -> None:
    """Forget the CoValue in memory (content, roles, tombstone, stored counts): the next read
    builds it again from the store."""
    node.covalues.pop(covalue, None)
    for key in [k for k in node._stored if k[0] == covalue]:
        del node._stored[key]
    node._dirty.pop(covalue, None)
    core = node.get_or_none(covalue)
    if core is not None and isinstance(core.header.ruleset, OwnedByGroup):
        node.get_or_none(core.header.ruleset.group)
    node._notify(ChangeEvent(covalue, ChangeKind.REPLACED))


def _move_off_replaced_session(node: LocalNode, prepared: _Prepared) -> None:
    """If the node's own writing session was rewritten or removed, write on in a new one."""
    for write in prepared.writes:
        touched = {log.session for log in write.logs} | set(write.remove)
        if node.session in touched:
            node.move_to_new_session(f"{node.session} was replaced by a recovery")
            return


def verify_receipts(store: Store) -> Iterable[tuple[bytes, bool]]:
    """Each stored receipt's id and whether it verifies (signature and archive)."""
    for item in store.receipts():
        yield item.id, SignedReceipt(item.body, item.sig).verify()
