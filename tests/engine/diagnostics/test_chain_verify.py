"""Incremental chain verification (engine.diagnostics.chain_verify)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.diagnostics.chain_verify import ChainVerifier, RowState
from engine.diagnostics.session_rows import LogSessionSource, StoreSessionSource
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.storage.sqlite.store import SQLiteStore
from tests.engine.diagnostics._build import T0, comap, fill, key, session_of, stored, tamper_sig, tamper_tx


@pytest.mark.parametrize("step_rows", [1, 7, 100, 5000])
def test_a_sound_stored_chain_verifies_whatever_the_step_size(tmp_path: Path, step_rows: int) -> None:
    store, core, log = stored(tmp_path / "s", 1234, every=100)
    verifier = ChainVerifier(StoreSessionSource(store, core.id, log.session))
    assert verifier.state(0) is RowState.PENDING and verifier.progress == 0.0
    assert verifier.run(step_rows) is None
    assert (verifier.linked, verifier.verified, verifier.done, verifier.progress) == (1234, 1234, True, 1.0)
    assert verifier.state(1233) is RowState.VERIFIED
    assert verifier.step() == 0
    store.close()


def test_progress_is_partial_between_steps(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 1000, every=100)
    verifier = ChainVerifier(StoreSessionSource(store, core.id, log.session))
    assert verifier.step(250) == 250
    assert (verifier.linked, verifier.verified) == (250, 200)
    assert verifier.state(199) is RowState.VERIFIED
    assert verifier.state(200) is RowState.PENDING and not verifier.done
    assert verifier.progress == 0.25
    store.close()


def test_a_changed_transaction_is_the_first_broken_link(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 1500, every=100)
    tamper_tx(store, log.session, 1234, encode_transaction(T0, [["set", "evil", 1]]))
    verifier = ChainVerifier(StoreSessionSource(store, core.id, log.session))
    failure = verifier.run(64)
    assert failure is not None and (failure.index, failure.code) == (1234, "broken_chain")
    assert verifier.verified == 1200
    assert verifier.state(1199) is RowState.VERIFIED
    assert verifier.state(1200) is RowState.UNVERIFIABLE
    assert verifier.state(1234) is RowState.BROKEN
    assert verifier.state(1400) is RowState.UNVERIFIABLE
    # the engine's own whole-log check agrees on the index
    whole = store.load_session(core.id, log.session).verify_all()
    assert whole is not None and whole.index == 1234
    store.close()


def test_a_bad_checkpoint_signature_breaks_at_its_last_row(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 500, every=100)
    tamper_sig(store, log.session, 300)
    verifier = ChainVerifier(StoreSessionSource(store, core.id, log.session))
    failure = verifier.run()
    assert failure is not None and (failure.index, failure.code) == (299, "bad_signature")
    assert verifier.verified == 200 and verifier.state(250) is RowState.UNVERIFIABLE
    store.close()


def test_missing_rows_and_stray_heads_are_breaks(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 2500, every=100)
    sid = store.conn.execute("SELECT sid FROM sessions").fetchone()[0]
    store.conn.execute("DELETE FROM blocks WHERE sid = ? AND start = 1000", (sid,))
    failure = ChainVerifier(StoreSessionSource(store, core.id, log.session)).run(300)
    assert failure is not None and (failure.index, failure.code) == (1000, "missing_rows")
    store.conn.execute("UPDATE sessions SET head = ? WHERE sid = ?", (bytes(32), sid))
    store.conn.execute("DELETE FROM blocks WHERE sid = ? AND start >= 1000", (sid,))
    store.conn.execute("UPDATE sessions SET count = 1000 WHERE sid = ?", (sid,))
    store.conn.execute("DELETE FROM signatures WHERE sid = ? AND n > 1000", (sid,))
    failure = ChainVerifier(StoreSessionSource(store, core.id, log.session)).run()
    assert failure is not None and failure.code == "head_mismatch"
    store.close()


def test_stored_rows_after_the_last_checkpoint_are_damage(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 250, every=100)
    sid = store.conn.execute("SELECT sid FROM sessions").fetchone()[0]
    store.conn.execute("DELETE FROM signatures WHERE sid = ? AND n = 250", (sid,))
    failure = ChainVerifier(StoreSessionSource(store, core.id, log.session)).run()
    assert failure is not None and (failure.index, failure.code) == (200, "unsigned_tail")
    store.close()


def test_an_unreadable_block_is_a_break(tmp_path: Path) -> None:
    store, core, log = stored(tmp_path / "s", 1500, every=100)
    sid = store.conn.execute("SELECT sid FROM sessions").fetchone()[0]
    store.conn.execute("UPDATE blocks SET txs = x'ff' WHERE sid = ? AND start = 1000", (sid,))
    failure = ChainVerifier(StoreSessionSource(store, core.id, log.session)).run(2000)
    assert failure is not None and (failure.index, failure.code) == (1000, "unreadable")
    store.close()


def test_a_live_log_is_followed_as_it_grows_and_restarted_when_replaced() -> None:
    who = key(1)
    core = comap()
    sid = session_of(who)
    core.sessions[sid] = log = SessionLog(core.id, sid)
    fill(log, who, 20, every=10)
    verifier = ChainVerifier(LogSessionSource(core.id, sid, lambda: core.sessions.get(sid)))
    assert verifier.run() is None and verifier.verified == 20
    log.append_pending(encode_transaction(T0 + 99, [["set", "late", 1]]))
    assert not verifier.done
    verifier.run()
    assert verifier.state(20) is RowState.UNSIGNED and verifier.verified == 20
    log.sign(who)
    verifier.run()
    assert verifier.state(20) is RowState.VERIFIED
    replacement = SessionLog(core.id, sid)
    fill(replacement, who, 5, every=5)
    core.sessions[sid] = replacement
    assert not verifier.done
    verifier.run()
    assert (verifier.linked, verifier.verified) == (5, 5)


def test_an_empty_session_is_done_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "empty")
    verifier = ChainVerifier(StoreSessionSource(store, comap().id, session_of(key(1))))
    assert verifier.run() is None and verifier.done and verifier.progress == 1.0
    store.close()
