"""The Store interface (DESIGN §2, §9): everything the node, diagnostics and the inspector may
ask of a store, as :class:`typing.Protocol` classes and the plain data they exchange.

Code above engine/storage names only these protocols and opens stores with
:func:`engine.storage.open_store`; an implementation lives in its own package below
(engine/storage/sqlite and engine/storage/postgres, implementing the same protocols; nothing
above storage names either).

Rules every implementation keeps:

- Only checkpointed prefixes are stored: a session's stored count is always a checkpoint, so
  what a store holds always verifies.
- A write method returns (a :class:`StoreWriter` future resolves) only once the write is
  durable: an acknowledgement sent after it is true.
- Every write method is one atomic transaction: a replacement commits together with the CAS
  writes of its session switch, a tombstone with the purge of every other session, or
  nothing of them commits.
- Reads return model data and rows — headers, verified :class:`SessionLog`, stored heads,
  windows of ``(index, tx, hash)`` — never CoValues: engine/node builds those.
- Loading verifies: a session whose stored chain does not verify is left out of
  :attr:`StoredCoValue.sessions`, listed in :attr:`StoredCoValue.corrupt` and recorded (when
  the store is writable), never served as valid.
- Failures are :class:`~engine.errors.StorageEnvironmentError` (the environment failed: may
  pass on retry) or :class:`~engine.errors.StorageBugError` (our bug), plus
  :class:`~engine.errors.StoreNotFound` and :class:`~engine.errors.SchemaVersionError` when
  opening; never a database driver's own exception.

Imports: model, kv, ids and errors only (the storage row of the import table).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from engine.errors import IntegrityError
from engine.ids import CoValueID, SessionID
from engine.kv.envelope import Slot
from engine.kv.store import CASResult, KVStore
from engine.model.audit import AuditRecord
from engine.model.header import Header
from engine.model.session_log import SessionLog

__all__ = [
    "GONE_AFTER_MISSED_BEATS",
    "Checkpoint",
    "ClusterRegistry",
    "ClusterStore",
    "CASWrite",
    "ChangeFeed",
    "ChangeLogStore",
    "ChangePage",
    "OwnKV",
    "OwnKVStore",
    "TailRequest",
    "Tails",
    "CoValueReplace",
    "CoValueRow",
    "CorruptRecord",
    "ListedCoValue",
    "NodeBeat",
    "NodeRecord",
    "NodeRegistration",
    "RawRow",
    "SessionWrite",
    "StoreListing",
    "Store",
    "StoreWriter",
    "StoredCoValue",
    "StoredReceipt",
    "StoredSession",
    "StoredTail",
    "StoredSessionRows",
    "StoredCounts",
]

#: ``(index, transaction bytes, stored chain hash h(index+1))``: one row of a session window.
RawRow = tuple[int, bytes, bytes]
#: Stored count of every session a write touched, by ``(CoValue, session)``.
StoredCounts = dict[tuple[CoValueID, SessionID], int]


@dataclass(frozen=True, slots=True)
class SessionWrite:
    """Transactions ``[start, end)`` of ``log`` to append; ``end`` must be a checkpoint.

    ``end`` is fixed when the write is made, so a write queued for later stores exactly the
    prefix that existed then (checkpointed prefixes never change in place). ``start`` is the
    writer's belief of what the store holds: appends continue from what it actually holds.
    """

    log: SessionLog
    start: int
    end: int

    @classmethod
    def pending_of(cls, log: SessionLog, stored: int) -> SessionWrite:
        """Everything ``log`` has signed beyond the ``stored`` count."""
        return cls(log, stored, log.signed_count)


class CASWrite(NamedTuple):
    """A CAS of one slot that commits inside another write's transaction (a session switch)."""

    namespace: str
    key: str
    expected_gen: int
    slot: Slot


@dataclass(frozen=True, slots=True)
class CoValueReplace:
    """One CoValue's part of a recovery (DESIGN §7.2): ``logs`` written whole in place of
    whatever the store holds of their sessions, ``remove`` sessions dropped, and with
    ``deleted`` the CoValue tombstoned (every non-delete session dropped)."""

    header: Header
    logs: Sequence[SessionLog] = ()
    remove: Sequence[SessionID] = ()
    deleted: bool = False


#: A cursor or marker in its own namespace: ``(namespace, key, value)`` (see
#: :meth:`Store.put_checkpoint`).
Checkpoint = tuple[str, str, bytes]


class StoredReceipt(NamedTuple):
    """A signed recovery receipt as stored: its id (hash), time, CBOR body and signature."""

    id: bytes
    at_ms: int
    body: bytes
    sig: bytes


class CoValueRow(NamedTuple):
    """One CoValue as the store lists it."""

    id: CoValueID
    type: str
    deleted: bool


@dataclass(frozen=True, slots=True)
class StoredSession:
    """What the store records beside a session's rows: its count and head ``h(count)``."""

    covalue: CoValueID
    session: SessionID
    count: int
    head: bytes


@dataclass(frozen=True, slots=True)
class StoredSessionRows:
    """A stored session's bookkeeping, read in one go for a windowed viewer.

    ``key`` identifies this stored copy of the session: a replace (which writes the session
    anew) gives it another, so a viewer notices a replacement. ``checkpoints`` are the counts
    ``n`` with a stored signature, sorted.
    """

    key: int
    count: int
    head: bytes
    checkpoints: tuple[int, ...]


class CorruptRecord(NamedTuple):
    """A session whose stored chain failed verification: where it first broke and why."""

    covalue: CoValueID
    session: SessionID
    #: the first broken index
    broken_at: int
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class ListedCoValue:
    """A CoValue as a listing reads it: ``header`` is left undecoded (one damaged header must
    not stop a listing)."""

    id: CoValueID
    type: str
    deleted: bool
    header: bytes


@dataclass(frozen=True, slots=True)
class StoreListing:
    """Everything a store-wide listing shows, without reading any transaction:
    every CoValue (sorted by id), ``(CoValue, session id as stored, count)`` of every
    session, and every corrupt record."""

    covalues: list[ListedCoValue]
    sessions: list[tuple[CoValueID, str, int]]
    corrupt: list[CorruptRecord]


@dataclass(slots=True)
class StoredCoValue:
    """A CoValue as stored: its header, deleted flag, every session that verified and the
    sessions that did not (with the first failure). The node turns it into a CoValueCore."""

    header: Header
    id: CoValueID
    deleted: bool
    sessions: dict[SessionID, SessionLog] = field(default_factory=dict)
    corrupt: dict[SessionID, IntegrityError] = field(default_factory=dict)


@runtime_checkable
class StoreWriter(Protocol):
    """A store's ordered background writer: its own connection on its own thread, so a
    durable commit never blocks the caller's event loop.

    Writes commit strictly in submission order (grouped: one fsync for many); a write that
    fails fails alone, through its future.
    """

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the beginning of :meth:`close`."""
        ...

    def start(self) -> None:
        """Open the writer's connection; raises what opening the store raises."""
        ...

    def write(
        self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()
    ) -> asyncio.Future[StoredCounts]:
        """Queue :meth:`Store.write`; the future resolves on the calling loop once committed.

        Raises :class:`~engine.errors.UsageError` when the writer is not running or its
        queue is full.
        """
        ...

    def drain_blocking(self) -> None:
        """Block until every write submitted so far has committed (or failed)."""
        ...

    async def close(self) -> None:
        """Finish every queued write, then stop."""
        ...

    def close_blocking(self) -> None:
        """:meth:`close` for callers outside a running loop."""
        ...


@runtime_checkable
class Store(Protocol):
    """One store (DESIGN §9). Synchronous; one instance per thread."""

    @property
    def location(self) -> str:
        """Where the store is, as :func:`engine.storage.open_store` accepts it again."""
        ...

    @property
    def readonly(self) -> bool: ...

    @property
    def version(self) -> tuple[int, int]:
        """Schema (major, minor); (0, 0) when the location holds no Kintsugi schema yet."""
        ...

    @property
    def kv(self) -> KVStore:
        """The CAS slots of every account in this store (DESIGN §8)."""
        ...

    def close(self) -> None: ...

    # -- writing -------------------------------------------------------------------------

    def write(self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()) -> StoredCounts:
        """Store headers (kept if already there) and session appends as one transaction.

        Appends continue from what the store holds, after checking that its head is on the
        log's chain (:class:`~engine.errors.StorageBugError` if not); non-delete sessions of
        a CoValue stored as deleted are refused (their count is 0). Returns the new stored
        counts.
        """
        ...

    def replace_sessions(
        self,
        header: Header,
        logs: Sequence[SessionLog],
        *,
        cas: Sequence[CASWrite] = (),
        checkpoints: Sequence[Checkpoint] = (),
    ) -> list[CASResult]:
        """Write each of ``logs`` whole in place of whatever the store holds of its session
        (dropping its corrupt record), together with ``cas`` and ``checkpoints`` (a
        conflict session's fork record), as one transaction.

        Returns the result of each CAS write. If any of them conflicts, nothing at all is
        written (the results say which conflicted).
        """
        ...

    def mark_deleted(self, header: Header, delete_sessions: Sequence[SessionLog], purged: Iterable[SessionID]) -> None:
        """Store a tombstone as one transaction: the delete sessions in (whole), ``purged``
        and every other non-delete session out, the CoValue marked deleted."""
        ...

    def put_checkpoint(self, namespace: str, key: str, value: bytes) -> None:
        """Set a cursor in its own namespace (sync progress, recovery exchanges, markers)."""
        ...

    def apply_recovery(
        self,
        replaces: Sequence[CoValueReplace],
        *,
        receipt: StoredReceipt | None,
        audit: AuditRecord | None,
        checkpoints: Sequence[Checkpoint] = (),
    ) -> None:
        """Every replacement of one recovery, its receipt, its audit record and
        ``checkpoints`` (the fork records of the conflict sessions it makes) as ONE
        transaction: a crash leaves all of them or none. Raises
        :class:`~engine.errors.StorageBugError` (nothing written) when ``audit`` does not
        follow the stored log."""
        ...

    def append_audit(self, record: AuditRecord) -> None:
        """Append one record to the audit log (one transaction). Raises
        :class:`~engine.errors.StorageBugError` when it does not follow the last stored
        record: the log is append-only and never forks."""
        ...

    def background_writer(self) -> StoreWriter:
        """A new, not yet started :class:`StoreWriter` on this store, with its own
        connection."""
        ...

    # -- reading -------------------------------------------------------------------------

    def covalue_ids(self) -> list[CoValueRow]:
        """Every CoValue in the store, sorted by id."""
        ...

    def covalue_row(self, covalue: CoValueID) -> CoValueRow | None:
        """One CoValue's row; None when the store does not have it."""
        ...

    def has(self, covalue: CoValueID) -> bool: ...

    def stored_sessions(self, covalue: CoValueID) -> list[StoredSession]:
        """Count and head of every stored session of ``covalue``, sorted by session id."""
        ...

    def load_covalue(self, covalue: CoValueID) -> StoredCoValue | None:
        """The CoValue with every session verified; None when the store does not have it.

        Raises :class:`~engine.errors.StorageBugError` when its stored header is damaged.
        """
        ...

    def load_session(self, covalue: CoValueID, session: SessionID) -> SessionLog:
        """The stored rows of one session as a log, unverified (empty when not stored).

        Raises :class:`~engine.errors.ChainError` when the rows themselves are damaged.
        """
        ...

    def session_rows(self, covalue: CoValueID, session: SessionID) -> StoredSessionRows | None:
        """The bookkeeping of one stored session; None when it is not stored."""
        ...

    def session_window(self, covalue: CoValueID, session: SessionID, offset: int, limit: int) -> list[RawRow]:
        """Rows from ``offset`` (at most ``limit``), reading only the storage that overlaps
        them: for views of huge sessions. Raises :class:`~engine.errors.ChainError` when a
        stored block is unreadable."""
        ...

    def session_hash(self, covalue: CoValueID, session: SessionID, index: int) -> bytes | None:
        """The stored chain hash of row ``index`` (``h(index + 1)``), read without the
        transactions around it; None when that row is not stored."""
        ...

    def signature(self, key: int, n: int) -> bytes | None:
        """The signature of checkpoint ``n`` of the stored session copy ``key`` (see
        :class:`StoredSessionRows`); None when there is none."""
        ...

    def corrupt_sessions(self) -> list[CorruptRecord]:
        """Every recorded corrupt session, sorted by CoValue and session."""
        ...

    def listing(self) -> StoreListing:
        """Every CoValue, session count and corrupt record, without reading transactions."""
        ...

    def kv_namespaces(self) -> list[str]:
        """Every KV namespace with at least one slot, sorted."""
        ...

    def get_checkpoint(self, namespace: str, key: str) -> bytes | None:
        """A cursor set with :meth:`put_checkpoint`; None when there is none."""
        ...

    def audit_log(self) -> list[AuditRecord]:
        """Every audit record, oldest first (empty for a store older than schema 1.1)."""
        ...

    def receipts(self) -> list[StoredReceipt]:
        """Every stored recovery receipt, oldest first."""
        ...


# -- the node registry (an optional capability) ----------------------------------------------

#: Heartbeats a node may miss before the registry counts it gone: with heartbeats every
#: ``interval_ms``, a node is gone once its last one is older than this many intervals (one
#: slow beat, or a database hiccup, does not make a live node look dead).
GONE_AFTER_MISSED_BEATS = 3


@dataclass(frozen=True, slots=True)
class NodeRegistration:
    """Who a node of a cluster is: ``node`` (unique per running node process), its
    ``account``, the ``url`` it advertises for sync and the heartbeat interval it keeps."""

    node: str
    account: str
    url: str
    interval_ms: int


@dataclass(frozen=True, slots=True)
class NodeBeat:
    """What a node reports with a heartbeat: how many peers it has and, compactly, who they
    are (``peer_rows``: plain JSON-able maps, at most what the registry keeps); its change
    ``cursor`` in the database and how far behind the database's newest change it is
    (``lag``), when it knows them (None: not reported)."""

    peers: int = 0
    peer_rows: Sequence[dict[str, object]] = ()
    cursor: int | None = None
    lag: int | None = None


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One row of the registry as read, with every time by the database's clock (nodes'
    clocks may disagree; the database's is the one all of them share): ``started_ms``,
    ``beat_ms`` (the last heartbeat) and ``now_ms`` (when this was read)."""

    node: str
    account: str
    url: str
    interval_ms: int
    started_ms: int
    beat_ms: int
    now_ms: int
    peers: int
    peer_rows: tuple[dict[str, object], ...] = ()
    cursor: int | None = None
    lag: int | None = None

    @property
    def age_ms(self) -> int:
        """Milliseconds since the last heartbeat (never negative)."""
        return max(0, self.now_ms - self.beat_ms)

    @property
    def gone(self) -> bool:
        """True once the node missed :data:`GONE_AFTER_MISSED_BEATS` heartbeats in a row."""
        return self.age_ms > self.interval_ms * GONE_AFTER_MISSED_BEATS


@runtime_checkable
class ClusterRegistry(Protocol):
    """The nodes that share one store and their heartbeats. Synchronous, one instance per
    thread, its own connection (a heartbeat never waits behind the store's reads). Failures
    are the storage errors of the :class:`Store` rules."""

    def register(self, node: NodeRegistration) -> None:
        """Record ``node`` as started now and alive. A row at the same URL (a node that ran
        there before) is replaced; rows gone for long are forgotten."""
        ...

    def heartbeat(self, node: NodeRegistration, beat: NodeBeat) -> None:
        """Record a heartbeat of ``node`` now, with what it reports; a node whose row was
        forgotten meanwhile (it stalled for long) is registered again."""
        ...

    def nodes(self) -> list[NodeRecord]:
        """Every registered node, gone ones included, sorted by URL then node id."""
        ...

    def unregister(self, node: str) -> None:
        """Remove ``node``'s row (a clean shutdown); nothing when it has none."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ClusterStore(Protocol):
    """A store that several nodes may share (PostgreSQL): it keeps a node registry. A store
    without it (SQLite: one file, one node) is a cluster of one."""

    def cluster_registry(self) -> ClusterRegistry:
        """A new registry on this store's database, with a connection of its own."""
        ...


@dataclass(frozen=True, slots=True)
class ChangePage:
    """What a node reads of a shared store's change log after its cursor: the CoValues that
    other nodes changed (ids only), the cursor to continue from, the newest change number
    (``newest > cursor``: read again), and ``gap`` when changes after the cursor were already
    pruned (the reader must then refresh everything it holds)."""

    cursor: int
    newest: int
    covalues: tuple[CoValueID, ...] = ()
    gap: bool = False
    #: CAS slots other nodes stored, as ``(namespace, key)`` in the order stored (each once)
    slots: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TailRequest:
    """What a node asks a shared store about one CoValue (:class:`StoredTail`): ``held`` maps
    each session to check to the count memory holds of it (signed); with ``every``, also
    every other session the store holds (read whole)."""

    held: Mapping[SessionID, int]
    every: bool = False


@dataclass(frozen=True, slots=True)
class StoredTail:
    """What a shared store holds of one session beyond what a node holds: its stored
    ``count`` and ``head`` (``h(count)``), and the stored rows from ``after`` (the count the
    node said it held, or 0 when the store holds no more than that): ``before`` is the stored
    ``h(after)`` (empty for 0, the chain base), then ``txs``/``hashes`` of rows ``after …
    count - 1`` and the checkpoint signatures above ``after``. Unverified: a node verifies
    it like content from a peer. ``error`` (a :class:`ChainError`'s text) when the stored
    rows are damaged; the rest is then empty."""

    session: SessionID
    count: int
    head: bytes
    after: int = 0
    before: bytes = b""
    txs: Sequence[bytes] = ()
    hashes: Sequence[bytes] = ()
    sigs: Mapping[int, bytes] = field(default_factory=dict)
    error: str | None = None


#: What a shared store answers to :class:`TailRequest` s: each CoValue's sessions it holds
#: beyond or other than the node's (a CoValue it does not hold is left out).
Tails = dict[CoValueID, list[StoredTail]]


class ChangeFeed(Protocol):
    """One node's view of the change log of a store several nodes write (PostgreSQL): woken
    by notifications, read from a cursor (:mod:`engine.storage.postgres.feed`)."""

    #: names the store instance whose own changes the feed leaves out
    origin: str

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (the listening connection is up)."""
        ...

    def start(self, wake: Callable[[tuple[str, ...] | None], None]) -> None:
        """Listen; ``wake`` is called on the feed's own thread after each notification of
        another node's commit, with the CoValue ids it announced (None: unknown, read the log)."""
        ...

    def newest(self) -> int:
        """The newest change number in the store."""
        ...

    def read(self, cursor: int) -> concurrent.futures.Future[ChangePage]:
        """A page of the changes after ``cursor`` (typed storage errors on failure)."""
        ...

    def read_tails(
        self, requests: Mapping[CoValueID, TailRequest], *, exclude: SessionID
    ) -> concurrent.futures.Future[Tails]:
        """What the store holds now beyond ``requests`` (session ``exclude``, the node's own,
        left out), read in one snapshot on a connection of the feed's own (typed storage
        errors on failure)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class OwnKV:
    """A store's CAS slots on a connection of their own (:meth:`OwnKVStore.open_kv`), for
    calls made on one other thread than the store's; ``close`` ends that connection."""

    kv: KVStore
    close: Callable[[], None]


@runtime_checkable
class OwnKVStore(Protocol):
    """A store whose CAS slots a node can use from a thread of their own (SQLite, PostgreSQL)."""

    def open_kv(self) -> OwnKV:
        """The store's CAS slots (as :attr:`Store.kv`: the same writer name, and on a shared
        store the same change log) on a new connection of their own, so another thread may
        wait on them."""
        ...


@runtime_checkable
class ChangeLogStore(OwnKVStore, Protocol):
    """A store that other nodes write too: its writes are recorded in a change log that
    nodes follow, and it answers which sessions it holds right now, so a node checks what it
    is sent against the store (not only its memory) before acknowledging it."""

    def change_feed(self) -> ChangeFeed:
        """A new feed on this store's change log, with connections of its own."""
        ...

    def read_tails(self, requests: Mapping[CoValueID, TailRequest], *, exclude: SessionID) -> Tails:
        """See :meth:`ChangeFeed.read_tails` (here on the store's own connection, waiting)."""
        ...
