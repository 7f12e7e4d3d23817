"""The Store interface's rules, kept by every store (``store_factory``: SQLite and
PostgreSQL): round trips, windows of long sessions, corruption found on load and recorded,
read-only use.

Every test works on a real store — a SQLite file in ``tmp_path`` or a fresh database of the
throwaway PostgreSQL server; damage is done with plain SQL on the database, the way a bad disk
or a stray tool would do it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.errors import ChainError, SignatureError, StorageError, StoreNotFound
from engine.ids import CoValueID, SessionID
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.storage import Store, open_store
from tests.engine._fork import expected_keys, key_from_seed, write_keys
from tests.engine.storage.backends import Backend
from tests.pg import PostgresServer

#: Transactions of the long session "b": more than one storage block.
B_COUNT = 1500


@dataclass
class Sample:
    """A store holding one CoMap written by three accounts, one session each."""

    backend: Backend
    covalue: CoValueID
    a: SessionID
    b: SessionID
    c: SessionID
    known: dict[SessionID, tuple[int, bytes]]
    items: dict[str, Any]
    logs: dict[SessionID, tuple[list[bytes], dict[int, bytes]]]


@pytest.fixture
def sample(store_factory: Backend) -> Sample:
    path = store_factory.location
    first = LocalNode.open(path, key_from_seed(1))
    doc = first.create_map(None).id
    write_keys(first, doc, "a", 10)
    write_keys(first, doc, "a", 5, start=10)
    first.set(doc, "shared", "a")
    a = first.session
    first.close()

    second = LocalNode.open(path, key_from_seed(2))
    write_keys(second, doc, "b", B_COUNT)
    second.set(doc, "shared", "b")
    b = second.session
    second.close()

    third = LocalNode.open(path, key_from_seed(3))
    write_keys(third, doc, "c", 7)
    third.set(doc, "shared", "c")
    core = third.get(doc)
    known = dict(third.known_state(doc).sessions)
    items = third.get_map(doc)
    logs = {sid: (list(log.txs), dict(log.sigs)) for sid, log in core.sessions.items()}
    c = third.session
    third.close()
    assert len({a, b, c}) == 3
    return Sample(store_factory, doc, a, b, c, known, items, logs)


@pytest.fixture
def store(sample: Sample) -> Store:
    return sample.backend.open()


def load(store: Store, covalue: CoValueID) -> CoValueCore:
    core = load_core(store, covalue)
    assert core is not None
    return core


# -- round trip ------------------------------------------------------------------------------


def test_round_trip_of_several_sessions(sample: Sample, store: Store) -> None:
    """A CoMap of three sessions reloads with equal content, known state and logs."""
    core = load(store, sample.covalue)
    assert not core.corrupt
    assert dict(core.known_state().sessions) == sample.known
    assert core.comap().items() == sample.items
    assert sample.items["shared"] == "c"
    assert {k: v for k, v in sample.items.items() if k.startswith("b/")} == expected_keys("b", B_COUNT)
    assert {sid: (log.txs, log.sigs) for sid, log in core.sessions.items()} == sample.logs
    assert store.covalue_ids() == [(sample.covalue, "comap", False)]
    assert store.has(sample.covalue)
    assert store.load_covalue(CoValueID("co_zunknown")) is None


def test_session_window_reads_across_blocks(sample: Sample, store: Store) -> None:
    """A window of a long session returns (idx, tx, hash) rows in order across blocks."""
    txs = sample.logs[sample.b][0]
    window = store.session_window(sample.covalue, sample.b, 995, 10)
    assert [i for i, _tx, _h in window] == list(range(995, 1005))
    assert [tx for _i, tx, _h in window] == txs[995:1005]
    core = load(store, sample.covalue)
    assert [h for _i, _tx, h in window] == core.sessions[sample.b].hashes[995:1005]
    assert store.session_window(sample.covalue, sample.b, B_COUNT + 1, 10) == []
    assert store.session_window(sample.covalue, sample.b, 0, 0) == []


def test_session_hash_reads_one_stored_hash(sample: Sample, store: Store) -> None:
    """A single row's hash, cut out of its block, equals the chain hash; rows that are not
    stored (before 0, past the end, an unknown session) give None."""
    hashes = load(store, sample.covalue).sessions[sample.b].hashes
    for index in (0, 1, 999, 1000, 1001, len(hashes) - 1):
        assert store.session_hash(sample.covalue, sample.b, index) == hashes[index], index
    assert store.session_hash(sample.covalue, sample.b, len(hashes)) is None
    assert store.session_hash(sample.covalue, sample.b, -1) is None
    assert store.session_hash(sample.covalue, SessionID(f"{sample.b[:-4]}zzzz"), 0) is None
    assert store.session_hash(CoValueID("co_zunknown"), sample.b, 0) is None


def test_session_hash_of_a_cut_hash_column_is_missing(sample: Sample, store: Store) -> None:
    """A block whose hash column was cut short reads as missing rows past the cut, not as a
    short hash that a comparison would take for a real one."""
    [(sid,)] = sample.backend.fetch(
        "SELECT sid FROM sessions WHERE covalue = ? AND session = ?", sample.covalue, sample.b
    )
    [(start, hashes)] = sample.backend.fetch(
        "SELECT start, hashes FROM blocks WHERE sid = ? AND start <= ? ORDER BY start DESC LIMIT 1", sid, 1200
    )
    kept = bytes(hashes)[: (1200 - start) * 32 + 10]
    sample.backend.execute("UPDATE blocks SET hashes = ? WHERE sid = ? AND start = ?", kept, sid, start)
    assert store.session_hash(sample.covalue, sample.b, 1200) is None
    assert store.session_hash(sample.covalue, sample.b, 1201) is None
    assert store.session_hash(sample.covalue, sample.b, 1199) is not None


# -- corruption --------------------------------------------------------------------------------


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def damage(backend: Backend, covalue: CoValueID, session: SessionID, part: str, tx: bytes) -> None:
    """Damage session ``session`` in the database at index 1200 (``tx`` is its transaction)."""
    [(sid,)] = backend.fetch("SELECT sid FROM sessions WHERE covalue = ? AND session = ?", covalue, session)
    [(start, txs, hashes)] = backend.fetch(
        "SELECT start, txs, hashes FROM blocks WHERE sid = ? AND start <= ? ORDER BY start DESC LIMIT 1", sid, 1200
    )
    txs, hashes = bytes(txs), bytes(hashes)
    if part == "tx":
        # The transaction's bytes sit verbatim inside the block's CBOR array.
        at = txs.index(tx) + len(tx) - 1
        backend.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", _flip(txs, at), sid, start)
    elif part == "hash":
        at = (1200 - start) * 32 + 7
        backend.execute("UPDATE blocks SET hashes = ? WHERE sid = ? AND start = ?", _flip(hashes, at), sid, start)
    elif part == "sig":
        [(sig,)] = backend.fetch("SELECT sig FROM signatures WHERE sid = ? AND n = 1000", sid)
        backend.execute("UPDATE signatures SET sig = ? WHERE sid = ? AND n = 1000", _flip(bytes(sig), 10), sid)
    elif part == "block":
        backend.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", _flip(txs, 0), sid, start)
    elif part == "gap":
        backend.execute("DELETE FROM blocks WHERE sid = ? AND start = ?", sid, start)
    else:  # pragma: no cover
        raise AssertionError(part)


#: part damaged → (error type, first broken index)
DAMAGE = {
    "tx": (ChainError, 1200),
    "hash": (ChainError, 1200),
    "sig": (SignatureError, 1000),
    "block": (ChainError, 1000),
    "gap": (ChainError, 1000),
}


@pytest.mark.parametrize("part", sorted(DAMAGE))
def test_damaged_session_is_left_out_and_recorded(sample: Sample, part: str) -> None:
    """A damaged session is left out, listed in core.corrupt and the corrupt table; the rest loads."""
    error_type, index = DAMAGE[part]
    damage(sample.backend, sample.covalue, sample.b, part, sample.logs[sample.b][0][1200])
    store = sample.backend.open()
    core = load(store, sample.covalue)
    assert set(core.corrupt) == {sample.b}
    error = core.corrupt[sample.b]
    assert isinstance(error, error_type), repr(error)
    assert error.index == index
    assert set(core.sessions) == {sample.a, sample.c}
    assert sample.b not in core.known_state().sessions
    for sid in (sample.a, sample.c):
        assert (core.sessions[sid].txs, core.sessions[sid].sigs) == sample.logs[sid]
    expected = {k: v for k, v in sample.items.items() if not k.startswith("b/")}
    assert core.comap().items() == expected
    assert store.corrupt_sessions() == [(sample.covalue, sample.b, index, error.code, str(error))]
    # Loading again finds the same and records it once.
    again = load(store, sample.covalue)
    assert set(again.corrupt) == {sample.b}
    assert len(store.corrupt_sessions()) == 1


def test_corrupt_record_survives_reopening(sample: Sample) -> None:
    """The corrupt table is durable: a later readonly open still lists the broken session."""
    damage(sample.backend, sample.covalue, sample.b, "hash", b"")
    with sample.backend.opened() as store:
        load(store, sample.covalue)
    with sample.backend.opened(readonly=True) as readonly:
        [(covalue, session, idx, code, _reason)] = readonly.corrupt_sessions()
    assert (covalue, session, idx, code) == (sample.covalue, sample.b, 1200, "broken_chain")


def test_a_session_written_whole_loses_its_corrupt_record(sample: Sample) -> None:
    """Replacing a damaged session with a good copy (what a recovery does) drops its corrupt
    record and serves the session again."""
    store = sample.backend.open()
    good = store.load_covalue(sample.covalue)
    assert good is not None
    damage(sample.backend, sample.covalue, sample.b, "gap", b"")
    assert sample.b in load(store, sample.covalue).corrupt
    assert store.replace_sessions(good.header, [good.sessions[sample.b]]) == []
    core = load(store, sample.covalue)
    assert not core.corrupt and store.corrupt_sessions() == []
    assert dict(core.known_state().sessions) == sample.known


# -- readonly -----------------------------------------------------------------------------------


def test_readonly_store_never_writes(sample: Sample) -> None:
    """A readonly store opens, loads (even a damaged session) and never changes the database."""
    damage(sample.backend, sample.covalue, sample.b, "sig", b"")
    before = sample.backend.state()
    store = sample.backend.open(readonly=True)
    assert store.readonly
    core = load(store, sample.covalue)
    assert set(core.corrupt) == {sample.b}
    assert set(core.sessions) == {sample.a, sample.c}
    assert store.covalue_ids() == [(sample.covalue, "comap", False)]
    assert store.session_window(sample.covalue, sample.a, 0, 3)
    assert store.corrupt_sessions() == []
    for write in (
        lambda: store.write([core.header]),
        lambda: store.put_checkpoint("ns", "k", b"v"),
        lambda: store.mark_deleted(core.header, [], []),
    ):
        with pytest.raises(StorageError):
            write()
    store.close()
    assert sample.backend.state() == before, "a readonly store wrote"


def test_readonly_sqlite_store_must_exist(tmp_path: Path) -> None:
    """Opening a missing store readonly raises StoreNotFound and creates nothing."""
    with pytest.raises(StoreNotFound) as info:
        open_store(tmp_path / "missing", readonly=True)
    assert isinstance(info.value, StorageError)
    assert list(tmp_path.iterdir()) == []


def test_readonly_postgres_store_must_exist(postgres: PostgresServer) -> None:
    """Opening a missing database readonly raises StoreNotFound and creates nothing."""
    with pytest.raises(StoreNotFound) as info:
        open_store(postgres.url("missing"), readonly=True)
    assert isinstance(info.value, StorageError)
