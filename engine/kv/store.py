"""Per-account CAS slots (DESIGN §8): the store protocol, the in-memory store and the account view.

Every ``(namespace, key)`` has a generation: 0 while never written, then 1, 2, ... A
:meth:`KVStore.cas` succeeds only if the caller names the current generation, and stores the
slot at the next one. Generations only grow; deleting is a CAS with a :class:`Tombstone`, so
a generation is never reused and a stale writer can never succeed by accident (no ABA).

Every CAS attempt, won or lost, is also appended to a per-key log (at most
:data:`KV_LOG_KEEP_PER_KEY` records per key, oldest dropped) so the inspector can show a
generation timeline including the races that were lost.

:class:`MemoryKV` keeps everything in memory; the SQLite implementation, atomic across
processes, lives with the rest of the SQLite store (:mod:`engine.storage.sqlite.kv`).
:class:`AccountKV` is what a client gets: its own namespace only. The helpers a store
implementation shares (address checks, the CAS decision) are here so every store decides a
CAS the same way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias

from engine.errors import (
    KVAccessDenied,
    KVError,
    UsageError,
)
from engine.ids import AccountID, parse_account_id
from engine.kv.envelope import Slot, decode_envelope, encode_envelope

__all__ = [
    "KV_LOG_KEEP_PER_KEY",
    "MAX_KEY_LENGTH",
    "AccountKV",
    "CASRecord",
    "CASResult",
    "Conflict",
    "KVStore",
    "MemoryKV",
    "Stored",
    "wall_clock_ms",
]

#: CAS outcomes kept per key in the history log; older records are dropped.
KV_LOG_KEEP_PER_KEY = 256
#: Longest namespace or key accepted, in characters.
MAX_KEY_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class Stored:
    """The CAS won; the slot now has ``generation``."""

    generation: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """The CAS lost: the key is at ``generation`` holding ``slot`` (None: never written)."""

    generation: int
    slot: Slot | None


CASResult: TypeAlias = Stored | Conflict
Outcome: TypeAlias = Literal["stored", "conflict"]


@dataclass(frozen=True, slots=True)
class CASRecord:
    """One CAS attempt on a key: ``generation`` is the new one if stored, the current one if not.

    ``writer`` is the instance id given to the store that made the attempt, or None.
    """

    namespace: str
    key: str
    at_ms: int
    expected_gen: int
    outcome: Outcome
    generation: int
    writer: str | None


#: What ``list`` returns: ``(key, generation, slot)`` sorted by key.
Listing: TypeAlias = list[tuple[str, int, Slot]]
#: What ``history`` returns, oldest first. (Aliases because a method named ``list`` hides
#: the builtin inside class bodies.)
Timeline: TypeAlias = list[CASRecord]


class KVStore(Protocol):
    """What every CAS-slot store offers. All methods may raise :class:`KVError` for a bad
    namespace or key, and storage-backed ones :class:`engine.errors.StorageError`."""

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        """``(generation, slot)``; ``(0, None)`` for a key never written."""
        ...

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        """Store ``slot`` at ``expected_gen + 1`` if the key is at ``expected_gen``."""
        ...

    def list(self, namespace: str, prefix: str = "") -> Listing:
        """Every written key (tombstones included) starting with ``prefix``, sorted by key."""
        ...

    def history(self, namespace: str, key: str) -> Timeline:
        """The kept CAS attempts on the key, oldest first."""
        ...


def wall_clock_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def check_address(namespace: str, key: str) -> None:
    """Raise UsageError for non-str, KVError for empty namespace, too long or unencodable."""
    for what, text in (("namespace", namespace), ("key", key)):
        if not isinstance(text, str):
            raise UsageError(f"KV {what} must be a str, got {type(text).__name__}")
        if len(text) > MAX_KEY_LENGTH or "\x00" in text:
            raise KVError(f"KV {what} longer than {MAX_KEY_LENGTH} characters or holding NUL")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise KVError(f"KV {what} {text!r} is not valid Unicode text") from exc
    if not namespace:
        raise KVError("KV namespace must not be empty")


def prepare_cas(namespace: str, key: str, expected_gen: int, slot: Slot) -> bytes:
    """Validate a CAS request; return the envelope bytes to store if it wins."""
    check_address(namespace, key)
    if type(expected_gen) is not int or expected_gen < 0:
        raise UsageError(f"expected generation must be an int >= 0, got {expected_gen!r}")
    return encode_envelope(expected_gen + 1, slot)


def decide_cas(current: tuple[int, Slot | None], expected_gen: int) -> CASResult:
    generation, slot = current
    return Stored(generation + 1) if generation == expected_gen else Conflict(generation, slot)


def cas_outcome(result: CASResult) -> Outcome:
    return "stored" if isinstance(result, Stored) else "conflict"


# -- memory ------------------------------------------------------------------------------


class MemoryKV:
    """A :class:`KVStore` in memory, for tests and for nodes that persist nothing.

    Slots are kept as envelope bytes, so a stored value is a copy: mutating an object after
    storing it or after reading it changes nothing in the store.
    """

    def __init__(
        self,
        *,
        writer: str | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        log_keep: int = KV_LOG_KEEP_PER_KEY,
    ) -> None:
        self._writer = writer
        self._clock_ms = clock_ms
        self._log_keep = log_keep
        self._lock = threading.Lock()
        self._slots: dict[tuple[str, str], bytes] = {}
        self._log: dict[tuple[str, str], deque[CASRecord]] = {}

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        check_address(namespace, key)
        with self._lock:
            data = self._slots.get((namespace, key))
        return (0, None) if data is None else decode_envelope(data)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        data = prepare_cas(namespace, key, expected_gen, slot)
        with self._lock:
            current = self._slots.get((namespace, key))
            result = decide_cas((0, None) if current is None else decode_envelope(current), expected_gen)
            if isinstance(result, Stored):
                self._slots[(namespace, key)] = data
            log = self._log.setdefault((namespace, key), deque(maxlen=self._log_keep))
            log.append(
                CASRecord(
                    namespace,
                    key,
                    self._clock_ms(),
                    expected_gen,
                    cas_outcome(result),
                    result.generation,
                    self._writer,
                )
            )
        return result

    def list(self, namespace: str, prefix: str = "") -> Listing:
        check_address(namespace, prefix)
        with self._lock:
            found = sorted(
                (key, data) for (ns, key), data in self._slots.items() if ns == namespace and key.startswith(prefix)
            )
        return [(key, *decode_envelope(data)) for key, data in found]

    def history(self, namespace: str, key: str) -> Timeline:
        check_address(namespace, key)
        with self._lock:
            return list(self._log.get((namespace, key), ()))


# -- the account view --------------------------------------------------------------------


class AccountKV:
    """The slots a client of ``account`` may reach: its own namespace (= its AccountID).

    Any access to another namespace raises :class:`KVAccessDenied`, except that an ``admin``
    may read (get, list, history) every namespace; even an admin writes only its own.
    Raises :class:`engine.errors.InvalidId` if ``account`` is not an AccountID.
    """

    def __init__(self, store: KVStore, account: AccountID, *, admin: bool = False) -> None:
        self._store = store
        self.account = parse_account_id(account)
        self.admin = admin

    def _check(self, namespace: str, *, write: bool) -> None:
        if namespace == self.account or (self.admin and not write):
            return
        verb = "write" if write else "read"
        raise KVAccessDenied(f"{self.account} may not {verb} namespace {namespace!r}")

    def get(self, namespace: str, key: str) -> tuple[int, Slot | None]:
        self._check(namespace, write=False)
        return self._store.get(namespace, key)

    def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
        self._check(namespace, write=True)
        return self._store.cas(namespace, key, expected_gen, slot)

    def list(self, namespace: str, prefix: str = "") -> Listing:
        self._check(namespace, write=False)
        return self._store.list(namespace, prefix)

    def history(self, namespace: str, key: str) -> Timeline:
        self._check(namespace, write=False)
        return self._store.history(namespace, key)
