"""The REPLACE exchange (DESIGN §7.2), sans-I/O: both sides of recover_open / page / next.

:class:`RecoveryResponder` serves exchanges to peers of a node; :class:`RecoveryFetch` is one
exchange on the requesting side. Neither touches sockets or clocks: the sync manager feeds the
responder decoded messages with the time, and the network shell feeds the fetch the pages it
receives and sends what it returns.

Rules (each one a regression test):

1. **Members only.** A CoValue is served only to members of its owner group and to the
   node's admins. Anyone else gets exactly the item an unknown id gets (``header`` null), so
   the answer does not tell whether the id exists.
2. **Its own namespace.** An exchange's cursor is ``(xid, page)``, kept here; nothing of it
   touches the incremental sync state (what a peer is believed to hold).
3. **No half-served snapshot is ever reused.** An exchange freezes, at open, the length and
   head hash of every session in scope, and serves exactly those prefixes. A session that
   changed under it (replaced, purged) ends the exchange with ``snapshot_changed``; an
   ``xid`` seen before is refused (``exchange_reused``), so a retry is always a new
   exchange from a fresh snapshot.
4. **Bounded.** Pages fit the frame budget; a peer has at most
   :data:`MAX_OPEN_EXCHANGES` open at once; an exchange untouched for
   :data:`EXCHANGE_TIMEOUT_MS` is dropped (``unknown_exchange`` afterwards).
5. **All or nothing on the requesting side.** :class:`RecoveryFetch` keeps every piece and
   verifies nothing as applied until the ``last`` page: then each session is verified whole,
   from its chain base, and only a fully verified scope is handed back.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from engine.covalue import CoValueCore
from engine.errors import IntegrityError, InvalidContent, ProtocolError, RecoveryAborted, RecoveryError
from engine.ids import AccountID, CoValueID, SessionID
from engine.model.header import GroupRuleset, Header, OwnedByGroup
from engine.model.session_log import Chunk, SessionLog
from engine.protocol.messages.base import Error
from engine.protocol.messages.recovery import (
    MAX_PAGE_ITEMS,
    RecoverItem,
    RecoverNext,
    RecoverOpen,
    RecoverPage,
    RecoveryScope,
)
from engine.recovery.plan import FetchedCoValue

__all__ = [
    "EXCHANGE_TIMEOUT_MS",
    "MAX_OPEN_EXCHANGES",
    "RecoveryFetch",
    "RecoveryHost",
    "RecoveryResponder",
]

#: An exchange not asked for a page for this long is dropped (milliseconds).
EXCHANGE_TIMEOUT_MS = 60_000
#: Exchanges one peer may have open at once; opening another drops its oldest.
MAX_OPEN_EXCHANGES = 4
#: Exchange ids remembered per responder, to refuse a reused ``xid``.
REMEMBERED_XIDS = 4096
#: Bytes set aside per item and per transaction when filling a page to the budget.
ITEM_OVERHEAD = 512
TX_OVERHEAD = 8
SIG_OVERHEAD = 80
#: Most CoValues a requester accepts in one scope (a group's scope included).
MAX_FETCHED_COVALUES = 100_000


class RecoveryHost(Protocol):
    """What the responder reads of the replica it serves (LocalNode provides it)."""

    def get_or_none(self, covalue: CoValueID) -> CoValueCore | None: ...

    def can_read(self, account: AccountID, covalue: CoValueID) -> bool: ...

    def covalues_owned_by(self, group: CoValueID) -> list[CoValueID]: ...


@dataclass(slots=True)
class _Frozen:
    """One CoValue as the exchange serves it: None for an id not shown."""

    id: CoValueID
    header: Header | None
    deleted: bool = False
    heads: dict[SessionID, tuple[int, bytes]] = field(default_factory=dict)


@dataclass(slots=True)
class _Exchange:
    rid: int
    xid: bytes
    items: list[_Frozen]
    touched_ms: int
    next_page: int = 0
    #: cursor: item index, then per session of that item how far it was served
    item: int = 0
    served: dict[SessionID, int] = field(default_factory=dict)
    #: whether the current item's header went out on a page already
    emitted: bool = False


class RecoveryResponder:
    """Serves REPLACE exchanges for one replica to all its peers. Not thread-safe."""

    def __init__(
        self,
        host: RecoveryHost,
        *,
        page_budget: int,
        timeout_ms: int = EXCHANGE_TIMEOUT_MS,
        max_open: int = MAX_OPEN_EXCHANGES,
    ) -> None:
        self.host = host
        self.page_budget = page_budget
        self.timeout_ms = timeout_ms
        self.max_open = max_open
        self._open: dict[str, OrderedDict[bytes, _Exchange]] = {}
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()
        #: exchanges served to their last page (for the inspector's and tests' eyes)
        self.completed = 0

    # -- requests ----------------------------------------------------------------------------

    def open(self, peer_id: str, account: AccountID, admin: bool, msg: RecoverOpen, now_ms: int) -> RecoverPage | Error:
        """Freeze the scope for this peer and answer with page 0 (or a refusal)."""
        self.expire(now_ms)
        if msg.xid in self._seen:
            return Error("exchange_reused", "every recovery exchange needs a fresh xid")
        self._remember(msg.xid)
        items = [self._freeze(cid, account, admin) for cid in self._scope_ids(msg.scope, account, admin)]
        if msg.scope.sessions is not None:
            wanted = set(msg.scope.sessions)
            for item in items:
                item.heads = {s: h for s, h in item.heads.items() if s in wanted}
        exchanges = self._open.setdefault(peer_id, OrderedDict())
        while len(exchanges) >= self.max_open:
            exchanges.popitem(last=False)
        exchange = _Exchange(msg.rid, msg.xid, items, now_ms)
        exchanges[msg.xid] = exchange
        return self._page(peer_id, exchange, now_ms)

    def next(self, peer_id: str, msg: RecoverNext, now_ms: int) -> RecoverPage | Error:
        """The page asked for, which must be the next one of an open exchange."""
        self.expire(now_ms)
        exchange = self._open.get(peer_id, OrderedDict()).get(msg.xid)
        if exchange is None:
            return Error("unknown_exchange", "no open recovery exchange with that xid")
        if msg.page != exchange.next_page:
            self._drop(peer_id, msg.xid)
            return Error(
                "unknown_exchange", f"page {msg.page} asked, {exchange.next_page} is next; start a new exchange"
            )
        return self._page(peer_id, exchange, now_ms)

    def drop_peer(self, peer_id: str) -> None:
        """The peer went away: its exchanges end (a retry opens a new one)."""
        self._open.pop(peer_id, None)

    def expire(self, now_ms: int) -> None:
        """Drop exchanges untouched for longer than the timeout."""
        for peer_id, exchanges in list(self._open.items()):
            for xid in [x for x, e in exchanges.items() if now_ms - e.touched_ms > self.timeout_ms]:
                del exchanges[xid]
            if not exchanges:
                del self._open[peer_id]

    def open_count(self, peer_id: str | None = None) -> int:
        if peer_id is not None:
            return len(self._open.get(peer_id, {}))
        return sum(len(e) for e in self._open.values())

    # -- inside ------------------------------------------------------------------------------

    def _remember(self, xid: bytes) -> None:
        self._seen.add(xid)
        self._seen_order.append(xid)
        while len(self._seen_order) > REMEMBERED_XIDS:
            self._seen.discard(self._seen_order.popleft())

    def _visible(self, cid: CoValueID, account: AccountID, admin: bool) -> CoValueCore | None:
        core = self.host.get_or_none(cid)
        if core is None or not (admin or self.host.can_read(account, cid)):
            return None
        return core

    def _scope_ids(self, scope: RecoveryScope, account: AccountID, admin: bool) -> list[CoValueID]:
        if scope.group is None:
            return list(dict.fromkeys(scope.covalues))
        group = self._visible(scope.group, account, admin)
        if group is None or not isinstance(group.header.ruleset, GroupRuleset):
            return [scope.group]  # answered as unknown, like any id not shown
        return [scope.group, *sorted(c for c in self.host.covalues_owned_by(scope.group) if c != scope.group)]

    def _freeze(self, cid: CoValueID, account: AccountID, admin: bool) -> _Frozen:
        core = self._visible(cid, account, admin)
        if core is None:
            return _Frozen(cid, None)
        heads = {sid: log.head() for sid, log in sorted(core.sessions.items()) if log.signed_count}
        return _Frozen(cid, core.header, core.deleted, heads)

    def _drop(self, peer_id: str, xid: bytes) -> None:
        exchanges = self._open.get(peer_id)
        if exchanges is not None:
            exchanges.pop(xid, None)

    def _page(self, peer_id: str, ex: _Exchange, now_ms: int) -> RecoverPage | Error:
        """Fill the next page up to the budget. A CoValue whose sessions do not fit goes on
        over the following pages (each piece starts where the last one ended)."""
        ex.touched_ms = now_ms
        budget = self.page_budget
        items: list[RecoverItem] = []
        while ex.item < len(ex.items) and len(items) < MAX_PAGE_ITEMS:
            frozen = ex.items[ex.item]
            if frozen.header is None:
                items.append(RecoverItem(frozen.id, None))
                budget -= ITEM_OVERHEAD
                ex.item += 1
                continue
            core = self.host.get_or_none(frozen.id)
            if core is None:
                self._drop(peer_id, ex.xid)
                return Error("snapshot_changed", "a CoValue in scope went away; start a new exchange", frozen.id)
            budget -= ITEM_OVERHEAD
            chunks: dict[SessionID, Chunk] = {}
            full = False
            for sid, (count, head) in frozen.heads.items():
                start = ex.served.get(sid, 0)
                if start >= count:
                    continue
                log = core.sessions.get(sid)
                if log is None or log.count < count or log.hash_at(count) != head:
                    self._drop(peer_id, ex.xid)
                    return Error("snapshot_changed", f"session {sid} changed; start a new exchange", frozen.id)
                end = _cut(log, start, count, budget, force=not items and not chunks)
                if end > start:
                    chunks[sid] = log.chunk(start, end)
                    budget -= _cost(log, start, end)
                    ex.served[sid] = end
                if end < count:
                    full = True
                    break
            if chunks or not ex.emitted:
                items.append(RecoverItem(frozen.id, frozen.header, frozen.deleted, chunks))
                ex.emitted = True
            if full:
                break
            ex.item += 1
            ex.served = {}
            ex.emitted = False
            if budget <= ITEM_OVERHEAD:
                break
        last = ex.item >= len(ex.items)
        page = RecoverPage(ex.rid, ex.xid, ex.next_page, tuple(items), last)
        ex.next_page += 1
        if last:
            self._drop(peer_id, ex.xid)
            self.completed += 1
        return page


def _cost(log: SessionLog, start: int, end: int) -> int:
    sigs = sum(1 for n in log.sigs if start < n <= end)
    return sum(len(tx) + TX_OVERHEAD for tx in log.txs[start:end]) + SIG_OVERHEAD * sigs


def _cut(log: SessionLog, start: int, limit: int, budget: int, *, force: bool) -> int:
    """The furthest checkpoint in ``(start, limit]`` whose stretch from ``start`` fits
    ``budget``. With ``force`` (the page holds nothing yet) at least the first checkpoint,
    so every page makes progress: a write batch is far below the frame size."""
    best = start
    spent = 0
    i = start
    for n in sorted(n for n in log.sigs if start < n <= limit):
        spent += sum(len(tx) + TX_OVERHEAD for tx in log.txs[i:n]) + SIG_OVERHEAD
        i = n
        if spent > budget and not (force and best == start):
            break
        best = n
        if spent > budget:
            break
    return best


class RecoveryFetch:
    """One exchange on the requesting side: open, take pages in, then verify everything.

    ``xid`` must be fresh for every exchange (16 random bytes). Raises
    :class:`RecoveryAborted` when the peer refuses or answers out of order, and
    :class:`RecoveryError` when what arrived does not verify; in both cases nothing was
    handed out, and a retry is a new :class:`RecoveryFetch` with a new ``xid``.
    """

    def __init__(
        self, scope: RecoveryScope, *, rid: int, xid: bytes, progress: Callable[[int, int], None] | None = None
    ) -> None:
        self.scope = scope
        self.rid = rid
        self.xid = xid
        self.progress = progress
        self.pages = 0
        self.transactions = 0
        self.done = False
        self._headers: dict[CoValueID, Header | None] = {}
        self._deleted: dict[CoValueID, bool] = {}
        self._pieces: dict[CoValueID, dict[SessionID, list[Chunk]]] = {}

    def open_message(self) -> RecoverOpen:
        return RecoverOpen(self.rid, self.xid, self.scope)

    def receive(self, message: RecoverPage | Error) -> RecoverNext | None:
        """Take in one answer; returns the request for the next page, or None after the
        last one. Raises :class:`RecoveryAborted` for a refusal or a page out of order."""
        if isinstance(message, Error):
            raise RecoveryAborted(f"the peer ended the exchange: {message.code} ({message.detail})")
        if self.done or message.xid != self.xid or message.rid != self.rid or message.page != self.pages:
            raise RecoveryAborted(f"unexpected page {message.page} of another or a finished exchange")
        for item in message.items:
            self._take(item)
        self.pages += 1
        if self.progress is not None:
            self.progress(self.pages, self.transactions)
        if message.last:
            self.done = True
            return None
        return RecoverNext(self.xid, self.pages)

    def _take(self, item: RecoverItem) -> None:
        known = self._headers.get(item.id)
        if item.id in self._headers and (known is None) != (item.header is None):
            raise RecoveryAborted(f"{item.id} changed between pages")
        if item.id not in self._headers and len(self._headers) >= MAX_FETCHED_COVALUES:
            raise RecoveryAborted(f"the scope holds more than {MAX_FETCHED_COVALUES} CoValues")
        self._headers[item.id] = item.header
        self._deleted[item.id] = self._deleted.get(item.id, False) or item.deleted
        pieces = self._pieces.setdefault(item.id, {})
        for sid, chunk in item.sessions.items():
            parts = pieces.setdefault(sid, [])
            expected = parts[-1].end if parts else 0
            if chunk.after != expected:
                raise RecoveryAborted(f"{item.id} {sid}: piece starts at {chunk.after}, {expected} expected")
            parts.append(chunk)
            self.transactions += len(chunk.txs)

    def result(self) -> list[FetchedCoValue]:
        """Every CoValue in scope as the peer holds it, each session verified whole from
        its chain base. Only after the last page; raises :class:`RecoveryError` if anything
        does not verify (nothing is returned then)."""
        if not self.done:
            raise RecoveryAborted("the exchange has not reached its last page")
        out = []
        for cid, header in self._headers.items():
            sessions: dict[SessionID, SessionLog] = {}
            for sid, parts in self._pieces.get(cid, {}).items():
                try:
                    sessions[sid] = SessionLog.from_chunk(cid, sid, _join(parts))
                except (IntegrityError, InvalidContent, ProtocolError) as exc:
                    raise RecoveryError(f"{cid} {sid} from the peer does not verify: {exc.detail}") from exc
            out.append(FetchedCoValue(cid, header, self._deleted.get(cid, False), sessions))
        return out


def _join(parts: Iterable[Chunk]) -> Chunk:
    txs: list[bytes] = []
    sigs: dict[int, bytes] = {}
    for p in parts:
        txs.extend(p.txs)
        sigs.update(p.sigs)
    return Chunk(0, txs, sigs)


def owned_ids(cores: Iterable[CoValueCore], group: CoValueID) -> list[CoValueID]:
    """Ids of the CoValues among ``cores`` whose owner is ``group`` (a helper for hosts
    that keep their CoValues in memory)."""
    return sorted(c.id for c in cores if isinstance(c.header.ruleset, OwnedByGroup) and c.header.ruleset.group == group)
