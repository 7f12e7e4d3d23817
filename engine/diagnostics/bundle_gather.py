"""What a bundle (and the anomaly rules) know about each CoValue, read with bounded memory.

:class:`Gatherer` walks the CoValues of a target — a :class:`~engine.storage.interface.Store`,
or CoValues held in memory (a remote node's replica, a node without a store) — and makes one
:class:`CoValueRecord` per CoValue:

- every session re-verified from its rows with
  :class:`~engine.diagnostics.chain_verify.ChainVerifier`, a window of
  :data:`VERIFY_STEP_ROWS` rows at a time, recording the hash at every checkpoint (and its
  signature), the first broken link, and the ``madeAt`` of the newest transaction; the rows
  can be handed to a sink on the way (a bundle's raw content);
- CoValues of at most :data:`ANALYSE_MAX_TRANSACTIONS` transactions are also loaded whole to
  learn what needs content: invalid transactions, tombstones and the content itself (keys,
  values, provenance). Bigger ones are not (``analysed`` False): loading them would hold
  every transaction in memory, and a bundle's memory stays bounded whatever the store's size.

:meth:`Gatherer.gather` is a generator: it yields the rows examined after each step (for
progress, and so a caller can stop between steps) and returns the record. Nothing here writes
anything, redacts anything (records hold raw data; the bundle writer redacts) or imports net.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from engine.content.common import InvalidTx
from engine.covalue import CoValueCore
from engine.diagnostics.anomalies import CoValueFacts, SessionFacts, SlotFacts
from engine.diagnostics.chain_verify import ChainBreak, ChainVerifier
from engine.diagnostics.covalue_summary import ContentSnapshot, TombstoneInfo, content_snapshot, tombstones_of
from engine.diagnostics.session_rows import LogSessionSource, RawRow, SessionSource, StoreSessionSource
from engine.errors import KintsugiError, StorageError
from engine.ids import AccountID, CoValueID, SessionID, SessionKind, parse_session_id
from engine.kv.detail import SlotRow, slot_row
from engine.kv.store import CASRecord
from engine.model.fork import CONFLICT_FORK_NAMESPACE, conflict_fork_key
from engine.model.header import Header, OwnedByGroup
from engine.model.transaction import decode_transaction
from engine.node.loading import load_core
from engine.storage.interface import Store

__all__ = [
    "ANALYSE_MAX_TRANSACTIONS",
    "VERIFY_STEP_ROWS",
    "CoValueRecord",
    "Gatherer",
    "RowSink",
    "SessionRecord",
    "SlotDump",
    "facts_of",
    "slot_facts",
    "store_slots",
]

#: CoValues with at most this many transactions are loaded whole (content, invalid
#: transactions, tombstones); bigger ones are only verified, a window at a time.
ANALYSE_MAX_TRANSACTIONS = 200_000
#: Rows one verification step reads (one progress report; a few milliseconds).
VERIFY_STEP_ROWS = 2000
#: Owner groups kept loaded while gathering (a group is read for every CoValue it owns).
KEEP_GROUPS = 32


@dataclass(slots=True)
class SessionRecord:
    """One session as verified now. ``count`` is what the target holds (a store's stored
    count); ``checkpoints`` are ``(n, h(n), sig(n))`` for every checkpoint the verifier
    reached; ``verified`` rows are covered by a checkpoint that verifies; ``broken`` is the
    first failure (None: none)."""

    id: SessionID
    kind: SessionKind
    account: AccountID
    conflict_n: int
    origin: SessionID
    count: int
    head: bytes | None
    checkpoints: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    verified: int = 0
    broken: ChainBreak | None = None
    last_made_at: int | None = None
    #: a conflict session's fork record as its store keeps it (:mod:`engine.model.fork`)
    fork_record: bytes | None = None
    #: where a bundle keeps the raw rows (None: not included)
    rows_member: str | None = None
    rows_written: int = 0


@dataclass(slots=True)
class CoValueRecord:
    """One CoValue: header (None when it does not decode), sessions, and — when
    ``analysed`` — invalid transactions, tombstones and content."""

    id: CoValueID
    type: str
    deleted: bool
    header: Header | None
    sessions: list[SessionRecord] = field(default_factory=list)
    analysed: bool = False
    invalid: list[InvalidTx] = field(default_factory=list)
    tombstones: tuple[TombstoneInfo, ...] = ()
    content: ContentSnapshot | None = None

    @property
    def transactions(self) -> int:
        return sum(s.count for s in self.sessions)

    @property
    def tombstone_session(self) -> SessionID | None:
        return next((t.session for t in self.tombstones if t.valid), None)


class RowSink:
    """Receives the rows of each session as they are verified (a bundle's raw content).
    Rows arrive in index order, each once; ``start``/``end`` bracket one session."""

    def start(self, covalue: CoValueID, session: SessionID) -> str | None:
        """Begin a session; returns where its rows go (None: nowhere)."""
        return None

    def rows(self, rows: Sequence[RawRow]) -> None:
        return None

    def end(self) -> int:
        """End the session; returns the rows kept."""
        return 0


class _Recording:
    """A :class:`SessionSource` that passes through, remembering what the verifier read:
    the stored hash at each checkpoint, the newest transaction's ``madeAt``, and every row in
    order for a sink."""

    def __init__(self, inner: SessionSource, sink: RowSink | None) -> None:
        self.inner = inner
        self.covalue = inner.covalue
        self.session = inner.session
        self.rows_read = 0
        self.may_hold_pending = inner.may_hold_pending
        self.sink = sink
        self.next_index = 0
        self.hashes: dict[int, bytes] = {}
        self.last_made_at: int | None = None
        self._wanted = set(inner.checkpoints())
        self._count = inner.count

    @property
    def count(self) -> int:
        return self._count

    def window(self, offset: int, limit: int) -> list[RawRow]:
        rows = self.inner.window(offset, limit)
        self.rows_read += len(rows)
        fresh = [row for row in rows if row[0] >= self.next_index]
        if fresh and fresh[0][0] == self.next_index:
            for index, tx, stored in fresh:
                if index + 1 in self._wanted:
                    self.hashes[index + 1] = stored
                if index == self._count - 1:
                    try:
                        self.last_made_at = decode_transaction(tx).made_at
                    except KintsugiError:
                        self.last_made_at = None
            self.next_index = fresh[-1][0] + 1
            if self.sink is not None:
                self.sink.rows(fresh)
        return rows

    def row_hash(self, index: int) -> bytes | None:
        found = self.inner.row_hash(index)
        self.rows_read += found is not None
        return found

    def checkpoints(self) -> Sequence[int]:
        return self.inner.checkpoints()

    def signature(self, n: int) -> bytes | None:
        return self.inner.signature(n)

    def base(self) -> bytes:
        return self.inner.base()

    def stored_head(self) -> tuple[int, bytes] | None:
        return self.inner.stored_head()

    def identity(self) -> object:
        return self.inner.identity()

    def reload(self) -> None:
        self.inner.reload()


def _session_record(sid: SessionID, count: int, head: bytes | None) -> SessionRecord:
    parsed = parse_session_id(sid)
    return SessionRecord(sid, parsed.kind, parsed.account, parsed.conflict_n, parsed.base, count, head)


def _break_of(error: KintsugiError) -> ChainBreak:
    index = getattr(error, "index", 0)
    reason = getattr(error, "reason", None) or error.detail or error.code
    return ChainBreak(int(index) if isinstance(index, int) else 0, error.code, str(reason))


class Gatherer:
    """Records of the CoValues of ``store`` or, without a store, of ``cores`` (CoValues held
    in memory, verified as they are; their owner groups are looked up among them too).
    Use from the thread that owns the store or the CoValues."""

    def __init__(
        self,
        *,
        store: Store | None = None,
        cores: Mapping[CoValueID, CoValueCore] | None = None,
        analyse_max: int = ANALYSE_MAX_TRANSACTIONS,
        step_rows: int = VERIFY_STEP_ROWS,
    ) -> None:
        if (store is None) == (cores is None):
            raise ValueError("give a store or in-memory CoValues")
        self.store = store
        self.cores = cores
        self.analyse_max = analyse_max
        self.step_rows = step_rows
        self._groups: dict[CoValueID, CoValueCore | None] = {}
        self._listing: dict[CoValueID, tuple[str, bool, bytes]] | None = None
        self._counts: dict[CoValueID, int] = {}

    def ids(self) -> list[CoValueID]:
        """Every CoValue, sorted (a store's listing: no transaction is read)."""
        if self.cores is not None:
            return sorted(self.cores)
        assert self.store is not None
        listing = self.store.listing()
        self._listing = {c.id: (c.type, c.deleted, c.header) for c in listing.covalues}
        self._counts = {}
        for cid, _sid, count in listing.sessions:
            self._counts[cid] = self._counts.get(cid, 0) + count
        return sorted(self._listing)

    def transactions(self, covalue: CoValueID) -> int:
        """Transactions of ``covalue`` as listed (call :meth:`ids` first)."""
        if self.cores is not None:
            core = self.cores.get(covalue)
            return core.transaction_count() if core is not None else 0
        return self._counts.get(covalue, 0)

    def gather(self, covalue: CoValueID, sink: RowSink | None = None) -> Generator[int, None, CoValueRecord | None]:
        """Verify and describe ``covalue``: yields rows examined per step, returns the record
        (None: the target does not have it). Raises :class:`StorageError` when the store
        fails."""
        if self.cores is not None:
            return (yield from self._gather_memory(covalue, sink))
        return (yield from self._gather_store(covalue, sink))

    # -- from a store ------------------------------------------------------------------------

    def _gather_store(self, covalue: CoValueID, sink: RowSink | None) -> Generator[int, None, CoValueRecord | None]:
        store = self.store
        assert store is not None
        if self._listing is None:
            self.ids()
        assert self._listing is not None
        listed = self._listing.get(covalue)
        if listed is None:
            return None
        kind, deleted, header_bytes = listed
        try:
            header: Header | None = Header.decode(header_bytes)
        except KintsugiError:
            header = None
        record = CoValueRecord(covalue, kind, deleted, header)
        recorded = {r.session: r for r in store.corrupt_sessions() if r.covalue == covalue}
        for stored in store.stored_sessions(covalue):
            try:
                session = _session_record(stored.session, stored.count, stored.head)
            except KintsugiError:
                continue  # an id that does not parse: nothing of it can be verified
            if session.conflict_n:
                try:
                    session.fork_record = store.get_checkpoint(
                        CONFLICT_FORK_NAMESPACE, conflict_fork_key(covalue, stored.session)
                    )
                except StorageError:  # a record is a hint: an unreadable one means none
                    session.fork_record = None
            source = StoreSessionSource(store, covalue, stored.session)
            yield from self._verify(session, source, sink)
            if session.broken is None and stored.session in recorded:
                r = recorded[stored.session]
                session.broken = ChainBreak(r.broken_at, r.code, r.reason)
            record.sessions.append(session)
        if header is not None and record.transactions <= self.analyse_max:
            yield 0  # a step boundary: loading whole is the one step that cannot be sliced
            try:
                core = load_core(store, covalue)
            except KintsugiError:
                core = None
            if core is not None:
                core.resolve = self._resolve
                self._analyse(record, core)
        return record

    def _resolve(self, cid: CoValueID) -> CoValueCore | None:
        if self.cores is not None:
            return self.cores.get(cid)
        if cid not in self._groups:
            if len(self._groups) >= KEEP_GROUPS:
                self._groups.pop(next(iter(self._groups)))
            assert self.store is not None
            try:
                core = load_core(self.store, cid)
            except KintsugiError:
                core = None
            if core is not None:
                core.resolve = self._resolve
            self._groups[cid] = core
        return self._groups[cid]

    # -- from memory -------------------------------------------------------------------------

    def _gather_memory(self, covalue: CoValueID, sink: RowSink | None) -> Generator[int, None, CoValueRecord | None]:
        assert self.cores is not None
        core = self.cores.get(covalue)
        if core is None:
            return None
        record = CoValueRecord(covalue, core.type, core.deleted, core.header)
        for sid, log in sorted(core.sessions.items()):
            session = _session_record(sid, log.count, log.head()[1])
            yield from self._verify(session, LogSessionSource.of(log), sink)
            record.sessions.append(session)
        for sid, error in sorted(core.corrupt.items()):
            session = _session_record(sid, 0, None)
            session.broken = _break_of(error)
            record.sessions.append(session)
        if record.transactions <= self.analyse_max:
            yield 0
            self._analyse(record, core)
        return record

    # -- shared ------------------------------------------------------------------------------

    def _verify(self, session: SessionRecord, source: SessionSource, sink: RowSink | None) -> Iterator[int]:
        recording = _Recording(source, sink)
        if sink is not None:
            session.rows_member = sink.start(source.covalue, session.id)
        verifier = ChainVerifier(recording)
        while not verifier.done:
            examined = verifier.step(self.step_rows)
            yield examined
        session.broken = verifier.failure
        session.verified = verifier.verified
        session.last_made_at = recording.last_made_at
        for n in recording.checkpoints():
            stored = recording.hashes.get(n)
            sig = source.signature(n)
            if stored is not None and sig is not None:
                session.checkpoints.append((n, stored, sig))
        if sink is not None:
            session.rows_written = sink.end()

    def _analyse(self, record: CoValueRecord, core: CoValueCore) -> None:
        try:
            record.invalid = [] if core.deleted else list(core.invalid_transactions())
            record.content = content_snapshot(core)
            record.tombstones = tombstones_of(core)
        except KintsugiError:
            return  # content cannot be computed (e.g. a damaged owner group): not analysed
        record.analysed = True


# -- facts for the anomaly rules ----------------------------------------------------------------


def facts_of(record: CoValueRecord) -> CoValueFacts:
    """What the anomaly rules read of one record."""
    return CoValueFacts(
        record.id,
        record.type,
        record.deleted,
        tuple(SessionFacts(s.id, s.kind, s.count, s.broken, s.last_made_at) for s in record.sessions),
        tuple(record.invalid),
        record.tombstone_session,
    )


# -- CAS slots ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotDump:
    """One CAS slot with its history as kept (oldest first); ``history_dropped`` older
    records the source did not send."""

    row: SlotRow
    history: tuple[CASRecord, ...] = ()
    history_dropped: int = 0


def store_slots(store: Store) -> Iterator[SlotDump]:
    """Every CAS slot of every namespace of ``store``, with its history."""
    for namespace in store.kv_namespaces():
        for key, generation, slot in store.kv.list(namespace):
            yield SlotDump(slot_row(namespace, key, generation, slot), tuple(store.kv.history(namespace, key)))


def slot_facts(dump: SlotDump, key: str | None = None) -> SlotFacts:
    """What the anomaly rules read of one slot (``key``: the key to name it by, e.g. its token)."""
    lost = sum(1 for r in dump.history if r.outcome == "conflict")
    return SlotFacts(dump.row.namespace, dump.row.key if key is None else key, len(dump.history), lost)


def owner_of(header: Header | None) -> CoValueID | None:
    """The owner group named by ``header`` (None: none)."""
    if header is not None and isinstance(header.ruleset, OwnedByGroup):
        return header.ruleset.group
    return None
