"""Comparisons over stores: a session against its conflict session in the demo store, one
CoValue on two stores, two whole stores, and ``kintsugi compare`` (text, JSON, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import compare as compare_cli
from engine.demo.scenario import DemoResult
from engine.diagnostics.chain_verify import ChainVerifier
from engine.diagnostics.compare import RowKind, compare_sessions
from engine.diagnostics.compare_scopes import CoValueStatus, PairStatus, compare_covalue, compare_targets
from engine.diagnostics.compare_sides import StoreSide
from engine.ids import SessionID, conflict_session_id, parse_session_id
from engine.model.fork import ForkPoint, origin_of
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.recovery.correction import apply_correction, replace_session
from engine.storage import open_store
from engine.storage.interface import SessionWrite
from engine.storage.sqlite.store import SQLiteStore
from tests.engine.diagnostics._build import T0, comap, fill, forked_stores, key, session_of, tamper_sig, tamper_tx
from tests.util import run_cli

WHO = key(3)
DOC = comap("scopes")
SID = session_of(WHO)
OTHER = session_of(WHO, 1)


def _log(sid: SessionID, parts: list[tuple[str, int]]) -> SessionLog:
    log = SessionLog(DOC.id, sid)
    for tag, count in parts:
        for i in range(count):
            log.append_pending(encode_transaction(T0 + i, [["set", tag, i]]))
        log.sign(WHO)
    return log


def _store(path: Path, logs: list[SessionLog]) -> Path:
    store = SQLiteStore(path)
    store.write([DOC.header], [SessionWrite(log, 0, log.signed_count) for log in logs])
    store.close()
    return path


def diverged(tmp_path: Path) -> tuple[Path, Path]:
    """Two stores: SID forked at 40 (left 7 more, right 9 more), OTHER only ahead on the
    left, a third session only on the right."""
    left = _store(tmp_path / "left", [_log(SID, [("p", 40), ("a", 7)]), _log(OTHER, [("o", 12)])])
    third = session_of(WHO, 2)
    right = _store(
        tmp_path / "right", [_log(SID, [("p", 40), ("b", 9)]), _log(OTHER, [("o", 10)]), _log(third, [("t", 3)])]
    )
    return left, right


def test_the_demo_conflict_session_aligns_at_the_recorded_fork_point(demo: DemoResult) -> None:
    store = open_store(demo.store, readonly=True)
    try:
        side = StoreSide(store)
        notes = demo.maps["notes"]
        (conflict,) = demo.conflict_sessions
        origin = origin_of(conflict)
        (detected,) = demo.forks_detected
        result = compare_sessions(
            side.open_session(notes, origin),  # type: ignore[arg-type]
            side.open_session(notes, conflict),  # type: ignore[arg-type]
            conflict_record=side.conflict_fork_record(notes, conflict),
        )
        al = result.alignment
        assert al.conflict is not None and al.conflict.recorded
        # the demo's fork number (the node's content-detected fork) is the compare's
        assert al.conflict.fork.index == detected["index"] == al.common_prefix
        assert detected["detail"] == al.conflict.fork.describe()
        rows = result.rows(al.common_prefix, 10)
        assert rows[0].kind is RowKind.DIFFERENT
        assert rows[0].left is not None and "tab1" in rows[0].left.summary
        assert rows[0].right is not None and "tab2" in rows[0].right.summary
        assert al.count(RowKind.ONLY_LEFT) == 2  # tab 1 wrote five, tab 2 three
    finally:
        store.close()


def test_a_correction_records_the_fork_point_of_its_conflict_session() -> None:
    mine = _log(SID, [("p", 20), ("mine", 4)])
    theirs = _log(SID, [("p", 20), ("theirs", 6)])
    core = comap("scopes")
    core.sessions[SID] = mine
    replacement = apply_correction(
        core, SID, theirs.chunk(20), account=WHO, writing=SID, new_session=lambda: session_of(WHO, 9)
    )
    outcome = replacement.outcome
    assert outcome.fork == ForkPoint(20, theirs.hash_at(20)) and outcome.conflict_session == conflict_session_id(SID, 1)
    record = replacement.fork_record()
    assert record is not None and record[1] == f"{core.id}/{outcome.conflict_session}"
    # nothing split off: no record
    other = comap("scopes")
    other.sessions[SID] = _log(SID, [("p", 20), ("mine", 4)])
    unowned = replace_session(other, SID, theirs.chunk(20), owner=None)
    assert unowned.conflict_session is None and unowned.fork is not None


def test_one_covalue_on_two_stores(tmp_path: Path) -> None:
    left_path, right_path = diverged(tmp_path)
    left, right = open_store(left_path, readonly=True), open_store(right_path, readonly=True)
    try:
        result = compare_covalue(StoreSide(left), StoreSide(right), DOC.id)
        status = {pair.session: pair for pair in result.pairs}
        assert status[SID].status is PairStatus.FORKED and status[SID].fork is not None
        assert status[SID].fork.index == 40
        assert status[OTHER].status is PairStatus.LEFT_AHEAD
        assert status[session_of(WHO, 2)].status is PairStatus.ONLY_RIGHT
        assert result.status is CoValueStatus.FORKED and not result.identical
        keys = {k.key: k for k in result.keys or []}
        # "a" only wins on the left, "b" and "t" only on the right, "o" differs by its winner
        assert keys["a"].right is None and keys["b"].left is None and keys["t"].left is None
        assert keys["o"].left is not None and keys["o"].right is not None
        assert keys["o"].left.value == 11 and keys["o"].right.value == 9
        assert "p" not in keys  # the same winner on both sides
        same = compare_covalue(StoreSide(left), StoreSide(left), DOC.id)
        assert same.identical and all(p.status is PairStatus.SAME for p in same.pairs)
    finally:
        left.close()
        right.close()


def test_two_whole_stores(tmp_path: Path) -> None:
    left_path, right_path = diverged(tmp_path)
    extra = comap("only-left")
    store = SQLiteStore(left_path)
    store.write([extra.header], [])
    store.close()
    left, right = open_store(left_path, readonly=True), open_store(right_path, readonly=True)
    try:
        result = compare_targets(StoreSide(left), StoreSide(right))
        statuses = {row.covalue: row.status for row in result.rows}
        assert statuses == {DOC.id: CoValueStatus.FORKED, extra.id: CoValueStatus.ONLY_LEFT}
        assert not result.identical and result.counts()["forked"] == 1
        assert compare_targets(StoreSide(left), StoreSide(left)).identical
    finally:
        left.close()
        right.close()


def test_the_cli_compares_sessions_covalues_and_stores(tmp_path: Path) -> None:
    left, right = diverged(tmp_path)
    ran = run_cli("compare", str(left), str(right), "--covalue", DOC.id, "--session", SID, "--json", check=False)
    assert ran.returncode == 1, ran.stderr
    report = json.loads(ran.stdout)
    assert report["identical"] is False and report["fork"]["index"] == 40 and report["common_prefix"] == 40
    assert report["different"]["count"] == 7 and report["only_right"]["count"] == 2
    assert report["only_left"]["count"] == 0 and len(report["only_right"]["rows"]) == 2
    row = report["different"]["rows"][0]
    assert row["left"]["change"] == "set a = 0" and row["right"]["change"] == "set b = 0"
    assert row["left"]["verification"] == row["right"]["verification"] == "verified"
    text = run_cli("compare", str(left), str(right), "--covalue", DOC.id, "--session", SID, check=False)
    assert text.returncode == 1
    assert "[40 common rows 0–39 folded]" in text.stdout and "fork at 40 after" in text.stdout
    assert "set a = 0" in text.stdout and "set b = 0" in text.stdout
    same = run_cli("compare", str(left), str(left), "--json", check=False)
    assert same.returncode == 0 and json.loads(same.stdout)["identical"] is True
    whole = run_cli("compare", str(left), str(right), check=False)
    assert whole.returncode == 1 and "forked" in whole.stdout
    missing = run_cli("compare", str(left), str(tmp_path / "nothing"), "--json", check=False)
    assert missing.returncode == 2 and json.loads(missing.stdout)["error"]["code"] == "store_not_found"
    bad = run_cli("compare", str(left), str(right), "--session", SID, check=False)
    assert bad.returncode == 2


def test_the_cli_compares_a_demo_session_with_its_conflict_session(demo: DemoResult) -> None:
    (conflict,) = demo.conflict_sessions
    origin = parse_session_id(conflict).base
    args = ("compare", demo.store, demo.store, "--covalue", demo.maps["notes"], "--session", origin)
    ran = run_cli(*args, "--session", conflict, "--json", check=False)
    assert ran.returncode == 1, ran.stderr
    report = json.loads(ran.stdout)
    assert report["conflict"]["basis"] == "recorded"
    assert report["conflict"]["index"] == report["common_prefix"] == demo.forks_detected[0]["index"]


def _copies(tmp_path: Path, damage: str | None) -> tuple[Path, Path]:
    """Two stores holding SID forked at 3000 (left 500 more, right 700 more), checkpoints
    every 100, with one kind of damage."""
    paths = []
    for side, extra in (("left", 500), ("right", 700)):
        log = SessionLog(DOC.id, SID)
        fill(log, WHO, 3000, every=100)
        for i in range(extra):
            log.append_pending(encode_transaction(T0 + 3000 + i, [["set", side, i]]))
            if log.count % 100 == 0:
                log.sign(WHO)
        log.sign(WHO)
        store = SQLiteStore(tmp_path / side)
        store.write([DOC.header], [SessionWrite(log, 0, log.signed_count)])
        if damage == f"{side}_tx":
            tamper_tx(store, SID, 1234, encode_transaction(T0, [["set", "rot", 1]]))
        elif damage == f"{side}_sig":
            tamper_sig(store, SID, 2000)
        elif damage == f"{side}_tail_tx":
            tamper_tx(store, SID, 3333, encode_transaction(T0, [["set", "rot", 1]]))
        store.close()
        paths.append(tmp_path / side)
    return paths[0], paths[1]


@pytest.mark.parametrize("apart", [True, False], ids=["child-process", "in-step"])
@pytest.mark.parametrize("damage", [None, "right_tx", "right_sig", "right_tail_tx", "left_tx", "left_sig"])
def test_verifying_two_copies_finds_what_verifying_each_alone_finds(
    tmp_path: Path, damage: str | None, apart: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kintsugi compare` hashes the shared prefix of two copies once (the right's prefix
    links by equality with the left's verified rows, in a child process or in step), and
    still reports exactly what verifying each chain on its own reports: the same first
    break, the same verified count, the same state for every row."""
    monkeypatch.setattr(compare_cli, "PARALLEL_MIN_ROWS", 0 if apart else 10**9)
    left_path, right_path = _copies(tmp_path, damage)
    stores = [open_store(left_path, readonly=True), open_store(right_path, readonly=True)]
    try:
        sides = (StoreSide(stores[0]), StoreSide(stores[1]))
        a, b = (side.open_session(DOC.id, SID) for side in sides)
        assert a is not None and b is not None
        comparison = compare_sessions(a, b)
        assert comparison.alignment.common_prefix == 3000
        compare_cli._verifiers(comparison, sides)
        for verifier, side in ((comparison.left_verifier, sides[0]), (comparison.right_verifier, sides[1])):
            alone = ChainVerifier(side.open_session(DOC.id, SID))  # type: ignore[arg-type]
            alone.run(1)
            assert verifier is not None and verifier.done
            found = (verifier.failure, verifier.verified, verifier.linked)
            assert found == (alone.failure, alone.verified, alone.linked)
            assert [verifier.state(i) for i in range(0, 3700, 7)] == [alone.state(i) for i in range(0, 3700, 7)]
        broken = {
            name: verifier.failure.index if verifier and verifier.failure else None
            for name, verifier in (("left", comparison.left_verifier), ("right", comparison.right_verifier))
        }
        expected = {"left": None, "right": None}
        if damage is not None:
            side, kind = damage.split("_", 1)
            expected[side] = {"tx": 1234, "sig": 1999, "tail_tx": 3333}[kind]
        assert broken == expected
    finally:
        for store in stores:
            store.close()


FORKED_AT = 2345


def test_two_bundles_without_content_locate_the_fork_within_one_batch(tmp_path: Path) -> None:
    """Bundles exported without content hold no rows, only the hash at every checkpoint:
    `kintsugi compare A.zip B.zip` (and a bundle against the other replica's store) puts
    the fork in a range of at most one batch that contains the real fork index; the
    CoValue and whole-target scopes call the session forked; a bundle against its own store
    is identical."""
    doc, sid, left, right = forked_stores(tmp_path, FORKED_AT)
    zips = []
    for store in (left, right):
        out = tmp_path / f"{store.name}.zip"
        run_cli("bundle", "export", str(store), "--out", str(out), "--json")
        zips.append(str(out))
    session = ("--covalue", doc.id, "--session", sid, "--json")
    for a, b in ((zips[0], zips[1]), (zips[0], str(right)), (str(left), zips[1])):
        ran = run_cli("compare", a, b, *session, check=False)
        assert ran.returncode == 1, ran.stderr
        report = json.loads(ran.stdout)
        assert report["basis"] == "checkpoints" and report["identical"] is False
        fork = report["fork"]
        assert fork["after"] <= FORKED_AT < fork["before"] and fork["before"] - fork["after"] <= 100, fork
        assert report["left"]["verification"] in ("checkpoints verified", "not verified (compared by hashes only)")
    sparse = json.loads(run_cli("compare", zips[0], zips[1], *session[:2], "--json", check=False).stdout)
    (pair,) = sparse["sessions"]
    assert pair["status"] == "forked" and pair["fork"]["index"] <= FORKED_AT < pair["fork"]["before"]
    whole = json.loads(run_cli("compare", zips[0], zips[1], "--json", check=False).stdout)
    assert [cv["status"] for cv in whole["covalues"]] == ["forked"]
    same = run_cli("compare", zips[0], str(left), *session, check=False)
    assert same.returncode == 0 and json.loads(same.stdout)["identical"] is True
    text = run_cli("compare", zips[0], zips[1], *session[:4], check=False).stdout
    assert f"[{(FORKED_AT // 100) * 100:,}, {(FORKED_AT // 100 + 1) * 100:,})" in text
