"""Several nodes on one PostgreSQL database (threads here, each with its own store and
connection, as nodes have): appends of one session from two writers end with one intact
chain, a tombstone and an append racing never leave a live session on a deleted CoValue, and
CAS slots under contention lose no update (every stored generation follows the one before)."""

from __future__ import annotations

import random
import threading
from collections import Counter

import asyncpg

from engine.covalue import CoValueCore
from engine.ids import new_session_id
from engine.kv.envelope import Present
from engine.kv.store import Stored
from engine.model.header import UnsafeAllowAll, new_header
from engine.storage import open_store
from engine.storage.interface import SessionWrite
from engine.storage.postgres.connection import LoopThread
from tests.engine._fork import key_from_seed
from tests.util import timeout

T0 = 1_700_000_000_000
KEY = key_from_seed(9)


def run_threads(targets: list[threading.Thread]) -> None:
    for thread in targets:
        thread.start()
    for thread in targets:
        thread.join(timeout(60))
        assert not thread.is_alive(), f"{thread.name} did not finish"


def test_two_writers_of_one_session_end_with_one_intact_chain(pg_url: str) -> None:
    """Two nodes relay the same session at once, each its own prefixes in its own order:
    every append continues from what the database holds; nothing fails, nothing is lost."""
    core = CoValueCore(new_header("comap", UnsafeAllowAll(), created_at=T0))
    sid = new_session_id(KEY.account_id)
    for i in range(120):
        core.add_local(sid, [["set", f"k{i}", i]], T0 + i)
        core.sign_pending(KEY)
    log = core.sessions[sid]
    errors: list[BaseException] = []
    seed = random.randrange(2**32)
    print(f"seed {seed}")

    def relay(name: str, rng: random.Random) -> None:
        store = open_store(pg_url, writer=name)
        try:
            ends = [*sorted(rng.sample(range(1, 121), 40)), 120]
            for end in ends:
                store.write([core.header], [SessionWrite(log, 0, end)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    run_threads([threading.Thread(target=relay, args=(f"n{i}", random.Random(seed + i))) for i in range(2)])
    assert errors == []
    store = open_store(pg_url, readonly=True)
    try:
        loaded = store.load_covalue(core.id)
    finally:
        store.close()
    assert loaded is not None and not loaded.corrupt
    assert loaded.sessions[sid].txs == log.txs and loaded.sessions[sid].signed_count == 120


def test_an_append_racing_a_tombstone_is_refused(pg_url: str) -> None:
    """A tombstone holds the CoValue's row while it purges; an append of a live session that
    arrives meanwhile waits, then sees the CoValue deleted and stores nothing."""
    core = CoValueCore(new_header("comap", UnsafeAllowAll(), created_at=T0))
    sid = new_session_id(KEY.account_id)
    core.add_local(sid, [["set", "k", 1]], T0)
    core.sign_pending(KEY)
    store = open_store(pg_url)
    store.write([core.header])
    other = LoopThread("test-tombstone")
    conn = other.run(asyncpg.connect(pg_url))
    tx = conn.transaction()
    try:
        other.run(tx.start())
        other.run(conn.execute("SELECT 1 FROM covalues WHERE id = $1 FOR UPDATE", core.id))
        result: list[object] = []
        append = threading.Thread(
            target=lambda: result.append(store.write([], [SessionWrite.pending_of(core.sessions[sid], 0)]))
        )
        append.start()
        append.join(timeout(0.5))
        assert append.is_alive(), "the append did not wait for the tombstone's lock"
        other.run(conn.execute("UPDATE covalues SET deleted = true WHERE id = $1", core.id))
        other.run(tx.commit())
        append.join(timeout(10))
        assert result == [{(core.id, sid): 0}]
        assert store.stored_sessions(core.id) == []
    finally:
        other.run(conn.close())
        other.stop()
        store.close()


WRITERS = 4
INCREMENTS = 60


def test_cas_increments_from_several_nodes_lose_nothing(pg_url: str) -> None:
    """Four stores increment one counter by CAS, retrying on conflict: the counter ends at
    the number of increments, and the stored CAS records form one sequence of generations."""
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []
    attempts = Counter[str]()

    def increment(name: str) -> None:
        store = open_store(pg_url, writer=name)
        try:
            start.wait(timeout(10))
            for _ in range(INCREMENTS):
                generation, slot = store.kv.get("ns", "counter")
                while True:
                    value = 0 if slot is None else slot.value  # type: ignore[union-attr]
                    attempts[name] += 1
                    result = store.kv.cas("ns", "counter", generation, Present(value + 1))
                    if isinstance(result, Stored):
                        break
                    generation, slot = result.generation, result.slot
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    run_threads([threading.Thread(target=increment, args=(f"w{i}",)) for i in range(WRITERS)])
    assert errors == []
    total = WRITERS * INCREMENTS
    store = open_store(pg_url)
    try:
        assert store.kv.get("ns", "counter") == (total, Present(total))
        history = store.kv.history("ns", "counter")
    finally:
        store.close()
    stored = [r for r in history if r.outcome == "stored"]
    # Kept are the newest KV_LOG_KEEP_PER_KEY records; those stored follow one another.
    generations = [r.generation for r in stored]
    assert generations == list(range(generations[0], total + 1))
    assert all(r.expected_gen == r.generation - 1 for r in stored)
    assert all(r.outcome == "stored" or r.generation > r.expected_gen or r.generation < r.expected_gen for r in history)
    assert sum(attempts.values()) >= total
