"""The session lease of a LocalNode (engine/node/leases.py, DESIGN §5): one writer per session
across processes, released on a clean close, a fresh session when it was lost while idle.

The session switch that a replacement stores with the lease writes is tested with the
replacement (tests/engine/node/test_facade.py) and under SIGKILL (tests/engine/test_crash.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.ids import SessionID
from engine.kv.lease import Lease, LeaseState, SessionLeases, lease_key, parse_lease
from engine.kv.store import KVStore, MemoryKV
from engine.node.facade import LocalNode
from engine.node.leases import LEASE_RENEW_FRACTION, LeaseKeeper
from engine.storage.sqlite.store import SQLiteStore
from tests.engine._fork import key_from_seed

KEY = key_from_seed(10)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store"


def lease_of(kv: KVStore, session: SessionID) -> Lease | None:
    return parse_lease(kv.get(KEY.account_id, lease_key(session))[1])


def test_two_nodes_on_one_store_get_different_sessions(path: Path) -> None:
    """Two open nodes of one account on one store hold different sessions, both leased."""
    first = LocalNode.open(path, KEY)
    second = LocalNode.open(path, KEY)
    try:
        assert first.session != second.session
        assert first.instance_id != second.instance_id
        for n in (first, second):
            lease = lease_of(first.kv, n.session)
            assert lease is not None and lease.state is LeaseState.HELD
            assert lease.instance == n.instance_id
        doc = first.create_map(None)
        first.set(doc.id, "from", "first")
        second.set(doc.id, "second", True)
        assert set(second.get(doc.id).sessions) == {first.session, second.session}
    finally:
        first.close()
        second.close()
    third = LocalNode.open(path, KEY)
    try:
        assert third.get_map(doc.id) == {"from": "first", "second": True}
    finally:
        third.close()


def test_released_session_is_reused(path: Path) -> None:
    """close() releases the session lease and the next open of the account reuses it."""
    first = LocalNode.open(path, KEY)
    session = first.session
    doc = first.create_map(None)
    first.set(doc.id, "n", 1)
    first.close()
    store = SQLiteStore(path, readonly=True)
    try:
        lease = lease_of(store.kv, session)
    finally:
        store.close()
    assert lease is not None and lease.state is LeaseState.RELEASED

    second = LocalNode.open(path, KEY)
    try:
        assert second.session == session
        lease = lease_of(second.kv, session)
        assert lease is not None and lease.state is LeaseState.HELD
        assert lease.instance == second.instance_id
        second.set(doc.id, "n", 2)
        assert second.get(doc.id).sessions[session].count == 2
    finally:
        second.close()


def test_an_idle_node_whose_lease_was_retired_moves_to_a_new_session(path: Path) -> None:
    """If a node's lease expires while it is idle and another process retires it, the node
    keeps working: its next write goes to a fresh leased session, nothing is lost."""
    now = [1_000_000]
    first = LocalNode.open(path, KEY, clock_ms=lambda: now[0])
    try:
        doc = first.create_map(None)
        first.set(doc.id, "a", 1)
        old = first.session
        now[0] += first.leases.ttl_ms * 2  # idle past the lease's expiry
        second = LocalNode.open(path, KEY, clock_ms=lambda: now[0])  # retires the expired lease
        try:
            assert second.session != old
            first.set(doc.id, "b", 2)
            assert first.session not in (old, second.session)
        finally:
            second.close()
    finally:
        first.close()
    reopened = LocalNode.open(path, KEY)
    try:
        assert reopened.get_map(doc.id) == {"a": 1, "b": 2}
    finally:
        reopened.close()


def test_the_keeper_renews_at_the_fraction_and_switches_by_cas() -> None:
    """due() turns true when less than LEASE_RENEW_FRACTION of the lifetime is left; the
    switch retires the old lease at its current generation and creates the new one at 0;
    without a lease nothing is due and nothing is written."""
    now = [1_000_000]
    leases = SessionLeases(MemoryKV(), KEY.account_id, "me", clock_ms=lambda: now[0])
    keeper = LeaseKeeper(leases, lambda: now[0], leased=True)
    old = keeper.acquire()
    assert not keeper.due()
    now[0] += int(leases.ttl_ms * (1 - LEASE_RENEW_FRACTION)) + 1
    assert keeper.due()
    keeper.renew(old)
    assert not keeper.due()
    new = SessionID(old + "x")
    retire, take = keeper.switch_writes(old, new)
    assert (retire.key, retire.expected_gen) == (lease_key(old), leases.kv.get(KEY.account_id, lease_key(old))[0])
    assert (take.key, take.expected_gen) == (lease_key(new), 0)
    assert [parse_lease(w.slot).state for w in (retire, take)] == [LeaseState.RETIRED, LeaseState.HELD]
    unleased = LeaseKeeper(leases, lambda: now[0], leased=False)
    assert not unleased.due() and unleased.switch_writes(old, new) == []
