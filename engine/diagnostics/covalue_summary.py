"""What a viewer lists about each CoValue: name, badges, sessions, tombstone, provenance.

Two ways to build a :class:`CoValueSummary`:

- :func:`summarize` from a loaded :class:`CoValueCore` (verified sessions, content computed):
  every badge is known (``analysed`` is True);
- :func:`listing_summaries` from a store's listing alone
  (:meth:`~engine.storage.interface.Store.listing`, no transaction read): id, type, name,
  deleted flag, session list and previously recorded corruption. Opening a store with huge
  sessions shows this at once; invalid transactions and fresh corruption are only known after
  :func:`summarize` (``analysed`` is False until then).

Badges (:class:`Badge`): ``deleted``, ``conflict_session``, ``corrupt``,
``invalid_transactions`` and ``forked`` — a fork detected and not yet repaired, which only a
sync peer can tell; nothing here sets it.

:func:`content_entries` gives each content key's winning change with provenance (session,
transaction index, madeAt): for a CoMap the engine's own entries, for a group the last valid
role change of each member.

Nothing here reads storage by itself beyond the :class:`~engine.storage.interface.Store`
interface, and nothing here changes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from engine.content.comap import Entry
from engine.content.common import InvalidTx, ordered_transactions, sessions_for_content
from engine.covalue import CoValueCore
from engine.diagnostics.chain_verify import ChainBreak
from engine.errors import KintsugiError
from engine.ids import AccountID, CoValueID, SessionID, SessionKind, parse_session_id
from engine.model.header import Header
from engine.model.transaction import decode_transaction
from engine.storage.interface import Store

__all__ = [
    "Badge",
    "CoValueSummary",
    "ContentSnapshot",
    "SessionSummary",
    "TombstoneInfo",
    "content_entries",
    "content_snapshot",
    "header_name",
    "lane_order",
    "listing_summaries",
    "order_lanes",
    "summarize",
]


class Badge(StrEnum):
    DELETED = "deleted"
    CONFLICT_SESSION = "conflict_session"
    CORRUPT = "corrupt"
    INVALID_TRANSACTIONS = "invalid_transactions"
    FORKED = "forked"


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session of a CoValue. ``corrupt`` is its first broken link when it failed
    verification (it is then not part of the CoValue's content)."""

    id: SessionID
    kind: SessionKind
    account: AccountID
    count: int
    conflict_n: int = 0
    corrupt: ChainBreak | None = None


@dataclass(frozen=True, slots=True)
class TombstoneInfo:
    """A delete marker: who deleted (``by``) when (``at``, ms) in which delete session.

    ``valid`` is False when the author could not delete at that time (``problem`` says why);
    such a marker is kept but deletes nothing.
    """

    covalue: CoValueID
    session: SessionID
    by: AccountID
    at: int | None
    valid: bool
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class CoValueSummary:
    id: CoValueID
    type: str
    name: str | None
    deleted: bool
    sessions: tuple[SessionSummary, ...]
    badges: frozenset[Badge]
    #: transactions kept in the log but not in content, with the reason
    invalid: tuple[InvalidTx, ...] = ()
    tombstones: tuple[TombstoneInfo, ...] = ()
    transactions: int = 0
    #: False for a store listing that has not loaded and verified the CoValue yet
    analysed: bool = True

    @property
    def conflict_sessions(self) -> int:
        return sum(1 for s in self.sessions if s.kind is SessionKind.CONFLICT)

    @property
    def corrupt_sessions(self) -> int:
        return sum(1 for s in self.sessions if s.corrupt is not None)

    @property
    def tombstone(self) -> TombstoneInfo | None:
        """The marker that deleted the CoValue (the first valid one), or None."""
        return next((t for t in self.tombstones if t.valid), None)

    def session(self, sid: str) -> SessionSummary | None:
        return next((s for s in self.sessions if s.id == sid), None)

    def with_badge(self, badge: Badge) -> CoValueSummary:
        """A copy that also carries ``badge`` (a sync peer adds ``forked``)."""
        return replace(self, badges=self.badges | {badge})


def header_name(header: Header) -> str | None:
    """The display name in a header's meta: ``meta["name"]``, or ``meta`` itself if text."""
    meta = header.meta
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        return str(meta["name"])
    if isinstance(meta, str):
        return meta
    return None


def lane_order(sid: str) -> tuple[str, int, str]:
    """Sort key that puts each conflict session right after the session it came from, and
    delete sessions after both."""
    try:
        parsed = parse_session_id(sid)
    except KintsugiError:
        return (sid, 9, sid)
    rank = {SessionKind.ACTIVE: 0, SessionKind.CONFLICT: 1, SessionKind.DELETE: 2}[parsed.kind]
    return (parsed.base, rank * 1000 + parsed.conflict_n, sid)


def order_lanes(sessions: Iterable[SessionSummary]) -> list[SessionSummary]:
    """Sessions in the order a viewer shows them: first every session that has conflict
    sessions, each followed by its conflict sessions (where the break is), then the other
    active sessions, then delete sessions; by :func:`lane_order` within each group."""
    items = list(sessions)
    forked = {parse_session_id(s.id).base for s in items if s.kind is SessionKind.CONFLICT}

    def key(s: SessionSummary) -> tuple[int, tuple[str, int, str]]:
        if s.kind is SessionKind.DELETE:
            return 2, lane_order(s.id)
        return (0 if parse_session_id(s.id).base in forked else 1), lane_order(s.id)

    return sorted(items, key=key)


def _session_summary(sid: SessionID, count: int, corrupt: ChainBreak | None) -> SessionSummary:
    parsed = parse_session_id(sid)
    return SessionSummary(sid, parsed.kind, parsed.account, count, parsed.conflict_n, corrupt)


def _badges(deleted: bool, sessions: Iterable[SessionSummary], invalid: bool) -> frozenset[Badge]:
    badges = set()
    if deleted:
        badges.add(Badge.DELETED)
    for s in sessions:
        if s.kind is SessionKind.CONFLICT:
            badges.add(Badge.CONFLICT_SESSION)
        if s.corrupt is not None:
            badges.add(Badge.CORRUPT)
    if invalid:
        badges.add(Badge.INVALID_TRANSACTIONS)
    return frozenset(badges)


def _break_of(error: KintsugiError) -> ChainBreak:
    index = getattr(error, "index", 0)
    reason = getattr(error, "reason", None) or error.detail or error.code
    return ChainBreak(int(index) if isinstance(index, int) else 0, error.code, str(reason))


def tombstones_of(core: CoValueCore) -> tuple[TombstoneInfo, ...]:
    out = []
    for sid in sorted(core.delete_sessions()):
        log = core.sessions[sid]
        at: int | None = None
        problem: str | None
        try:
            at = decode_transaction(log.txs[0]).made_at if log.txs else None
            problem = core.delete_problem_for(sid) if log.txs else "empty delete session"
        except KintsugiError as exc:
            problem = f"undecodable delete marker: {exc.detail}"
        out.append(TombstoneInfo(core.id, sid, log.account, at, problem is None, problem))
    return tuple(out)


def summarize(
    core: CoValueCore, *, stored_counts: Mapping[SessionID, int] | None = None, content: bool = True
) -> CoValueSummary:
    """Everything known about a loaded CoValue.

    ``stored_counts`` gives the stored length of sessions that failed verification (they are
    not in ``core.sessions``); without it their count shows as 0. With ``content`` False the
    content is not computed (it decodes every transaction): invalid transactions are then
    unknown and ``analysed`` is False.
    """
    sessions = [_session_summary(sid, log.count, None) for sid, log in core.sessions.items()]
    for sid, error in core.corrupt.items():
        count = (stored_counts or {}).get(sid, 0)
        sessions.append(_session_summary(sid, count, _break_of(error)))
    sessions = order_lanes(sessions)
    invalid: tuple[InvalidTx, ...] = ()
    if content and not core.deleted:
        try:
            invalid = tuple(core.invalid_transactions())
        except KintsugiError:
            invalid = ()
    return CoValueSummary(
        id=core.id,
        type=core.type,
        name=header_name(core.header),
        deleted=core.deleted,
        sessions=tuple(sessions),
        badges=_badges(core.deleted, sessions, bool(invalid)),
        invalid=invalid,
        tombstones=tombstones_of(core),
        transactions=sum(s.count for s in sessions),
        analysed=content,
    )


def listing_summaries(store: Store) -> list[CoValueSummary]:
    """Cheap summaries of every CoValue in ``store``, sorted by id (``analysed`` False).

    Raises :class:`engine.errors.StorageError` when the store cannot be read.
    """
    listing = store.listing()
    corrupt = {(r.covalue, r.session): ChainBreak(r.broken_at, r.code, r.reason) for r in listing.corrupt}
    by_covalue: dict[str, list[SessionSummary]] = {}
    for cid, sid, count in listing.sessions:
        try:
            summary = _session_summary(SessionID(sid), count, corrupt.get((cid, SessionID(sid))))
        except KintsugiError:
            continue  # an id that does not parse is reported when the CoValue is analysed
        by_covalue.setdefault(cid, []).append(summary)
    out = []
    for listed in listing.covalues:
        try:
            name = header_name(Header.decode(listed.header))
        except KintsugiError:
            name = None
        sessions = order_lanes(by_covalue.get(listed.id, []))
        out.append(
            CoValueSummary(
                id=listed.id,
                type=listed.type,
                name=name,
                deleted=listed.deleted,
                sessions=tuple(sessions),
                badges=_badges(listed.deleted, sessions, False),
                transactions=sum(s.count for s in sessions),
                analysed=False,
            )
        )
    return out


def content_entries(core: CoValueCore) -> dict[str, Entry]:
    """Each content key's winning change, with its provenance in ``Entry.order``.

    For a CoMap: key → the engine's own entry (a ``del`` winner has ``deleted`` set). For a
    group: member AccountID → its current role, from the last valid role change (the initial
    admin's entry has session ``""`` and index -1: it comes from the header). Empty for a
    deleted CoValue (its content is purged). The CoMap dict is the engine's: do not mutate.
    """
    if core.deleted:
        return {}
    if core.type != "group":
        return core.comap().entries
    state = core.group()
    # The initial admin holds its role from the header, not from a transaction.
    entries: dict[str, Entry] = {state.initial_admin: Entry("admin", False, (core.header.created_at, "", -1, 0))}
    rejected = {(i.session, i.index) for i in state.invalid}
    sink: list[InvalidTx] = []
    for item in ordered_transactions(sessions_for_content(core.sessions), sink):
        if (item.session, item.index) in rejected:
            continue
        for ci, change in enumerate(item.tx.changes):
            if len(change) == 3 and change[0] == "role":
                entries[str(change[1])] = Entry(change[2], False, (item.tx.made_at, item.session, item.index, ci))
    return entries


@dataclass(frozen=True, slots=True)
class ContentSnapshot:
    """A CoValue's content with provenance, detached from the CoValue (picklable, so a worker
    process can compute it). ``entries`` as :func:`content_entries` gives them (a copy)."""

    covalue: CoValueID
    type: str
    name: str | None
    deleted: bool
    entries: Mapping[str, Entry]
    tombstones: tuple[TombstoneInfo, ...]
    transactions: int

    @property
    def tombstone(self) -> TombstoneInfo | None:
        return next((t for t in self.tombstones if t.valid), None)


def content_snapshot(core: CoValueCore) -> ContentSnapshot:
    """The content of ``core`` now (computing it if needed: that decodes every transaction)."""
    return ContentSnapshot(
        covalue=core.id,
        type=core.type,
        name=header_name(core.header),
        deleted=core.deleted,
        entries=dict(content_entries(core)),
        tombstones=tombstones_of(core),
        transactions=core.transaction_count(),
    )
