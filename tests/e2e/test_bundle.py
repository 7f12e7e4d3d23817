"""Diagnostic bundles of a real node (``kintsugi node serve``) after the demo's clients played
their story against it (forks recovered into conflict sessions, a tombstone, CAS slots):

- ``kintsugi bundle export ws://… --key admin.key`` and a bundle of the node's store file;
- offline, ``kintsugi inspect FILE.zip`` shows the same CoValues, sessions, counts, heads and
  flags as ``kintsugi inspect ws://…`` live, the same CAS slots (keys as the same salt's
  tokens) and ``kintsugi anomalies`` the same anomalies; ``kintsugi verify FILE.zip`` passes;
- ``kintsugi-inspector FILE.zip`` (offscreen) loads the same counts as the live node;
- the admin's key never enters the bundle.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.diagnostics.redact import Tokenizer
from tests.e2e.conftest import Account, NodeProcess
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
    assert live["matrix"] is not None and not live["matrix"]["available"]  # a node sends totals only
    assert [p["peer_id"] for p in offline["matrix"]["peers"]]  # the node's peers at export time

    live_anomalies = cli_json("anomalies", node.url, *key)["anomalies"]
    offline_anomalies = cli_json("anomalies", str(remote))["anomalies"]
    assert offline_anomalies == tokenized(live_anomalies, tok)
    assert {a["kind"] for a in offline_anomalies} >= {"fork"}

    verified = cli_json("verify", str(remote))
    assert verified["ok"] and verified["sessions"] >= 6

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
