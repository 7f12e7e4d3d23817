"""Session leases (DESIGN §5, prevention): one writer per session, across processes.

A session's lease lives in the account's namespace at ``lease/<SessionID>`` as::

    {"instance": str, "expires": ms, "state": "held" | "released" | "retired"}

Rules, in the order :meth:`SessionLeases.acquire` applies them:

- ``released``: the last writer shut down cleanly with nothing unpersisted; the session may
  be reused by whoever wins the CAS that marks it ``held`` again.
- ``held`` and not expired: another live instance writes it; never touched.
- ``held`` and expired: its holder crashed and may have sent data it never persisted, so the
  session is never appended to again; it is marked ``retired`` in passing.
- ``retired`` (or tombstoned, or unreadable): never reused.
- nothing reusable: a fresh session is created with a CAS at generation 0.

Every change is a CAS, so two instances of one account on one store never hold the same
session at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from engine.errors import InvalidEnvelope, InvalidId, LeaseError
from engine.ids import (
    AccountID,
    SessionID,
    SessionKind,
    new_session_id,
    parse_account_id,
    parse_session_id,
)
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.rmw import DEFAULT_RMW_ATTEMPTS, read_modify_write
from engine.kv.store import KVStore, Stored, wall_clock_ms

__all__ = [
    "DEFAULT_LEASE_TTL_MS",
    "LEASE_PREFIX",
    "Lease",
    "LeaseState",
    "SessionLeases",
    "lease_key",
    "lease_slot",
    "parse_lease",
]

logger = logging.getLogger(__name__)

#: Key prefix of lease slots inside an account's namespace.
LEASE_PREFIX = "lease/"
#: How long a held lease stays valid without :meth:`SessionLeases.renew`.
DEFAULT_LEASE_TTL_MS = 30_000
#: Fresh session ids tried by :meth:`SessionLeases.acquire` before giving up (a clash of
#: 8 random bytes means something is badly wrong, so this is small).
NEW_SESSION_ATTEMPTS = 3


class LeaseState(StrEnum):
    HELD = "held"
    RELEASED = "released"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class Lease:
    """A decoded lease value. ``expires`` is Unix ms; only meaningful while ``HELD``."""

    instance: str
    expires: int
    state: LeaseState

    def expired(self, now_ms: int) -> bool:
        return self.expires <= now_ms


def lease_key(session: SessionID) -> str:
    """The slot key of ``session``'s lease (in its account's namespace)."""
    return LEASE_PREFIX + session


def lease_slot(instance: str, expires: int, state: LeaseState) -> Present:
    """The slot value of a lease, for writing it (e.g. with ``cas_in_transaction``).

    Raises :class:`InvalidEnvelope` if the fields would not parse back with
    :func:`parse_lease`.
    """
    slot = Present({"instance": instance, "expires": expires, "state": str(state)})
    parse_lease(slot)
    return slot


def parse_lease(slot: Slot | None) -> Lease | None:
    """The lease in ``slot``; None if there is none (never written, or a tombstone).

    Raises :class:`InvalidEnvelope` if the slot holds something that is not a lease value.
    """
    if slot is None or isinstance(slot, Tombstone):
        return None
    value = slot.value
    if not isinstance(value, dict) or set(value) != {"instance", "expires", "state"}:
        raise InvalidEnvelope('lease must be a map of exactly "instance", "expires", "state"')
    instance, expires, state = value["instance"], value["expires"], value["state"]
    if not isinstance(instance, str) or not instance:
        raise InvalidEnvelope("lease instance must be a non-empty string")
    if type(expires) is not int or expires < 0:
        raise InvalidEnvelope("lease expiry must be an int >= 0")
    try:
        return Lease(instance, expires, LeaseState(state))
    except ValueError as exc:
        raise InvalidEnvelope(f"unknown lease state {state!r}") from exc


class SessionLeases:
    """Leases of ``account``'s sessions for the instance ``instance_id`` (unique per process).

    ``kv`` may be the raw store or the account's :class:`engine.kv.store.AccountKV`; all
    slots live in the namespace ``account``. Store errors pass through.
    """

    def __init__(
        self,
        kv: KVStore,
        account: AccountID,
        instance_id: str,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        ttl_ms: int = DEFAULT_LEASE_TTL_MS,
        attempts: int = DEFAULT_RMW_ATTEMPTS,
    ) -> None:
        if not instance_id:
            raise LeaseError("instance id must not be empty")
        self._kv = kv
        self.account = parse_account_id(account)
        self.instance_id = instance_id
        self._clock_ms = clock_ms
        self.ttl_ms = ttl_ms
        self._attempts = attempts

    @property
    def kv(self) -> KVStore:
        """The slot store the leases live in."""
        return self._kv

    def leases(self) -> list[tuple[SessionID, int, Lease | None]]:
        """Every lease slot of the account's own active sessions, sorted by session id:
        ``(session, generation, lease)``, lease None for a tombstone or an unreadable value.
        Keys under ``lease/`` that are not such sessions are left out."""
        found: list[tuple[SessionID, int, Lease | None]] = []
        for key, generation, slot in self._kv.list(self.account, LEASE_PREFIX):
            try:
                parsed = parse_session_id(key[len(LEASE_PREFIX) :])
            except InvalidId:
                continue
            if parsed.account != self.account or parsed.kind is not SessionKind.ACTIVE:
                continue
            try:
                lease = parse_lease(slot)
            except InvalidEnvelope:
                lease = None
            found.append((parsed.base, generation, lease))
        return found

    def acquire(self) -> SessionID:
        """Lease a session for this instance: a released one if any, else a new one.

        Never returns a session that another instance (or this one) holds, or one whose holder
        died while holding it; every expired held lease is first marked retired. Raises
        :class:`LeaseError` if no fresh session could be leased either.
        """
        now = self._clock_ms()
        released: list[tuple[SessionID, int]] = []
        for session, generation, lease in self.leases():
            if lease is None:
                continue
            if lease.state is LeaseState.RELEASED:
                released.append((session, generation))
            elif lease.state is LeaseState.HELD and lease.expired(now):
                self._retire_expired(session, generation, lease)
        held = lease_slot(self.instance_id, now + self.ttl_ms, LeaseState.HELD)
        for session, generation in released:
            if isinstance(self._kv.cas(self.account, lease_key(session), generation, held), Stored):
                return session
            # Someone else changed it first: whatever they did, move on.
        for _ in range(NEW_SESSION_ATTEMPTS):
            session = new_session_id(self.account)
            if isinstance(self._kv.cas(self.account, lease_key(session), 0, held), Stored):
                return session
        raise LeaseError(f"{self.account}: could not create a new session lease")

    def _retire_expired(self, session: SessionID, generation: int, lease: Lease) -> None:
        retired = lease_slot(lease.instance, lease.expires, LeaseState.RETIRED)
        if isinstance(self._kv.cas(self.account, lease_key(session), generation, retired), Stored):
            logger.info(
                "retired session %s: lease of instance %s expired at %d",
                session,
                lease.instance,
                lease.expires,
            )
        # On conflict its holder renewed it (or another instance retired it): leave it be.

    def renew(self, session: SessionID) -> int:
        """Extend this instance's lease on ``session`` to now + ttl; returns the new expiry.

        Raises :class:`LeaseError` if this instance does not hold it (any more): another
        instance took it, or it was released or retired (for instance because it expired
        and another instance marked it retired).
        """
        expires = self._clock_ms() + self.ttl_ms

        def merge(slot: Slot | None) -> Slot:
            self._require_held(session, slot)
            return lease_slot(self.instance_id, expires, LeaseState.HELD)

        self._update(session, merge)
        return expires

    def release(self, session: SessionID) -> None:
        """Mark ``session`` released so the next :meth:`acquire` may reuse it.

        Call only on a clean shutdown with nothing sent-but-unpersisted. Raises
        :class:`LeaseError` if this instance does not hold the lease.
        """
        now = self._clock_ms()

        def merge(slot: Slot | None) -> Slot:
            self._require_held(session, slot)
            return lease_slot(self.instance_id, now, LeaseState.RELEASED)

        self._update(session, merge)

    def retire(self, session: SessionID) -> None:
        """Mark ``session`` retired: never leased again (recovery moved writing elsewhere).

        Works on a lease held by this instance, a released or expired one, a missing or
        unreadable one (which becomes a retired lease); retiring twice is a no-op. Raises
        :class:`LeaseError` if another instance holds an unexpired lease on it.
        """
        now = self._clock_ms()

        def merge(slot: Slot | None) -> Slot | None:
            try:
                lease = parse_lease(slot)
            except InvalidEnvelope:
                lease = None
            if lease is None:
                return lease_slot(self.instance_id, now, LeaseState.RETIRED)
            if lease.state is LeaseState.RETIRED:
                return None
            if lease.state is LeaseState.HELD and lease.instance != self.instance_id and not lease.expired(now):
                raise LeaseError(f"{session} is held by instance {lease.instance}")
            return lease_slot(lease.instance, lease.expires, LeaseState.RETIRED)

        self._update(session, merge)

    def _require_held(self, session: SessionID, slot: Slot | None) -> None:
        lease = parse_lease(slot)
        if lease is None:
            raise LeaseError(f"{session} has no lease")
        if lease.state is not LeaseState.HELD or lease.instance != self.instance_id:
            raise LeaseError(f"{session} is {lease.state} by instance {lease.instance}, not held by {self.instance_id}")

    def _update(self, session: SessionID, merge: Callable[[Slot | None], Slot | None]) -> None:
        read_modify_write(self._kv, self.account, lease_key(session), merge, attempts=self._attempts)
