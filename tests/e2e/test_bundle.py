"""Diagnostic bundles of a real node (``kintsugi node serve``) after the demo's clients played
their story against it (forks recovered into conflict sessions, a tombstone, CAS slots):

- ``kintsugi bundle export ws://… --key admin.key`` and a bundle of the node's store file;
- offline, ``kintsugi inspect FILE.zip`` shows the same CoValues, sessions, counts, heads and
  flags as ``kintsugi inspect ws://…`` live, the same CAS slots (keys as the same salt's
  tokens) and ``kintsugi anomalies`` the same anomalies; ``kintsugi verify FILE.zip`` passes;
- ``kintsugi compare FILE.zip ws://…`` finds the bundle and the live node the same;
- ``kintsugi-inspector FILE.zip`` (offscreen) loads the same counts as the live node;
- the admin's key never enters the bundle;
- the peers × sessions matrix of a node over the wire (``admin{matrix}``), for admins only,
  in ``inspect --json`` and in a bundle exported from the node.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.diagnostics.redact import Tokenizer
from engine.errors import AdminRefused
from engine.net.remote import RemoteSession
from tests.e2e.conftest import Account, ClientProc, NodeProcess
from tests.inspector.test_app import App
from tests.util import run_cli, timeout


def cli_json(*args: str, units: float = 60) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_cli(*args, "--json", timeout_units=units).stdout)
    return data


def by_id(report: dict[str, Any]) -> dict[str, Any]:
    return {cv["id"]: cv for cv in report["covalues"]}


def tokenized(rows: list[dict[str, Any]], tok: Tokenizer) -> list[dict[str, Any]]:
    """Live rows as a bundle made with ``tok``'s salt shows them: CAS keys as tokens."""
    out = []
    for row in rows:
        if "key" not in row:
            out.append(row)
            continue
        token = tok.token(row["key"])
        changed = {**row, "key": token}
        if "subject" in row:
            changed["subject"] = row["subject"].replace(row["key"], token)
        out.append(changed)
    return out


def loaded_counts(*args: str) -> dict[str, Any]:
    """The ``loaded`` event of ``kintsugi-inspector ARGS --quit-after-load`` (offscreen)."""
    app = App(*args, "--quit-after-load")
    try:
        loaded = app.wait_event("loaded", 60)
    except BaseException:
        app.proc.kill()
        app.finish()
        raise
    assert app.finish() == 0, app.stderr_text()
    assert "Traceback" not in app.stderr_text()
    return {k: v for k, v in loaded.items() if k != "event"}


def test_a_node_and_its_store_round_trip_through_bundles(node: NodeProcess, admin: Account, tmp_path: Path) -> None:
    story = cli_json("demo", "--headless", "--connect", node.url, "--store", str(tmp_path / "clients"), units=120)
    assert story["deleted"] and story["conflict_sessions"]
    salt = tmp_path / "incident.salt"
    remote = tmp_path / "node.zip"
    key = ("--key", str(admin.key), "--timeout", str(timeout(20)))
    export = cli_json("bundle", "export", node.url, *key, "--out", str(remote), "--salt-file", str(salt))
    assert export["scope"]["covalues"] >= 4 and export["redaction"]["policy"] == "tokens"
    tok = Tokenizer(bytes.fromhex(salt.read_text()))

    live = cli_json("inspect", node.url, *key)
    offline = cli_json("inspect", str(remote))
    assert by_id(offline) == by_id(live)
    assert offline["kv"] == sorted(tokenized(live["kv"], tok), key=lambda r: (r["namespace"], r["key"]))
    assert live["matrix"] is not None and live["matrix"]["available"]  # admin{matrix}: every cell
    assert [p["peer_id"] for p in offline["matrix"]["peers"]]  # the node's peers at export time

    live_anomalies = cli_json("anomalies", node.url, *key)["anomalies"]
    offline_anomalies = cli_json("anomalies", str(remote))["anomalies"]
    assert offline_anomalies == tokenized(live_anomalies, tok)
    assert {a["kind"] for a in offline_anomalies} >= {"fork"}

    verified = cli_json("verify", str(remote))
    assert verified["ok"] and verified["sessions"] >= 6

    # the bundle (no rows, the hash at every checkpoint) against the live node: the same
    compared = run_cli("compare", str(remote), node.url, *key, "--json", check=False)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    same = json.loads(compared.stdout)
    assert same["identical"] and same["counts"]["same"] == export["scope"]["covalues"] and not same["covalues"]

    # the node's store file, bundled with the same salt, holds the same CoValues and heads
    stored = tmp_path / "store.zip"
    cli_json("bundle", "export", str(node.store), "--out", str(stored), "--salt-file", str(salt))
    assert by_id(cli_json("inspect", str(stored))) == by_id(offline)

    # the admin's private key seed never leaves, in any form
    seed = bytes.fromhex(admin.key.read_text().splitlines()[2])
    assert AccountKey.from_seed(seed).account_id == admin.id
    blobs = [remote.read_bytes()]
    with zipfile.ZipFile(remote) as zf:
        blobs += [zf.read(name) for name in zf.namelist()]
    assert not any(form in blob for blob in blobs for form in (seed, seed.hex().encode()))

    # the app opens the bundle offline and shows what it shows of the live node
    live_counts = loaded_counts(node.url, "--key", str(admin.key))
    bundle_counts = loaded_counts(str(remote))
    assert bundle_counts == live_counts and bundle_counts["conflict_sessions"] >= 1


def test_the_matrix_of_a_real_node_over_the_wire(
    node: NodeProcess,
    clients: Callable[..., ClientProc],
    accounts: Callable[[str], Account],
    admin: Account,
    tmp_path: Path,
) -> None:
    """A client that wrote 30 edits stays connected: `kintsugi inspect ws://… --json` as an
    admin carries the node's peers × sessions matrix (admin{matrix}) with the client's row
    and a cell saying it acknowledged all 30 of its session; `bundle export ws://…` carries
    the same cells; a non-admin gets no matrix, and the op itself refuses it."""
    alice = accounts("alice")
    client = clients("alice", alice, url=node.url, store=tmp_path / "alice", steps=("connect", "create-group"))
    group = client.reply(1)["id"]
    doc = client.do("create-map", group)["id"]
    session = client.do("write", doc, "x", "30")["session"]
    client.do("ack", doc)
    key = ("--key", str(admin.key), "--timeout", str(timeout(20)))
    try:
        matrix = cli_json("inspect", node.url, *key)["matrix"]
        assert matrix["available"] is True and matrix["note"] == ""
        rows = [i for i, p in enumerate(matrix["peers"]) if p["account"] == alice.id]
        (column,) = [i for i, c in enumerate(matrix["sessions"]) if c["covalue"] == doc and c["session"] == session]
        assert matrix["sessions"][column]["count"] == 30 and matrix["owners"][doc] == group
        (row,) = rows
        cells = {(r, c): (acked, behind, diverged) for r, c, acked, behind, diverged in matrix["cells"]}
        assert cells[(row, column)] == (30, 0, False)
        assert matrix["peers"][row]["behind"] == 0

        out = tmp_path / "node.zip"
        cli_json("bundle", "export", node.url, *key, "--out", str(out))
        carried = cli_json("inspect", str(out))["matrix"]
        assert carried["available"] is True and carried["cells"] == matrix["cells"]

        as_alice = cli_json("inspect", node.url, "--key", str(alice.key), "--timeout", str(timeout(20)))
        assert as_alice["matrix"] is None
        assert refused_matrix(node.url, alice) == "permission_denied"
    finally:
        client.quit()


def refused_matrix(url: str, account: Account) -> str | None:
    """The code the node refuses ``admin{matrix}`` from ``account`` with (None: it answered)."""

    async def ask() -> str | None:
        session = RemoteSession(url, AccountKey.load(account.key))
        await session.open(timeout(10))
        try:
            await session.admin("matrix", None, timeout(10))
        except AdminRefused as exc:
            return exc.reason
        finally:
            await session.close()
            session.node.close()
        return None

    return asyncio.run(ask())


def test_an_export_from_a_node_is_recorded_in_the_nodes_store(
    node: NodeProcess, admin: Account, tmp_path: Path
) -> None:
    """`bundle export ws://… --key admin.key`: the node appends an export record to its own
    audit log, signed by the node's key, naming the admin; `kintsugi audit verify` passes."""
    out = tmp_path / "node.zip"
    data = cli_json("bundle", "export", node.url, "--key", str(admin.key), "--out", str(out))
    assert data["audit"]["recorded"] is True, data["audit"]
    shown = cli_json("audit", "show", str(node.store))
    (record,) = shown["records"]
    assert record["action"] == "export" and record["actor"] == node.account
    assert record["details"]["requested_by"] == admin.id and record["details"]["bundle"] == "node.zip"
    assert shown["verify"]["ok"]
