"""The lease on the session a node writes in (DESIGN §5): acquiring, renewing, moving to a
new session, and the session switch that a replacement stores atomically.

Rules kept here:

- A node writes only in a session it leases (unless told a session explicitly, which
  bypasses the lease: tests that fork on purpose, a client restored from a backup).
- The lease is renewed when less than :data:`LEASE_RENEW_FRACTION` of its lifetime is
  left; renewal rides on commits, so an idle node may lose its lease — then it moves to a
  fresh leased session and never writes the old one again.
- When recovery moves writing to a brand-new session, the old lease is retired and the new
  one taken by CAS writes (:meth:`LeaseKeeper.switch_writes`) that commit in the same store
  transaction as the replacement, so a crash leaves either both or neither.
- A lease is released only on a clean close, once everything the session sent is stored.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.ids import SessionID
from engine.kv.lease import LeaseState, SessionLeases, lease_key, lease_slot
from engine.storage.interface import CASWrite

__all__ = ["LEASE_RENEW_FRACTION", "LeaseKeeper"]

#: Renew the session lease when less than this fraction of its lifetime is left.
LEASE_RENEW_FRACTION = 0.5


class LeaseKeeper:
    """When the lease of a node's session (through ``leases``) runs out, and the writes that
    move it. ``leased`` False: the node writes in a session it was given, and nothing here
    touches a lease."""

    def __init__(self, leases: SessionLeases, clock_ms: Callable[[], int], *, leased: bool) -> None:
        self.leases = leases
        self.leased = leased
        self._clock_ms = clock_ms
        #: when the lease runs out (Unix ms); 0 without a lease
        self.expires = 0

    def acquire(self) -> SessionID:
        """Lease a session (a released one, else a new one); see :meth:`SessionLeases.acquire`."""
        session = self.leases.acquire()
        self.restart()
        return session

    def restart(self) -> None:
        """The lease was just taken or written: it runs for a whole lifetime from now."""
        if self.leased:
            self.expires = self._clock_ms() + self.leases.ttl_ms

    def due(self) -> bool:
        """True when the lease should be renewed now."""
        return self.leased and self.expires - self._clock_ms() < self.leases.ttl_ms * LEASE_RENEW_FRACTION

    def renew(self, session: SessionID) -> None:
        """Extend the lease; raises :class:`~engine.errors.LeaseError` if another instance
        retired or took it meanwhile."""
        self.expires = self.leases.renew(session)

    def release(self, session: SessionID) -> None:
        """Release the lease on a clean close (a no-op without one)."""
        if self.leased:
            self.leases.release(session)

    def switch_writes(self, old: SessionID, new: SessionID) -> list[CASWrite]:
        """The CAS writes that retire ``old`` and take ``new`` for this instance, to commit
        with a replacement (none without a lease). ``old``'s generation is read now: if the
        lease changes before the commit, the CAS conflicts and nothing is written."""
        if not self.leased:
            return []
        account, instance = self.leases.account, self.leases.instance_id
        expires = self._clock_ms() + self.leases.ttl_ms
        gen, _slot = self.leases.kv.get(account, lease_key(old))
        return [
            CASWrite(account, lease_key(old), gen, lease_slot(instance, expires, LeaseState.RETIRED)),
            CASWrite(account, lease_key(new), 0, lease_slot(instance, expires, LeaseState.HELD)),
        ]
