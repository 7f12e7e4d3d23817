from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import InvalidEnvelope, KVAccessDenied, LeaseError
from engine.ids import SessionID, new_session_id, parse_session_id
from engine.kv.envelope import Present, Tombstone
from engine.kv.lease import (
    DEFAULT_LEASE_TTL_MS,
    Lease,
    LeaseState,
    SessionLeases,
    lease_key,
    lease_slot,
    parse_lease,
)
from engine.kv.store import AccountKV, KVStore, MemoryKV, Stored
from engine.kv.store import wall_clock_ms as now_ms
from engine.storage.sqlite.kv import SQLiteKV, cas_in_transaction
from tests.engine.kv._util import new_db, open_db, random_account, workers

ACCOUNT = random_account()


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def lease_of(kv: KVStore, session: SessionID) -> Lease | None:
    return parse_lease(kv.get(ACCOUNT, lease_key(session))[1])


# -- value helpers -----------------------------------------------------------------------


def test_lease_slot_round_trip() -> None:
    slot = lease_slot("inst", 42, LeaseState.RELEASED)
    assert slot == Present({"instance": "inst", "expires": 42, "state": "released"})
    assert parse_lease(slot) == Lease("inst", 42, LeaseState.RELEASED)
    assert parse_lease(None) is None
    assert parse_lease(Tombstone(1, ACCOUNT)) is None


@pytest.mark.parametrize(
    "value",
    [
        "held",
        {"instance": "i", "expires": 1},
        {"instance": "i", "expires": 1, "state": "held", "extra": 1},
        {"instance": "", "expires": 1, "state": "held"},
        {"instance": 7, "expires": 1, "state": "held"},
        {"instance": "i", "expires": -1, "state": "held"},
        {"instance": "i", "expires": True, "state": "held"},
        {"instance": "i", "expires": 1, "state": "stolen"},
    ],
)
def test_malformed_lease(value: Any) -> None:
    with pytest.raises(InvalidEnvelope):
        parse_lease(Present(value))


def test_lease_written_inside_a_callers_transaction(tmp_path: Path) -> None:
    conn = open_db(new_db(tmp_path / "kv.db"))
    try:
        session = new_session_id(ACCOUNT)
        conn.execute("BEGIN IMMEDIATE")
        slot = lease_slot("inst", 5, LeaseState.HELD)
        assert cas_in_transaction(conn, ACCOUNT, lease_key(session), 0, slot) == Stored(1)
        conn.execute("COMMIT")
        assert lease_of(SQLiteKV(conn), session) == Lease("inst", 5, LeaseState.HELD)
    finally:
        conn.close()


# -- in one process ----------------------------------------------------------------------


@pytest.fixture
def kv() -> KVStore:
    return AccountKV(MemoryKV(), ACCOUNT)


def test_acquire_creates_distinct_sessions(kv: KVStore) -> None:
    clock = Clock()
    a = SessionLeases(kv, ACCOUNT, "a", clock_ms=clock)
    b = SessionLeases(kv, ACCOUNT, "b", clock_ms=clock)
    first, second, third = a.acquire(), b.acquire(), a.acquire()
    assert len({first, second, third}) == 3
    assert parse_session_id(first).account == ACCOUNT
    assert lease_of(kv, first) == Lease("a", clock.now + DEFAULT_LEASE_TTL_MS, LeaseState.HELD)
    assert lease_of(kv, second) == Lease("b", clock.now + DEFAULT_LEASE_TTL_MS, LeaseState.HELD)


def test_released_session_is_reused(kv: KVStore) -> None:
    clock = Clock()
    a = SessionLeases(kv, ACCOUNT, "a", clock_ms=clock)
    b = SessionLeases(kv, ACCOUNT, "b", clock_ms=clock)
    session = a.acquire()
    a.release(session)
    assert lease_of(kv, session) == Lease("a", clock.now, LeaseState.RELEASED)
    assert b.acquire() == session
    assert a.acquire() != session  # b holds it now


def test_expired_held_lease_is_retired_not_reused(kv: KVStore) -> None:
    clock = Clock()
    crashed = SessionLeases(kv, ACCOUNT, "crashed", clock_ms=clock, ttl_ms=100)
    session = crashed.acquire()
    clock.now += 100
    fresh = SessionLeases(kv, ACCOUNT, "fresh", clock_ms=clock).acquire()
    assert fresh != session
    assert lease_of(kv, session) == Lease("crashed", clock.now, LeaseState.RETIRED)
    with pytest.raises(LeaseError):
        crashed.renew(session)  # it woke up: it must move to a new session


def test_renew_extends_and_detects_theft(kv: KVStore) -> None:
    clock = Clock()
    a = SessionLeases(kv, ACCOUNT, "a", clock_ms=clock, ttl_ms=100)
    session = a.acquire()
    clock.now += 150  # expired, but nobody retired it: still ours
    assert a.renew(session) == clock.now + 100
    assert lease_of(kv, session) == Lease("a", clock.now + 100, LeaseState.HELD)
    generation, _ = kv.get(ACCOUNT, lease_key(session))
    kv.cas(ACCOUNT, lease_key(session), generation, lease_slot("thief", 10**15, LeaseState.HELD))
    with pytest.raises(LeaseError, match="thief"):
        a.renew(session)
    with pytest.raises(LeaseError):
        a.release(session)
    with pytest.raises(LeaseError):
        a.retire(session)
    with pytest.raises(LeaseError):
        a.renew(new_session_id(ACCOUNT))  # no lease at all
    assert lease_of(kv, session) == Lease("thief", 10**15, LeaseState.HELD)


def test_retire(kv: KVStore) -> None:
    clock = Clock()
    a = SessionLeases(kv, ACCOUNT, "a", clock_ms=clock)
    held, released, missing = a.acquire(), a.acquire(), new_session_id(ACCOUNT)
    a.release(released)
    for session in (held, released, missing):
        a.retire(session)
        a.retire(session)  # twice is fine
        lease = lease_of(kv, session)
        assert lease is not None and lease.state is LeaseState.RETIRED
        with pytest.raises(LeaseError):
            a.renew(session)
    assert len(kv.history(ACCOUNT, lease_key(held))) == 2  # acquire, retire: no second write
    assert a.acquire() not in (held, released, missing)


def test_unreadable_leases_are_skipped_and_retirable(kv: KVStore) -> None:
    clock = Clock()
    a = SessionLeases(kv, ACCOUNT, "a", clock_ms=clock)
    broken = new_session_id(ACCOUNT)
    kv.cas(ACCOUNT, lease_key(broken), 0, Present("garbage"))
    kv.cas(ACCOUNT, "lease/not-a-session", 0, lease_slot("x", 0, LeaseState.RELEASED))
    kv.cas(
        ACCOUNT,
        lease_key(new_session_id(random_account())),
        0,
        lease_slot("x", 0, LeaseState.RELEASED),
    )
    session = a.acquire()
    assert session != broken
    assert [s for s, _, _ in a.leases()] == sorted([broken, session])
    a.retire(broken)
    assert lease_of(kv, broken) == Lease("a", clock.now, LeaseState.RETIRED)


def test_leases_stay_in_own_namespace() -> None:
    with pytest.raises(KVAccessDenied):
        SessionLeases(AccountKV(MemoryKV(), random_account()), ACCOUNT, "a").acquire()
    with pytest.raises(LeaseError):
        SessionLeases(MemoryKV(), ACCOUNT, "")


# -- real processes ----------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return new_db(tmp_path / "leases.db")


@pytest.fixture
def parent_kv(db: Path) -> Iterator[SQLiteKV]:
    conn: sqlite3.Connection = open_db(db)
    yield SQLiteKV(conn, writer="parent")
    conn.close()


def test_processes_get_different_sessions_and_reuse_released(
    tmp_path: Path, db: Path, parent_kv: SQLiteKV
) -> None:
    with workers(tmp_path) as spawn:
        a = spawn("lease", str(db), ACCOUNT, "proc-a")
        b = spawn("lease", str(db), ACCOUNT, "proc-b")
        session_a = a.expect("acquired")["session"]
        session_b = b.expect("acquired")["session"]
        assert session_a != session_b
        # Both hold their leases at the same time.
        held = {s: lease.instance for s, _, lease in leases_in(parent_kv) if lease is not None}
        assert held == {session_a: "proc-a", session_b: "proc-b"}

        a.send("release")
        a.expect("released")
        a.send("exit")
        assert a.wait_exit() == 0, a.stderr()

        c = spawn("lease", str(db), ACCOUNT, "proc-c")
        assert c.expect("acquired")["session"] == session_a
        assert lease_of(parent_kv, session_a) == Lease(
            "proc-c", _expires(parent_kv, session_a), LeaseState.HELD
        )
        for proc in (b, c):
            proc.send("exit")
            assert proc.wait_exit() == 0, proc.stderr()


def test_crashed_holder_session_is_retired(tmp_path: Path, db: Path, parent_kv: SQLiteKV) -> None:
    with workers(tmp_path) as spawn:
        doomed = spawn("lease", str(db), ACCOUNT, "proc-doomed")
        crashed = doomed.expect("acquired")["session"]
        doomed.kill()  # SIGKILL: no release, no cleanup
    lease = lease_of(parent_kv, crashed)
    assert lease is not None and lease.state is LeaseState.HELD

    # While the lease has not expired nobody touches it.
    leases = SessionLeases(parent_kv, ACCOUNT, "parent")
    early = leases.acquire()
    assert early != crashed
    assert lease_of(parent_kv, crashed) == lease
    leases.release(early)

    # Once it has expired, it is retired in passing, never reused.
    later = SessionLeases(parent_kv, ACCOUNT, "later", clock_ms=lambda: lease.expires)
    assert later.acquire() == early
    assert lease_of(parent_kv, crashed) == Lease("proc-doomed", lease.expires, LeaseState.RETIRED)
    assert later.acquire() not in (crashed, early)


def leases_in(kv: SQLiteKV) -> list[tuple[SessionID, int, Lease | None]]:
    return SessionLeases(kv, ACCOUNT, "observer").leases()


def _expires(kv: SQLiteKV, session: SessionID) -> int:
    lease = lease_of(kv, session)
    assert lease is not None
    assert lease.expires > now_ms()
    return lease.expires
