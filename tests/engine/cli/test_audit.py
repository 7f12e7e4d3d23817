"""``kintsugi audit verify|show`` on real SQLite stores (DESIGN §10): any changed byte of the
audit log, a removed or swapped record, or a tampered receipt fails ``verify``.

The log is made the way the engine makes it: ``connect``, ``elevate`` and ``export`` records
by :func:`engine.node.recovery.append_audit`, then a real recovery
(:func:`~engine.node.recovery.apply_recovery` of a forked copy, which archives the tail in
its receipt) appends the ``recover`` record and stores the receipt in one transaction. The
command runs in this process (``engine.cli.main.main``) so every byte can be tried; one run
goes through a real ``kintsugi`` subprocess.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from engine.cli.main import main
from engine.crypto import AccountKey
from engine.model.audit import AuditAction
from engine.node.facade import LocalNode
from engine.node.recovery import append_audit, apply_recovery, plan_recovery
from engine.recovery.plan import FetchedCoValue
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import copy_covalue, key_from_seed, write_keys
from tests.util import run_cli

T0 = 1_790_000_000_000
#: Records in the log made by :func:`make_log` (the recovery's last).
RECORDS = 4
#: Where in each column of each row the command-level cases change a byte (as a fraction of
#: its length: the first byte, the last, and some in between); every byte is tried by the
#: check underneath.
WHERE = (0.0, 0.25, 0.5, 0.75, 1.0)


def make_log(tmp: Path) -> Path:
    """A store whose audit log holds connect, elevate, export and a real recovery."""
    alice, bob = key_from_seed(1), key_from_seed(2)
    origin = LocalNode(alice)
    group = origin.create_group()
    origin.set_role(group.id, bob.account_id, "reader")
    doc = origin.create_map(group.id)
    write_keys(origin, doc.id, "common", 5)
    twin = LocalNode(alice, None, session=origin.session)
    copy_covalue(origin, twin, doc.id)
    write_keys(origin, doc.id, "mine", 3)  # Bob's copy has this tail; the peer has the twin's
    write_keys(twin, doc.id, "theirs", 4)
    path = tmp / "store"
    node = LocalNode.open(path, bob, clock_ms=lambda: T0 + 10)
    try:
        copy_covalue(origin, node, doc.id)
        assert node.store is not None
        for i, action in enumerate((AuditAction.CONNECT, AuditAction.ELEVATE, AuditAction.EXPORT)):
            append_audit(node.store, bob, action, str(path), details={"peer": "ws://127.0.0.1:1"}, at_ms=T0 + i)
        core = twin.get(doc.id)
        fetched = [FetchedCoValue(doc.id, core.header, False, dict(core.sessions))]
        plan = plan_recovery(node, fetched, peer="ws://127.0.0.1:1", operator=bob, scope=[doc.id])
        assert plan.summary()["archived"] == 3
        apply_recovery(node, plan, fetched, operator=bob, scope=[doc.id], at_ms=T0 + 5)
    finally:
        node.close()
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_log(tmp_path_factory.mktemp("audit"))


@pytest.fixture
def store(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the module's store (its database file, checkpointed)."""
    conn = sqlite3.connect(store_file(pristine))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    copy = tmp_path / "copy.db"
    copy.write_bytes(store_file(pristine).read_bytes())
    return copy


def kintsugi(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def execute(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def flipped(value: bytes, at: int) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


# -- intact ----------------------------------------------------------------------------------------


def test_an_intact_log_verifies(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = kintsugi(capsys, "audit", "verify", str(store))
    assert code == 0
    assert report == {
        "ok": True,
        "records": RECORDS,
        "receipts": 1,
        "head": execute(store, "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")[0][0].hex(),
        "problems": [],
    }


def test_an_intact_log_verifies_through_the_real_command(store: Path) -> None:
    ran = run_cli("audit", "verify", str(store))
    assert ran.returncode == 0 and ran.stdout.startswith(f"OK: {RECORDS} audit records, 1 receipts")


def test_audit_show_lists_every_record_oldest_first(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, shown = kintsugi(capsys, "audit", "show", str(store))
    assert code == 0
    assert set(shown) == {"records", "verify"} and shown["verify"]["ok"] is True
    records = shown["records"]
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert [r["action"] for r in records] == ["connect", "elevate", "export", "recover"]
    for record in records:
        assert set(record) == {"seq", "at", "actor", "action", "target", "details", "prev", "hash", "sig"}
        assert record["actor"] == key_from_seed(2).account_id
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(records))
    recovery = records[-1]["details"]
    assert {"peer", "plan", "receipt", "summary"} <= set(recovery)
    assert recovery["summary"]["archived"] == 3


def test_a_store_without_operator_actions_shows_an_empty_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with LocalNode.open(tmp_path / "empty", AccountKey.generate()) as node:
        node.create_map(None)
    code, shown = kintsugi(capsys, "audit", "show", str(tmp_path / "empty"))
    assert code == 0 and shown["records"] == [] and shown["verify"]["ok"] is True


# -- any byte --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("column", ["body", "hash", "sig"])
@pytest.mark.parametrize("seq", range(1, RECORDS + 1))
def test_verify_fails_when_a_byte_of_a_record_changes(
    store: Path, capsys: pytest.CaptureFixture[str], seq: int, column: str, where: float
) -> None:
    ((value,),) = execute(store, f"SELECT {column} FROM audit WHERE seq = ?", seq)
    at = round(where * (len(value) - 1))
    execute(store, f"UPDATE audit SET {column} = ? WHERE seq = ?", flipped(value, at), seq)
    code, report = kintsugi(capsys, "audit", "verify", str(store))
    assert code == 1 and report["ok"] is False and report["problems"], report


def test_every_single_byte_of_every_record_is_covered(store: Path) -> None:
    """Underneath the command: the same check, for every byte of every body, hash and
    signature in the log (the command-level cases above sample them)."""
    from engine.cli.audit import check_store

    tried = 0
    for seq, body, digest, sig in execute(store, "SELECT seq, body, hash, sig FROM audit"):
        for column, value in (("body", body), ("hash", digest), ("sig", sig)):
            for at in range(len(value)):
                execute(store, f"UPDATE audit SET {column} = ? WHERE seq = ?", flipped(value, at), seq)
                opened = SQLiteStore(store, readonly=True)
                try:
                    assert not check_store(opened)["ok"], (seq, column, at)
                finally:
                    opened.close()
                tried += 1
            execute(store, f"UPDATE audit SET {column} = ? WHERE seq = ?", value, seq)
    assert tried > RECORDS * (32 + 64)


@pytest.mark.parametrize("seq", range(1, RECORDS + 1))
def test_verify_fails_when_a_record_is_removed(store: Path, capsys: pytest.CaptureFixture[str], seq: int) -> None:
    """Removing a record breaks the chain after it; removing the newest (the recovery's)
    leaves its receipt without a record."""
    execute(store, "DELETE FROM audit WHERE seq = ?", seq)
    code, report = kintsugi(capsys, "audit", "verify", str(store))
    assert code == 1 and report["problems"], report


@pytest.mark.parametrize(("a", "b"), [(1, 2), (2, 3), (1, 4), (3, 4)])
def test_verify_fails_when_two_records_are_swapped(
    store: Path, capsys: pytest.CaptureFixture[str], a: int, b: int
) -> None:
    rows = {s: (body, h, sig) for s, body, h, sig in execute(store, "SELECT seq, body, hash, sig FROM audit")}
    for seq, other in ((a, b), (b, a)):
        execute(store, "UPDATE audit SET body = ?, hash = ?, sig = ? WHERE seq = ?", *rows[other], seq)
    code, report = kintsugi(capsys, "audit", "verify", str(store))
    assert code == 1 and report["problems"], report


@pytest.mark.parametrize("column", ["body", "sig", "id"])
def test_verify_fails_when_the_stored_receipt_is_tampered(
    store: Path, capsys: pytest.CaptureFixture[str], column: str
) -> None:
    ((value,),) = execute(store, f"SELECT {column} FROM receipts")
    execute(store, f"UPDATE receipts SET {column} = ?", flipped(value, len(value) // 2))
    code, report = kintsugi(capsys, "audit", "verify", str(store))
    assert code == 1 and report["problems"], report
    code, shown = kintsugi(capsys, "audit", "show", str(store))
    assert code == 0 and shown["verify"]["ok"] is False


def test_verify_fails_when_the_receipt_is_removed(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    execute(store, "DELETE FROM receipts")
    code, report = kintsugi(capsys, "audit", "verify", str(store))
    assert code == 1 and any("not in the store" in p for p in report["problems"]), report
