from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.errors import CASRetriesExhausted, KintsugiError, PermissionDenied, UsageError
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.rmw import (
    DEFAULT_RMW_ATTEMPTS,
    Merge,
    read_modify_write,
    read_modify_write_many,
)
from engine.kv.store import MemoryKV, Stored
from engine.storage.sqlite.kv import SQLiteKV
from tests.engine.kv._util import new_db, open_db, random_account, workers


def append(item: str) -> Merge:
    def merge(slot: Slot | None) -> Slot:
        items = slot.value if isinstance(slot, Present) else []
        return Present([*items, item])

    return merge


def test_first_write_and_update() -> None:
    store = MemoryKV()
    assert read_modify_write(store, "ns", "k", append("a")) == (1, Present(["a"]))
    assert read_modify_write(store, "ns", "k", append("b")) == (2, Present(["a", "b"]))


def test_merge_sees_fresh_value_after_conflict() -> None:
    store = MemoryKV()
    store.cas("ns", "k", 0, Present(["a"]))
    seen: list[Slot | None] = []

    def merge(slot: Slot | None) -> Slot | None:
        seen.append(slot)
        if len(seen) == 1:  # another writer gets in between our read and our CAS
            assert store.cas("ns", "k", 1, Present(["a", "rival"])) == Stored(2)
        return append("mine")(slot)

    assert read_modify_write(store, "ns", "k", merge) == (3, Present(["a", "rival", "mine"]))
    assert seen == [Present(["a"]), Present(["a", "rival"])]
    assert [r.outcome for r in store.history("ns", "k")] == [
        "stored",
        "stored",
        "conflict",
        "stored",
    ]


def test_merge_returning_none_writes_nothing() -> None:
    store = MemoryKV()
    store.cas("ns", "k", 0, Tombstone(1, random_account()))
    generation, slot = read_modify_write(store, "ns", "k", lambda slot: None)
    assert (generation, isinstance(slot, Tombstone)) == (1, True)
    assert read_modify_write(store, "ns", "new", lambda slot: None) == (0, None)
    assert len(store.history("ns", "k")) == 1
    assert store.history("ns", "new") == []


def rival_every_time(store: MemoryKV, key: str, calls: list[int]) -> Merge:
    """A merge that lets a competing writer win before each of our CAS attempts."""

    def merge(slot: Slot | None) -> Slot:
        calls.append(1)
        generation, _ = store.get("ns", key)
        store.cas("ns", key, generation, Present(f"rival {len(calls)}"))
        return Present("mine")

    return merge


def test_retries_exhausted_after_eight_conflicts() -> None:
    assert DEFAULT_RMW_ATTEMPTS == 8
    store = MemoryKV()
    calls: list[int] = []
    with pytest.raises(CASRetriesExhausted) as info:
        read_modify_write(store, "ns", "k", rival_every_time(store, "k", calls))
    assert (info.value.key, info.value.attempts, info.value.code) == (
        "k",
        8,
        "cas_retries_exhausted",
    )
    assert len(calls) == 8
    assert store.get("ns", "k") == (8, Present("rival 8"))
    outcomes = Counter(r.outcome for r in store.history("ns", "k"))
    assert outcomes == {"stored": 8, "conflict": 8}


def test_attempts_is_a_setting() -> None:
    store = MemoryKV()
    calls: list[int] = []
    with pytest.raises(CASRetriesExhausted) as info:
        read_modify_write(store, "ns", "k", rival_every_time(store, "k", calls), attempts=3)
    assert (info.value.attempts, len(calls)) == (3, 3)
    with pytest.raises(UsageError):
        read_modify_write(store, "ns", "k", append("x"), attempts=0)
    with pytest.raises(UsageError):
        read_modify_write_many(store, "ns", ["k"], append("x"), attempts=0)


def test_batch_isolates_errors_per_key() -> None:
    store = MemoryKV()
    store.cas("ns", "forbidden", 0, Present("forbidden"))
    store.cas("ns", "contended", 0, Present("contended"))

    def merge(slot: Slot | None) -> Slot:
        value = slot.value if isinstance(slot, Present) else None
        if value == "forbidden":
            raise PermissionDenied("not this one")
        if isinstance(value, str) and value.startswith(("contended", "rival")):
            generation, _ = store.get("ns", "contended")
            store.cas("ns", "contended", generation, Present("rival"))
        return Present("done")

    results = read_modify_write_many(store, "ns", ["a", "forbidden", "contended", "b", "a"], merge)
    assert list(results) == ["a", "forbidden", "contended", "b"]
    assert results["a"] == (1, Present("done"))
    assert results["b"] == (1, Present("done"))
    assert isinstance(results["forbidden"], PermissionDenied)
    assert isinstance(results["contended"], CASRetriesExhausted)
    assert isinstance(results["contended"], KintsugiError)
    assert store.get("ns", "forbidden") == (1, Present("forbidden"))


def test_batch_lets_bugs_through() -> None:
    def merge(slot: Slot | None) -> Slot:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        read_modify_write_many(MemoryKV(), "ns", ["a", "b"], merge)


# -- real processes ----------------------------------------------------------------------

PROCESSES = 4
INCREMENTS = 200


def test_concurrent_increments_across_processes(tmp_path: Path) -> None:
    db = new_db(tmp_path / "counter.db")
    keep = str(PROCESSES * INCREMENTS * 100)  # keep the whole log for the check below
    with workers(tmp_path) as spawn:
        procs = [
            spawn("increment", str(db), "ns", "counter", str(INCREMENTS), f"w{i}", keep)
            for i in range(PROCESSES)
        ]
        for proc in procs:
            proc.expect("ready")
        for proc in procs:
            proc.send("go")
        for proc in procs:
            proc.expect("done", timeout_units=30)
            assert proc.wait_exit() == 0, proc.stderr()

    conn = open_db(db)
    try:
        store = SQLiteKV(conn)
        total = PROCESSES * INCREMENTS
        assert store.get("ns", "counter") == (total, Present(total))
        history = store.history("ns", "counter")
    finally:
        conn.close()

    # Linearizability: replaying the log in commit order as a sequential register must
    # explain every record, won or lost.
    current = 0
    for record in history:
        if record.outcome == "stored":
            assert (record.expected_gen, record.generation) == (current, current + 1), record
            current += 1
        else:
            assert record.expected_gen != current and record.generation == current, record
    # The workers yield between read and CAS, so races are lost and retried for real.
    assert any(r.outcome == "conflict" for r in history)
    stored = [r for r in history if r.outcome == "stored"]
    assert sorted(r.generation for r in stored) == list(range(1, total + 1))
    assert all(r.expected_gen == r.generation - 1 for r in stored)
    assert Counter(r.writer for r in stored) == {f"w{i}": INCREMENTS for i in range(PROCESSES)}
