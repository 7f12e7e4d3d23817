"""Windowed session reading and change summaries (engine.diagnostics.session_rows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.diagnostics.session_rows import (
    MAX_SUMMARY_LENGTH,
    LogSessionSource,
    StoreSessionSource,
    decode_row,
    is_checkpoint,
    short_account,
    summarize_change,
    summarize_changes,
)
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.storage.interface import SessionWrite
from tests.engine.diagnostics._build import T0, comap, fill, key, session_of, stored


def test_summaries_name_each_kind_of_change() -> None:
    alice = key(1).account_id
    assert summarize_change(["set", "title", "milk"]) == 'set title = "milk"'
    assert summarize_change(["set", "n", {"done": True}]) == 'set n = {"done": true}'
    assert summarize_change(["del", "x"]) == "del x"
    assert summarize_change(["role", alice, "writer"]) == f"role {alice[:10]}… writer"
    assert summarize_change(["delete"]) == "delete"
    assert summarize_change(["set", "b", b"\x00\x01"]) == "set b = <2 bytes>"
    assert summarize_change(["frob", 1, "x"]) == 'frob 1 "x"'
    assert short_account("bob") == "bob"


def test_long_summaries_are_cut_and_say_how_many_changes_were_left_out() -> None:
    text = summarize_changes([["set", f"key{i}", "v" * 30] for i in range(20)])
    assert len(text) <= MAX_SUMMARY_LENGTH
    assert text.endswith("more)")
    long_value = summarize_change(["set", "k", "x" * 500])
    assert long_value.endswith("…") and len(long_value) < 80


def test_undecodable_rows_become_rows_with_an_error() -> None:
    row = decode_row((3, b"\xff\x00", b"h" * 32))
    assert row.index == 3 and row.made_at is None and row.error
    assert row.summary.startswith("undecodable")
    good = decode_row((0, encode_transaction(T0, [["del", "x"]]), bytes(range(32))))
    assert (good.made_at, good.summary, good.hash_prefix, good.changes) == (T0, "del x", "00010203", (("del", "x"),))


def test_store_windows_read_only_the_rows_asked_for(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 2500, every=100)
    source = StoreSessionSource(store, core.id, log.session)
    assert source.count == 2500
    assert source.stored_head() == (2500, log.hash_at(2500))
    rows = source.window(1990, 20)  # crosses a storage block boundary
    assert [r[0] for r in rows] == list(range(1990, 2010))
    assert [r[1] for r in rows] == log.txs[1990:2010]
    assert [r[2] for r in rows] == log.hashes[1990:2010]
    assert source.window(2490, 50)[-1][0] == 2499
    assert source.rows_read == 30
    assert list(source.checkpoints()) == list(range(100, 2501, 100))
    assert source.signature(100) == log.sigs[100] and source.signature(101) is None
    assert is_checkpoint(source.checkpoints(), 99) and not is_checkpoint(source.checkpoints(), 100)
    store.close()


def test_an_unknown_session_is_empty(tmp_path: Path) -> None:
    store, core, _log = stored(tmp_path / "s", 10)
    source = StoreSessionSource(store, core.id, session_of(key(2)))
    assert (source.count, source.window(0, 10), source.stored_head(), source.identity()) == (0, [], None, None)
    assert source.signature(1) is None
    store.close()


def test_log_source_follows_growth_and_replacement() -> None:
    who = key(1)
    core = comap()
    sid = session_of(who)
    core.sessions[sid] = log = SessionLog(core.id, sid)
    source = LogSessionSource(core.id, sid, lambda: core.sessions.get(sid))
    fill(log, who, 10, every=5, sign_tail=False)
    identity = source.identity()
    assert source.count == 10 and list(source.checkpoints()) == [5, 10]
    log.append_pending(encode_transaction(T0, [["set", "a", 1]]))
    assert source.count == 11 and source.window(10, 5)[0][0] == 10
    assert source.identity() == identity
    core.sessions[sid] = SessionLog(core.id, sid)
    assert source.identity() != identity and source.count == 0
    del core.sessions[sid]
    assert source.window(0, 5) == [] and source.checkpoints() == [] and source.signature(5) is None


@pytest.mark.parametrize(
    ("offset", "limit", "expected"), [(0, 3, [0, 1, 2]), (8, 5, [8, 9]), (12, 3, []), (-4, 2, [0, 1])]
)
def test_log_windows_are_clamped(offset: int, limit: int, expected: list[int]) -> None:
    who = key(1)
    log = SessionLog(comap().id, session_of(who))
    fill(log, who, 10)
    assert [r[0] for r in LogSessionSource.of(log).window(offset, limit)] == expected


def test_store_windows_stop_at_the_count_read_last(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 100, every=50)
    source = StoreSessionSource(store, core.id, log.session)
    fill(log, key(1), 50, every=50, start=100)
    store.write([core.header], [SessionWrite(log, 100, 150)])  # another writer appends
    assert source.count == 100 and [r[0] for r in source.window(90, 50)] == list(range(90, 100))
    source.reload()
    assert source.count == 150 and source.window(140, 50)[-1][0] == 149 and source.checkpoints()[-1] == 150
    store.close()
