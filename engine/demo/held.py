"""A store that holds commits back: a disk slower than the network, for the crash-after-ack
story (DESIGN §5) in the live demo and the end-to-end tests.

:class:`HeldStore` wraps a real :class:`~engine.storage.interface.Store`. While
:meth:`HeldStore.hold` is on, session writes are kept in memory and answered as if stored:
the node announces the change, the sync layer sends it and a node acknowledges it, yet the
store file does not have it. A SIGKILL then loses exactly the held writes — the situation
leases and recovery exist for. :meth:`HeldStore.release` writes them, in order, in one
transaction; so does :meth:`HeldStore.close`.

Rules kept here, so the wrapper never writes what a real disk could not:

- Order is kept: a replacement or a tombstone first writes out what is held.
- A session's lease is released only once nothing held is missing: a CAS that marks a lease
  ``released`` first writes out what is held. Other CAS writes (lease renewals, slots) pass
  straight through, as they did before the hold.
- A held store commits on the caller's thread only: it has no background writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from engine.errors import InvalidEnvelope, UsageError
from engine.ids import CoValueID, SessionID
from engine.kv.envelope import Slot
from engine.kv.lease import LeaseState, parse_lease
from engine.kv.store import CASResult, KVStore, Listing, Timeline
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.storage.interface import (
    CASWrite,
    CorruptRecord,
    CoValueRow,
    RawRow,
    SessionWrite,
    Store,
    StoredCounts,
    StoredCoValue,
    StoredSession,
    StoredSessionRows,
    StoreListing,
    StoreWriter,
)

__all__ = ["HeldStore"]


def _releases_a_lease(slot: Slot) -> bool:
    try:
        lease = parse_lease(slot)
    except InvalidEnvelope:
        return False
    return lease is not None and lease.state is LeaseState.RELEASED


class _OrderedKV:
    """The wrapped store's slots; releasing a lease first writes out what is held."""

    def __init__(self, held: HeldStore, kv: KVStore) -> None:
        self._held = held
        self._kv = kv

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        return self._kv.get(namespace, key)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        if _releases_a_lease(slot):
            self._held.write_out()
        return self._kv.cas(namespace, key, expected_gen, slot)

    def list(self, namespace: str, prefix: str = "") -> Listing:
        return self._kv.list(namespace, prefix)

    def history(self, namespace: str, key: str) -> Timeline:
        return self._kv.history(namespace, key)


class HeldStore:
    """``inner``, with session writes held back while :attr:`holding`. Not thread-safe (like
    the store it wraps)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.holding = False
        self._held_headers: list[Header] = []
        self._held_sessions: list[SessionWrite] = []
        self._kv = _OrderedKV(self, inner.kv)

    # -- holding ---------------------------------------------------------------------------

    def hold(self) -> None:
        """Hold every session write from now on, until :meth:`release`."""
        self.holding = True

    def release(self) -> None:
        """Stop holding and write out what is held."""
        self.holding = False
        self.write_out()

    @property
    def held_writes(self) -> int:
        """Session appends held back now."""
        return len(self._held_sessions)

    def write_out(self) -> None:
        """Write what is held, in order, as one transaction (holding goes on if it was on)."""
        if self._held_headers or self._held_sessions:
            headers, sessions = self._held_headers, self._held_sessions
            self.inner.write(headers, sessions)
            self._held_headers, self._held_sessions = [], []

    # -- the Store interface -----------------------------------------------------------------

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def readonly(self) -> bool:
        return self.inner.readonly

    @property
    def version(self) -> tuple[int, int]:
        return self.inner.version

    @property
    def kv(self) -> KVStore:
        return self._kv

    def close(self) -> None:
        """Write out what is held, then close the wrapped store."""
        self.holding = False
        try:
            self.write_out()
        finally:
            self.inner.close()

    def write(self, headers: Iterable[Header] = (), sessions: Iterable[SessionWrite] = ()) -> StoredCounts:
        """While holding, keep the write and answer as if it were stored (each session at its
        write's end); otherwise write it."""
        if not self.holding:
            return self.inner.write(headers, sessions)
        held = list(sessions)
        self._held_headers.extend(headers)
        self._held_sessions.extend(held)
        return {(w.log.covalue, w.log.session): w.end for w in held}

    def replace_sessions(
        self,
        header: Header,
        logs: Sequence[SessionLog],
        *,
        cas: Sequence[CASWrite] = (),
        checkpoints: Sequence[tuple[str, str, bytes]] = (),
    ) -> list[CASResult]:
        self.write_out()
        return self.inner.replace_sessions(header, logs, cas=cas, checkpoints=checkpoints)

    def mark_deleted(self, header: Header, delete_sessions: Sequence[SessionLog], purged: Iterable[SessionID]) -> None:
        self.write_out()
        self.inner.mark_deleted(header, delete_sessions, purged)

    def put_checkpoint(self, namespace: str, key: str, value: bytes) -> None:
        self.inner.put_checkpoint(namespace, key, value)

    def background_writer(self) -> StoreWriter:
        """Refused: a held store commits on the caller's thread (open the node without
        ``background_commits``)."""
        raise UsageError("a held store has no background writer")

    def covalue_ids(self) -> list[CoValueRow]:
        return self.inner.covalue_ids()

    def covalue_row(self, covalue: CoValueID) -> CoValueRow | None:
        return self.inner.covalue_row(covalue)

    def has(self, covalue: CoValueID) -> bool:
        return self.inner.has(covalue)

    def stored_sessions(self, covalue: CoValueID) -> list[StoredSession]:
        return self.inner.stored_sessions(covalue)

    def load_covalue(self, covalue: CoValueID) -> StoredCoValue | None:
        return self.inner.load_covalue(covalue)

    def load_session(self, covalue: CoValueID, session: SessionID) -> SessionLog:
        return self.inner.load_session(covalue, session)

    def session_rows(self, covalue: CoValueID, session: SessionID) -> StoredSessionRows | None:
        return self.inner.session_rows(covalue, session)

    def session_window(self, covalue: CoValueID, session: SessionID, offset: int, limit: int) -> list[RawRow]:
        return self.inner.session_window(covalue, session, offset, limit)

    def session_hash(self, covalue: CoValueID, session: SessionID, index: int) -> bytes | None:
        return self.inner.session_hash(covalue, session, index)

    def signature(self, key: int, n: int) -> bytes | None:
        return self.inner.signature(key, n)

    def corrupt_sessions(self) -> list[CorruptRecord]:
        return self.inner.corrupt_sessions()

    def listing(self) -> StoreListing:
        return self.inner.listing()

    def kv_namespaces(self) -> list[str]:
        return self.inner.kv_namespaces()

    def get_checkpoint(self, namespace: str, key: str) -> bytes | None:
        return self.inner.get_checkpoint(namespace, key)
