"""The `kintsugi` command, run as a real subprocess against real stores."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

from tests.util import run_cli


def _json(*args: str, check: bool = True) -> tuple[int, dict]:
    result = run_cli(*args, "--json", check=check)
    return result.returncode, json.loads(result.stdout)


def test_account_new_writes_private_key_file_and_never_prints_the_secret(tmp_path: Path) -> None:
    """`account new` creates a 0600 key file; its secret appears in no output."""
    key_file = tmp_path / "me.key"
    result = run_cli("account", "new", "--out", str(key_file), "--json")
    data = json.loads(result.stdout)
    assert data["account"].startswith("acc_z")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_text().splitlines()[2]
    assert secret not in result.stdout and secret not in result.stderr
    shown = run_cli("account", "show", "--key", str(key_file), "--json")
    assert json.loads(shown.stdout) == {"account": data["account"]}
    again = run_cli("account", "new", "--out", str(key_file), "--json", check=False)
    assert again.returncode == 1
    assert json.loads(again.stdout)["error"]["code"] == "key_file"


def test_demo_builds_every_part_of_the_scenario(tmp_path: Path) -> None:
    """The demo store has members, edits, a recovered fork, a tombstone and contended slots."""
    store = tmp_path / "demo"
    _, demo = _json("demo", "--headless", "--store", str(store), "--edits", "600")
    assert len(demo["forks_detected"]) == 1
    assert demo["conflict_sessions"] and demo["conflict_sessions"][0].endswith("!")
    assert len(demo["deleted"]) == 1
    assert demo["kv_conflicts"] > 0
    assert demo["transactions"] > 600

    _, report = _json("inspect", str(store))
    by_id = {cv["id"]: cv for cv in report["covalues"]}
    deleted = by_id[demo["deleted"][0]]
    assert deleted["deleted"] and [s["kind"] for s in deleted["sessions"]] == ["delete"]
    notes = by_id[demo["maps"]["notes"]]
    assert "conflict_session" in notes["flags"]
    assert {s["kind"] for s in notes["sessions"]} == {"active", "conflict"}
    assert all(s["verified"] and len(s["head"]) == 64 for s in notes["sessions"])
    assert by_id[demo["group"]]["type"] == "group"
    states = {(k["key"], k["state"]) for k in report["kv"]}
    assert ("draft/old", "tombstone") in states and ("prefs/recent", "present") in states
    assert all(k["generation"] >= 1 for k in report["kv"])

    code, verify = _json("verify", str(store))
    assert code == 0 and verify["ok"] and verify["corrupt"] == []
    assert verify["transactions"] == demo["transactions"]


def test_demo_replaces_a_demo_store_but_refuses_other_directories(tmp_path: Path) -> None:
    """Running the demo twice works; pointing it at a directory with other data does not."""
    store = tmp_path / "demo"
    _json("demo", "--headless", "--store", str(store), "--edits", "50")
    _json("demo", "--headless", "--store", str(store), "--edits", "50")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    code, data = _json("demo", "--headless", "--store", str(precious), check=False)
    assert code == 1 and data["error"]["code"] == "usage"
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_verify_reports_a_corrupted_transaction_and_exits_1(tmp_path: Path) -> None:
    """A flipped bit in a stored block is reported with its session and first broken index."""
    store = tmp_path / "demo"
    _json("demo", "--headless", "--store", str(store), "--edits", "300")
    conn = sqlite3.connect(store / "kintsugi.db")
    sid, session, start, txs = conn.execute(
        "SELECT b.sid, s.session, b.start, b.txs FROM blocks b JOIN sessions s ON s.sid = b.sid "
        "WHERE s.count > 20 ORDER BY b.sid LIMIT 1"
    ).fetchone()
    damaged = bytearray(txs)
    damaged[-2] ^= 0x01  # inside the last transaction's bytes
    conn.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", (bytes(damaged), sid, start))
    conn.commit()
    conn.close()
    code, report = _json("verify", str(store), check=False)
    assert code == 1 and not report["ok"]
    assert [c["session"] for c in report["corrupt"]] == [session]
    assert report["corrupt"][0]["index"] is not None
    _, listing = _json("inspect", str(store))
    flagged = [cv for cv in listing["covalues"] if "corrupt" in cv["flags"]]
    assert len(flagged) == 1
    assert [s["verified"] for s in flagged[0]["sessions"] if s["id"] == session] == [False]


def test_missing_store_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """verify/inspect on a path without a store say so, with a stable code."""
    for command in ("verify", "inspect"):
        result = run_cli(command, str(tmp_path / "nowhere"), "--json", check=False)
        assert result.returncode == 1
        assert json.loads(result.stdout)["error"]["code"] == "store_not_found"
        assert "Traceback" not in result.stderr


def test_bench_json_shape(tmp_path: Path) -> None:
    """`bench --json` runs every default workload (not the opt-in ones, which build big
    stores first) and reports each with n, seconds, tx/s and RSS (and the node's); the JSON
    and `--help` list both kinds."""
    from bench.workloads import WORKLOADS

    _, data = _json("bench", "--n", "300")
    names = [w["name"] for w in data["workloads"]]
    assert names == data["default"] == list(WORKLOADS)
    assert {"write", "import_verify", "sqlite_write", "sqlite_reload", "sync_ws"} <= set(names)
    assert data["opt_in"] == list(WORKLOADS.opt_in) and {"bundle", "compare"} <= set(data["opt_in"])
    assert not set(names) & set(data["opt_in"])
    help_text = " ".join(run_cli("bench", "--help").stdout.split())
    assert all(name in help_text for name in [*names, *data["opt_in"]]) and "opt-in" in help_text
    for w in data["workloads"]:
        assert w["n"] == 300 and w["seconds"] > 0 and w["tx_per_s"] > 0 and w["rss_mb"] > 0
    assert next(w for w in data["workloads"] if w["name"] == "sync_ws")["node_rss_mb"] > 0


def test_help_explains_every_command() -> None:
    """`--help` lists the commands, and each command has its own help."""
    top = run_cli("--help").stdout
    for command in ("account", "demo", "verify", "inspect", "bench"):
        assert command in top
        assert "--json" in run_cli(command, "--help").stdout or command == "account"
