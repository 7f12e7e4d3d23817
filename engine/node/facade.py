"""LocalNode: the facade that app code embeds (DESIGN §2): reading, writing, receiving and
subscriptions over one account's replica.

A LocalNode holds one account's key, an optional :class:`~engine.storage.interface.Store` and
the CoValues it has loaded. It writes in one leased session (DESIGN §5,
:mod:`engine.node.leases`): two processes of one account on one store never share a session,
and a session whose process died is never written again.

Write batches: transactions are signed once per batch, not once per transaction. A batch is
the body of ``with node.batch():``; outside one, it is the current turn of the running asyncio
loop (the node flushes with ``call_soon``), or, with no loop running, the single write. A
batch is also cut every :data:`MAX_BATCH_TRANSACTIONS` transactions or
:data:`MAX_BATCH_BYTES` bytes per session. :meth:`LocalNode.flush` signs, commits to the store
(one transaction for the whole batch) and then notifies subscribers: nobody hears of a change
before it is stored.

Background commits: a node that shares its asyncio loop with other work (a serving node, the
inspector's embedded node) is opened with ``background_commits=True``. Its batches are then
committed, in order, by the store's background writer (:mod:`engine.node.commits`), so an
fsync never blocks the loop. Subscribers still hear of a change only after it committed;
:attr:`LocalNode.committed_seq` and :meth:`LocalNode.durable` tell the sync layer when what it
acknowledges is on disk. Replacing a session and tombstoning (rare) first wait for the queue,
then commit on the loop thread.

Receiving (the sync layer calls these): content applies only after it verifies; a correction
is verified and applied by :mod:`engine.recovery.correction`, and the replacement, its
conflict session and the session switch are stored in one transaction. A replace or
tombstone whose commit fails drops the CoValue from memory, so a retry redoes it whole.

Example::

    node = LocalNode.open("~/.local/share/myapp/store", AccountKey.load("me.key"))
    group = node.create_group()
    todo = node.create_map(group.id)
    node.set(todo.id, "title", "buy milk")
    node.get_map(todo.id)   # {'title': 'buy milk'}
    node.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from engine.content.authority import Kept
from engine.covalue import ApplyReport, CoValueCore, ReplaceOutcome
from engine.crypto import AccountKey
from engine.errors import (
    LeaseError,
    PermissionDenied,
    StorageEnvironmentError,
    UnknownCoValue,
    UsageError,
)
from engine.ids import (
    AccountID,
    CoValueID,
    RandomBytes,
    SessionID,
    is_delete_session,
    new_delete_session_id,
    new_session_id,
)
from engine.kv.lease import SessionLeases
from engine.kv.store import KVStore, MemoryKV, Stored
from engine.model.header import GroupRuleset, Header, OwnedByGroup, Ruleset, UnsafeAllowAll, new_header
from engine.model.known_state import KnownState
from engine.model.session_log import MAX_BATCH_BYTES, MAX_BATCH_TRANSACTIONS, Chunk
from engine.node import access
from engine.node.changes import ChangeEvent, ChangeKind, Subscriber
from engine.node.cluster import SharedStoreNode, refresh_sessions
from engine.node.commits import BackgroundCommits, CommitStatus
from engine.node.leases import LeaseKeeper
from engine.node.loading import load_core
from engine.node.revocations import held_writes
from engine.recovery.correction import Replacement, apply_correction
from engine.storage.interface import ChangeLogStore, SessionWrite, Store, StoredCounts
from engine.storage.opener import open_store

__all__ = ["ChangeEvent", "ChangeKind", "LocalNode", "now_ms"]

logger = logging.getLogger(__name__)


def now_ms() -> int:
    """The wall clock in Unix milliseconds: a node's default clock."""
    return time.time_ns() // 1_000_000


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LocalNode(CommitStatus, SharedStoreNode):
    """One account's replica. Not thread-safe: use it from one thread (or one asyncio loop).

    ``store`` None keeps everything in memory. ``session`` given explicitly bypasses the
    lease (tests that fork on purpose, a client restored from a backup).
    """

    def __init__(
        self,
        account: AccountKey,
        store: Store | None = None,
        *,
        clock_ms: Callable[[], int] = now_ms,
        instance_id: str | None = None,
        session: SessionID | None = None,
        random_bytes: RandomBytes = os.urandom,
        background_commits: bool = False,
    ) -> None:
        self.account = account
        #: source of header uniqueness and new session ids (a seeded one makes runs repeatable)
        self.random_bytes = random_bytes
        self.store = store
        # Other nodes write this store (a cluster): content is judged against it, not only
        # memory (engine.node.cluster). Checked once: a Protocol isinstance is slow.
        self._shared_store = isinstance(store, ChangeLogStore)
        self.clock_ms = clock_ms
        self.instance_id = instance_id or f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.kv: KVStore = store.kv if store is not None else MemoryKV()
        self.leases = SessionLeases(self.kv, account.account_id, self.instance_id, clock_ms=clock_ms)
        self._lease = LeaseKeeper(self.leases, clock_ms, leased=session is None)
        self.session: SessionID = self._lease.acquire() if session is None else session
        self.covalues: dict[CoValueID, CoValueCore] = {}
        #: what the store holds of each session (its stored count), as far as this node knows
        self._stored: dict[tuple[CoValueID, SessionID], int] = {}
        self._dirty: dict[CoValueID, ChangeKind] = {}
        self._pending_bytes = 0
        self._pending_count = 0
        self._batch_depth = 0
        self._store_checked: frozenset[CoValueID] = frozenset()
        self._flush_scheduled = False
        self._subscribers: list[tuple[CoValueID | None, Subscriber]] = []
        self._last_made_at = 0
        self.closed = False
        writer = store.background_writer() if background_commits and store is not None else None
        self._commits = BackgroundCommits(writer, self.flush)

    @classmethod
    def open(cls, store: str | os.PathLike[str] | Store | None, account: AccountKey, **kwargs: Any) -> LocalNode:
        """A node on the store at ``store`` — a location (a directory or file; created if
        missing), or a store already open — or in memory when ``store`` is None."""
        if isinstance(store, str | os.PathLike):
            store = open_store(store, writer=kwargs.get("instance_id"))
        return cls(account, store, **kwargs)

    @property
    def account_id(self) -> AccountID:
        return self.account.account_id

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Persist everything, release the session lease and close the store."""
        if self.closed:
            return
        self._commits.close()
        self.flush()
        self._lease.release(self.session)
        if self.store is not None:
            self.store.close()
        self.closed = True

    async def aclose(self) -> None:
        """:meth:`close`, after waiting (without blocking the loop) for background commits."""
        await self.durable()
        self.close()

    def __enter__(self) -> LocalNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def get(self, covalue: CoValueID) -> CoValueCore:
        """The CoValue, loaded (and verified) from the store on first use.

        Raises :class:`UnknownCoValue` when neither memory nor the store has it.
        """
        core = self.get_or_none(covalue)
        if core is None:
            raise UnknownCoValue(covalue)
        return core

    def get_or_none(self, covalue: CoValueID) -> CoValueCore | None:
        core = self.covalues.get(covalue)
        if core is None and self.store is not None:
            core = load_core(self.store, covalue)
            if core is not None:
                self._adopt(core)
                for sid, log in core.sessions.items():
                    self._stored[(covalue, sid)] = log.signed_count
        return core

    def _adopt(self, core: CoValueCore) -> None:
        core.resolve = self.get_or_none
        self.covalues[core.id] = core

    def covalue_ids(self) -> list[CoValueID]:
        """Ids held in memory or in the store."""
        ids = set(self.covalues)
        if self.store is not None:
            ids.update(row.id for row in self.store.covalue_ids())
        return sorted(ids)

    def get_map(self, covalue: CoValueID) -> dict[str, Any]:
        return self.get(covalue).comap().items()

    def known_state(self, covalue: CoValueID) -> KnownState:
        """What this node holds of ``covalue`` (signed prefixes only; flushes first)."""
        self.flush()
        return self.get(covalue).known_state()

    # -- creating and writing ----------------------------------------------------------------

    def _create(self, kind: str, ruleset: Ruleset, meta: Any) -> CoValueCore:
        header = new_header(kind, ruleset, meta=meta, created_at=self._made_at(), uniqueness=self.random_bytes(12))
        core = CoValueCore(header)
        self._adopt(core)
        self._mark_dirty(core.id, ChangeKind.LOCAL)
        self._after_write()
        return core

    def create_group(self, meta: Any = None) -> CoValueCore:
        """A new group with this node's account as its initial admin."""
        return self._create("group", GroupRuleset(self.account_id), meta)

    def create_map(self, owner: CoValueID | None, meta: Any = None) -> CoValueCore:
        """A new CoMap owned by group ``owner`` (None: ``unsafeAllowAll``, anyone may write)."""
        if owner is not None:
            self.get(owner).group()
            return self._create("comap", OwnedByGroup(owner), meta)
        return self._create("comap", UnsafeAllowAll(), meta)

    def set_role(self, group: CoValueID, account: AccountID, role: str) -> None:
        """Give ``account`` a role in ``group``. Raises :class:`PermissionDenied` unless admin."""
        core = self.get(group)
        core.check_group_write(self.account_id)
        kept = None
        if role != "admin":  # a demotion: it keeps the account's writes this replica holds
            self.flush()
            kept = held_writes(self.covalues.values(), self.store, group, account)
        self._write(core, [["role", account, role]], kept)

    def set(self, covalue: CoValueID, key: str, value: Any) -> None:
        self._write(self.get(covalue), [["set", key, value]])

    def delete_key(self, covalue: CoValueID, key: str) -> None:
        self._write(self.get(covalue), [["del", key]])

    def write_changes(self, covalue: CoValueID, changes: list[list[Any]]) -> None:
        """Several changes in one transaction (applied together or not at all)."""
        self._write(self.get(covalue), changes)

    def _write(self, core: CoValueCore, changes: list[list[Any]], kept: Kept | None = None) -> None:
        self._check_open()
        core.add_local(self.session, changes, self._made_at(), kept)
        log = core.sessions[self.session]
        self._pending_count += 1
        self._pending_bytes += len(log.txs[-1])
        self._mark_dirty(core.id, ChangeKind.LOCAL)
        if self._pending_count >= MAX_BATCH_TRANSACTIONS or self._pending_bytes >= MAX_BATCH_BYTES:
            self._sign_all()
        self._after_write()

    def delete_covalue(self, covalue: CoValueID) -> None:
        """Tombstone ``covalue``: a signed delete marker; every other session is purged.

        Raises :class:`PermissionDenied` unless this account is an admin of the owner group.
        """
        self._check_open()
        core = self.get(covalue)
        if core.deleted:
            return
        self.flush()
        purged = [sid for sid in core.sessions if not is_delete_session(sid)]
        core.delete(self.account, new_delete_session_id(self.account_id, self.random_bytes), self._made_at())
        with self._reload_on_failure(core.id):
            self._store_tombstone(core, purged)
        self._dirty.pop(core.id, None)
        self._notify(ChangeEvent(core.id, ChangeKind.DELETED))

    def _store_tombstone(self, core: CoValueCore, purged: list[SessionID]) -> None:
        """Store a tombstone now (after the queued commits): the delete sessions in, the
        purged sessions out."""
        if self.store is not None:
            delete_logs = [core.sessions[sid] for sid in core.delete_sessions()]
            self._store_now().mark_deleted(core.header, delete_logs, purged)
        for sid in purged:
            self._stored.pop((core.id, sid), None)
        for sid in core.delete_sessions():
            self._stored[(core.id, sid)] = core.sessions[sid].signed_count

    # -- batches and commits -----------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group writes: signed at most every 1,000 transactions / 100 KiB, committed once."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self.flush()

    def _after_write(self) -> None:
        if self._batch_depth:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush)

    def _sign_all(self) -> None:
        for cid in self._dirty:
            self.covalues[cid].sign_pending(self.account)
        self._pending_bytes = self._pending_count = 0

    def flush(self) -> None:
        """Sign pending writes, commit them in one store transaction, notify subscribers."""
        self._flush_scheduled = False
        if self.closed or not self._dirty:
            return
        self._sign_all()
        dirty, self._dirty = self._dirty, {}
        if self.store is not None:
            writes = []
            headers = []
            for cid in dirty:
                core = self.covalues[cid]
                headers.append(core.header)
                for sid, log in core.sessions.items():
                    stored = self._stored.get((cid, sid), 0)
                    if log.signed_count > stored:
                        writes.append(SessionWrite.pending_of(log, stored))
            if self._commits.active and _loop_running():
                self._commit_in_background(headers, writes, dirty)
                return
            try:
                counts = self._store_now().write(headers, writes)
            except BaseException:
                self._dirty.update(dirty)
                raise
            self._stored.update(counts)
            self._renew_lease_if_due()
        for cid, kind in dirty.items():
            self._notify(ChangeEvent(cid, kind))

    def _commit_in_background(
        self, headers: list[Header], writes: list[SessionWrite], dirty: dict[CoValueID, ChangeKind]
    ) -> None:
        """Hand one batch to the writer thread; subscribers hear of it once it committed.

        ``_stored`` advances now (the next batch appends after this one; appends continue from
        what the store actually holds anyway) and goes back if the commit fails.
        """
        before: StoredCounts = {
            (w.log.covalue, w.log.session): self._stored.get((w.log.covalue, w.log.session), 0) for w in writes
        }
        for w in writes:
            self._stored[(w.log.covalue, w.log.session)] = w.end

        def settled(ok: bool) -> None:
            if ok:
                for cid, kind in dirty.items():
                    self._notify(ChangeEvent(cid, kind))
                if not self.closed:
                    try:
                        self._renew_lease_if_due()
                    except StorageEnvironmentError as exc:
                        # Nobody to raise it to here; the next commit tries again.
                        logger.warning("could not renew the session lease after a commit: %s", exc)
                return
            for w in writes:
                key, core = (w.log.covalue, w.log.session), self.covalues.get(w.log.covalue)
                # Only if nothing (a replace, a purge) changed this session since.
                if self._stored.get(key) == w.end and core is not None and core.sessions.get(w.log.session) is w.log:
                    self._stored[key] = before[key]
            for cid, kind in dirty.items():
                if cid in self.covalues:
                    self._dirty.setdefault(cid, kind)

        self._commits.submit(headers, writes, settled)

    def stored_count(self, covalue: CoValueID, session: SessionID) -> int:
        """How much of ``session`` the store holds, as far as this node knows (0 without a
        store); a background commit counts from when it is handed over until it fails."""
        return self._stored.get((covalue, session), 0)

    def _store_now(self) -> Store:
        """The store, for a commit on this thread: queued background commits go first, so
        the order of commits is the order of changes."""
        assert self.store is not None
        self._commits.drain()
        return self.store

    @contextmanager
    def _reload_on_failure(self, covalue: CoValueID) -> Iterator[None]:
        """If the commit fails, forget the in-memory change: reload the CoValue from the store,
        so memory and store agree and a retry does the whole operation again."""
        try:
            yield
        except BaseException:
            self.covalues.pop(covalue, None)
            for key in [k for k in self._stored if k[0] == covalue]:
                del self._stored[key]
            self._dirty.pop(covalue, None)
            raise

    # -- the session lease -------------------------------------------------------------------

    def _renew_lease_if_due(self) -> None:
        if self._lease.due():
            self.renew_lease()

    def renew_lease(self) -> None:
        """Extend this node's session lease. If another process retired it meanwhile (the
        lease expired while this node was idle), move to a fresh leased session: what the old
        session holds is already stored, and nobody will write it again."""
        if not self._lease.leased or self.closed:
            return
        try:
            self._lease.renew(self.session)
        except LeaseError:
            self.flush()
            old, self.session = self.session, self._lease.acquire()
            logger.warning("lease of %s was taken while idle; writing continues in %s", old, self.session)

    def move_to_new_session(self, why: str) -> None:
        """Write on in a fresh leased session from now on (the current one was rewritten);
        the old one is never written again."""
        self.flush()
        self.session = self._lease.acquire()
        logger.info("%s; writing continues in %s", why, self.session)

    def _mark_dirty(self, covalue: CoValueID, kind: ChangeKind) -> None:
        self._dirty.setdefault(covalue, kind)

    def _made_at(self) -> int:
        self._last_made_at = max(self._last_made_at, self.clock_ms())
        return self._last_made_at

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError("node is closed")

    # -- receiving (the sync layer calls these) ----------------------------------------------

    def add_header(self, header: Header) -> CoValueCore:
        """Adopt a CoValue whose header arrived from a peer (verified against its id)."""
        existing = self.get_or_none(header.covalue_id())
        if existing is not None:
            return existing
        core = CoValueCore(header)
        self._adopt(core)
        self._mark_dirty(core.id, ChangeKind.REMOTE)
        if not self._batch_depth:
            self.flush()
        return core

    def apply_content(self, covalue: CoValueID, new: dict[SessionID, Chunk]) -> ApplyReport:
        """Verify and apply received chunks; commit what applied before returning.

        Inside :meth:`batch` the commit happens when the batch ends (one commit for a whole
        frame of messages); the sync layer acknowledges only after that. A deleted CoValue is
        purged at once. See :class:`ApplyReport`.
        """
        core = self.get(covalue)
        self._sign_all()
        # Judge it against what the store holds now, not only memory: other nodes may have
        # written these sessions (see engine.node.cluster).
        if self._shared_store and covalue not in self._store_checked:
            refresh_sessions(self.store, core, new, own=self.session, stored_counts=self._stored, notify=self._notify)
        report = core.apply_content(new)
        if report.became_deleted:
            self._store_tombstone(core, report.purged)
            self._dirty[covalue] = ChangeKind.DELETED
        elif report.changed:
            self._mark_dirty(covalue, ChangeKind.REMOTE)
            if core.type == "group":
                self._recheck_tombstones(covalue)
        if not self._batch_depth:
            self.flush()
        return report

    def _recheck_tombstones(self, group: CoValueID) -> None:
        """A group changed or arrived: delete markers of CoValues it owns that could not be
        checked before (their owner group was missing) may now be valid."""
        for core in list(self.covalues.values()):
            ruleset = core.header.ruleset
            if core.deleted or not core.delete_sessions():
                continue
            if not (isinstance(ruleset, OwnedByGroup) and ruleset.group == group):
                continue
            purged = core.recheck_deleted()
            if core.deleted:
                self._store_tombstone(core, purged)
                self._dirty[core.id] = ChangeKind.DELETED

    def replace_session(self, covalue: CoValueID, session: SessionID, chunk: Chunk) -> ReplaceOutcome:
        """Install an authoritative history of ``session`` (DESIGN §7.1,
        :func:`engine.recovery.correction.apply_correction`).

        When this node owns the session, its divergent tail goes to a conflict session and
        the node moves to a brand-new leased session; the replacement, the conflict session
        and the session switch commit as one store transaction. Idempotent: running it again
        with the same history changes nothing. Raises what
        :func:`engine.recovery.correction.replace_session` raises, with nothing changed, and
        the store's errors (or :class:`PermissionDenied` when another instance changed the
        lease meanwhile), with the CoValue dropped from memory.
        """
        core = self.get(covalue)
        self.flush()
        replacement = apply_correction(
            core,
            session,
            chunk,
            account=self.account,
            writing=self.session,
            new_session=lambda: new_session_id(self.account_id, self.random_bytes),
            persist=self._persist_replacement if self.store is not None else None,
        )
        outcome = replacement.outcome
        if not outcome.changed:
            return outcome
        if replacement.switch_to is not None:
            logger.info("session %s was corrected; writing continues in %s", session, replacement.switch_to)
            self.session = replacement.switch_to
            self._lease.restart()
        self._notify(ChangeEvent(covalue, ChangeKind.REPLACED))
        return outcome

    def _persist_replacement(self, replacement: Replacement) -> None:
        """Store a replacement, the conflict session's fork record and, when writing moves to
        a new session, the lease switch, in one transaction (after the queued commits)."""
        old = replacement.outcome.session
        covalue = replacement.logs[0].covalue
        switch = [] if replacement.switch_to is None else self._lease.switch_writes(old, replacement.switch_to)
        with self._reload_on_failure(covalue):
            store = self._store_now()
            record = replacement.fork_record()
            results = store.replace_sessions(
                replacement.header, replacement.logs, cas=switch, checkpoints=[] if record is None else [record]
            )
            if not all(isinstance(result, Stored) for result in results):
                raise PermissionDenied(f"lease of {old} changed under this instance")
        for log in replacement.logs:
            self._stored[(covalue, log.session)] = log.signed_count

    # -- access (the sync layer asks) --------------------------------------------------------

    def can_read(self, account: AccountID, covalue: CoValueID) -> bool:
        """May ``account`` read ``covalue``? Members of the owner group (any role but
        ``revoked``) may; anyone may read ``unsafeAllowAll`` CoValues; this node's own account
        reads everything it holds (see :mod:`engine.node.access`)."""
        return account == self.account_id or access.can_read(account, self.get_or_none(covalue))

    def covalues_owned_by(self, group: CoValueID) -> list[CoValueID]:
        """Ids of the CoValues this replica holds whose owner group is ``group``, sorted."""
        return access.owned_by(group, self.covalues.values(), self.store)

    def kv_items(self, namespace: str, prefix: str = "") -> list[dict[str, Any]]:
        """CAS slots of ``namespace`` as ``{"key", "generation", "state"}`` (values left out)."""
        return access.kv_items(self.kv, namespace, prefix)

    def kv_namespaces(self) -> list[str]:
        """Namespaces that hold CAS slots in this node's store (admins list them)."""
        return [self.account_id] if self.store is None else self.store.kv_namespaces()

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, callback: Subscriber, covalue: CoValueID | None = None) -> Callable[[], None]:
        """Call ``callback`` after each change of ``covalue`` (None: of any CoValue).

        Returns a function that unsubscribes. Exceptions from callbacks are logged, not raised.
        """
        entry = (covalue, callback)
        self._subscribers.append(entry)

        def unsubscribe() -> None:
            if entry in self._subscribers:
                self._subscribers.remove(entry)

        return unsubscribe

    def _notify(self, event: ChangeEvent) -> None:
        for covalue, callback in list(self._subscribers):
            if covalue is None or covalue == event.covalue:
                try:
                    callback(event)
                except Exception:
                    logger.exception("subscriber failed on %s", event)
