"""Exporting a bundle is an operator action: ``bundle export STORE --key K`` appends a signed
``export`` record to the store's audit log (``kintsugi audit verify`` checks it), nothing is
recorded without a key or when the store cannot be written (the bundle is still written),
and a node asked over ``admin{export}`` records it itself, signed by its own key, naming
the admin (:class:`engine.net.serve.AdminActions`, on a real store)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

from engine.cli.audit import check_store
from engine.crypto import AccountKey
from engine.diagnostics.bundle_format import MANIFEST
from engine.net.serve import AdminActions
from engine.node.facade import LocalNode
from engine.protocol.messages import Admin, AdminResult, Message
from engine.protocol.messages.admin import intent_message
from engine.storage import open_store
from tests.engine.diagnostics._build import stored
from tests.util import run_cli


def _key(path: Path, seed: int) -> tuple[Path, AccountKey]:
    key = AccountKey.from_seed(bytes([seed]) * 32)
    key.save(path)
    return path, key


def _export(store: Path, out: Path, *extra: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        run_cli("bundle", "export", str(store), "--out", str(out), *extra, "--json").stdout
    )
    return data


def _records(store: Path) -> list[dict[str, Any]]:
    opened = open_store(store, readonly=True)
    try:
        return [r.to_json() for r in opened.audit_log()]
    finally:
        opened.close()


def test_a_store_export_with_a_key_is_recorded_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "store"
    stored(path, 250)[0].close()
    key_file, operator = _key(tmp_path / "operator.key", 7)
    out = tmp_path / "first.zip"
    first = _export(path, out, "--key", str(key_file))
    assert first["audit"]["recorded"] is True and first["audit"]["seq"] == 1
    second = _export(path, tmp_path / "second.zip", "--key", str(key_file), "--include-content")
    assert second["audit"]["seq"] == 2
    (one, two) = _records(path)
    assert (
        one["action"] == "export" and one["actor"] == operator.account_id and one["target"] == str(path / "kintsugi.db")
    )
    with zipfile.ZipFile(out) as zf:
        assert one["details"]["manifest_sha256"] == hashlib.sha256(zf.read(MANIFEST)).hexdigest()
    assert one["details"]["bundle"] == "first.zip" and one["details"]["content"] is False
    assert two["details"]["content"] is True and two["details"]["transactions"] == 250
    assert not any("seed" in json.dumps(r) for r in (one, two))
    verified = json.loads(run_cli("audit", "verify", str(path), "--json").stdout)
    assert verified["ok"] and verified["records"] == 2 and verified["head"] == two["hash"]

    # without a key nothing is recorded, and the output says why
    plain = _export(path, tmp_path / "plain.zip")
    assert plain["audit"]["recorded"] is False and "--key" in plain["audit"]["why"]
    assert len(_records(path)) == 2
    assert "recorded in the store's audit log" in " ".join(run_cli("bundle", "export", "--help").stdout.split())


def test_a_store_that_cannot_be_written_gets_the_bundle_but_no_record(tmp_path: Path) -> None:
    """Another process holds the store's write lock for the whole export: the bundle is
    written and verifies, the record is not, and the output says why."""
    path = tmp_path / "store"
    stored(path, 50)[0].close()
    key_file, _operator = _key(tmp_path / "operator.key", 8)
    db = next(path.glob("*.db"))
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        data = _export(path, tmp_path / "locked.zip", "--key", str(key_file))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert data["audit"]["recorded"] is False and "could not be written" in data["audit"]["why"]
    assert json.loads(run_cli("verify", str(tmp_path / "locked.zip"), "--json").stdout)["ok"]
    assert _records(path) == []


def _ask_export(actions: AdminActions, admin: AccountKey, args: dict[str, Any], *, intent: bool = True) -> AdminResult:
    sent: list[Message] = []
    actions.send = lambda _peer, message: sent.append(message)
    signed = admin.sign(intent_message(actions.node_name, "export", args)) if intent else None
    actions("in:1:" + admin.account_id, admin.account_id, Admin(1, "export", args, signed))
    (reply,) = sent
    assert isinstance(reply, AdminResult)
    return reply


def test_a_node_records_an_export_asked_by_an_admin(tmp_path: Path) -> None:
    """The node's shell answers admin{export}: a record in the node's own audit log, signed by
    the node's key, naming the admin (and their intent); a forged intent or bad arguments
    are refused and nothing is written."""
    node_key = AccountKey.from_seed(bytes([9]) * 32)
    admin = AccountKey.from_seed(bytes([10]) * 32)
    node = LocalNode.open(tmp_path / "node", node_key, instance_id="export-test")
    try:
        actions = AdminActions(node, lambda _p, _m: None, node_name="node-test")
        args = {
            "bundle": "node.zip",
            "bytes": 1234,
            "manifest_sha256": "ab" * 32,
            "salt_id": "s1",
            "content": False,
            "covalues": 3,
            "transactions": 40,
        }
        reply = _ask_export(actions, admin, args)
        assert reply.ok and reply.result["seq"] == 1
        # the admin's request carrying another account's signature: refused, nothing written
        other = AccountKey.from_seed(bytes([11]) * 32)
        sent: list[Message] = []
        actions.send = lambda _peer, message: sent.append(message)
        forged = Admin(2, "export", args, other.sign(intent_message("node-test", "export", args)))
        actions("in:2", admin.account_id, forged)
        assert isinstance(sent[0], AdminResult) and not sent[0].ok and sent[0].result["code"] == "permission_denied"
        bad = _ask_export(actions, admin, {**args, "manifest_sha256": "not hex"})
        assert not bad.ok and bad.result["code"] == "invalid_message"
        unsigned = _ask_export(actions, admin, {**args, "bundle": "again.zip"}, intent=False)
        assert unsigned.ok and unsigned.result["seq"] == 2
        assert node.store is not None
        report = check_store(node.store)
        assert report["ok"] and report["records"] == 2 and report["head"] == unsigned.result["head"]
        records = [r.to_json() for r in node.store.audit_log()]
        assert [r["actor"] for r in records] == [node_key.account_id] * 2
        assert [r["details"]["requested_by"] for r in records] == [admin.account_id] * 2
        assert records[0]["details"]["bundle"] == "node.zip" and records[0]["details"]["intent"]
        assert records[1]["details"]["intent"] is None
    finally:
        node.close()
