"""``kintsugi demo --headless``: beside the demo store, a replica to recover and its origin,
recovered end to end with real processes (``kintsugi node serve``, ``kintsugi recover``)."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

from engine.demo.repairs import LEDGER_ENTRIES, ROTTED_INDEX
from tests.util import python_child, run_cli, timeout, wait_until


def _json(*args: str, check: bool = True) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = run_cli(*args, "--json", check=check)
    return result.returncode, json.loads(result.stdout)


def test_the_demo_replica_is_damaged_and_recovers_from_its_served_origin(tmp_path: Path) -> None:
    _, demo = _json("demo", "--headless", "--store", str(tmp_path / "demo"), "--edits", "60")
    info = demo["recovery"]
    replica, origin = info["replica"], info["origin"]
    # the demo store itself stays whole; the replica's ledger is corrupt where it rotted
    assert _json("verify", demo["store"])[1]["ok"]
    code, damaged = _json("verify", replica, check=False)
    assert code == 1 and [(c["covalue"], c["index"]) for c in damaged["corrupt"]] == [(info["corrupt"], ROTTED_INDEX)]
    assert _json("verify", origin)[1]["ok"]

    ready = tmp_path / "origin.ready"
    node = python_child(["-m", "engine.cli", "node", "serve", "--store", origin, "--ready-file", str(ready)])
    try:
        wait_until(lambda: ready.exists() or node.poll() is not None, 15, "the origin's ready file")
        assert ready.exists(), "the origin exited before it was ready"
        url = ready.read_text().strip()
        scope = ("--from", url, "--key", info["operator_key"], "--group", info["group"])
        _, plan = _json("recover", "plan", replica, *scope)
        summary = plan["summary"]
        assert summary["covalues"] == 2 and summary["replaced"] == 2
        assert summary["at_risk"] == summary["archived"] == 1  # the stale release's divergent edit
        assert summary["unverifiable"] == LEDGER_ENTRIES - 120  # past the ledger's last good checkpoint
        code, applied = _json("recover", "apply", replica, *scope, "--yes")
        assert code == 0, applied
        assert applied["receipt"]["before"] and applied["receipt"]["after"]
    finally:
        node.send_signal(signal.SIGTERM)
        node.communicate(timeout=timeout(30))
    code, repaired = _json("verify", replica)
    assert code == 0 and repaired["corrupt"] == []
    _, audit = _json("audit", "verify", replica)
    assert audit["ok"] and audit["records"] >= 1 and audit["receipts"] == 1


def test_the_demo_store_is_private(tmp_path: Path) -> None:
    """The demo's store directory and its keys folder are 0700, its database 0600, as any
    store's: no other local user reads the demo's keys."""
    from engine.demo.scenario import build_demo

    store = tmp_path / "demo"
    build_demo(store, edits=20)
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "kintsugi.db").stat().st_mode) == 0o600
