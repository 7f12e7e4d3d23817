"""``kintsugi compare`` against a real node, and one fork point everywhere.

- A client's store restored from a backup diverges from the node it synced with: ``kintsugi
  compare STORE ws://NODE --key …`` (sessions, the CoValue, the whole targets) finds the
  fork exactly where the backup ends; when the client reconnects, the node's fork event and
  the client's correction name the same fork point as the comparison, and the conflict
  session the automatic recovery split off aligns with its origin at the recorded fork point.
- ``kintsugi demo --headless --connect URL``: every correction the demo prints names a fork
  point that the node's own events for the same session agree with (exactly, or as the
  bound a known state allows).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.net.remote import EventCursor, RemoteSession
from engine.sync.events import SyncEvent
from tests.e2e.conftest import Account, ClientProc, NodeProcess
from tests.util import run_cli, timeout

FORK_AT = re.compile(r"fork at (\d+) after ([0-9a-f]{8})")
DIVERGES = re.compile(r"content diverges at (\d+)")
BOUND = re.compile(r"heads differ at count (\d+): fork at (?:or before )?(\d+)")


def node_events(url: str, admin: Account) -> list[SyncEvent]:
    """Every sync event the node kept (admins only)."""

    async def read() -> list[SyncEvent]:
        session = RemoteSession(url, AccountKey.load(admin.key))
        await session.open(timeout(10))
        try:
            cursor, out = EventCursor(), []
            while True:
                out += await session.events(cursor, timeout(10))
                if not cursor.more:
                    return out
        finally:
            await session.close()
            session.node.close()

    return asyncio.run(read())


def compare(*args: str) -> tuple[int, dict[str, Any]]:
    ran = run_cli("compare", *args, "--json", "--timeout", str(timeout(20)), check=False)
    assert ran.returncode in (0, 1), ran.stderr
    report: dict[str, Any] = json.loads(ran.stdout)
    return ran.returncode, report


def agrees(exact: int, detail: str) -> bool:
    """True when a node's fork event ``detail`` agrees with the exact fork point ``exact``."""
    if (m := DIVERGES.search(detail)) is not None:
        return int(m.group(1)) == exact
    if (m := BOUND.search(detail)) is not None:
        return exact <= int(m.group(2)) < int(m.group(1))
    return False


def test_a_store_against_the_node_it_diverged_from(
    node: NodeProcess, clients: Callable[..., ClientProc], accounts: Callable[[str], Account], admin: Account
) -> None:
    """Alice writes 30 edits and syncs; a backup of her store is taken; she writes 10 more,
    which the node acknowledges. The backup is restored and written offline on the same
    session: 15 other edits. Compared with the node, the restored store's session forks at
    30 (10 different rows, 5 only on the store); the CoValue shows that session forked;
    the whole targets show the CoValue forked. Reconnected, the node detects the fork at 30
    and the client's correction says the same."""
    alice = accounts("alice")
    store = node.store.parent / "stores" / "alice"
    first = clients("alice-1", alice, url=node.url, store=store, steps=("connect", "create-group"))
    group = first.reply(1)["id"]
    doc = first.do("create-map", group)["id"]
    session = first.do("write", doc, "x", "30")["session"]
    first.do("ack", doc)
    first.quit()
    backup = store.parent / "alice-backup"
    shutil.copytree(store, backup)
    second = clients("alice-2", alice, url=node.url, store=store, session=session, steps=("connect",))
    second.do("load", doc)
    second.do("write", doc, "y", "10")
    second.do("ack", doc)
    second.quit()
    restored = clients("alice-restored", alice, store=backup, session=session, steps=())
    restored.do("write", doc, "z", "15")
    restored.quit()

    code, report = compare(str(backup), node.url, "--key", str(admin.key), "--covalue", doc, "--session", session)
    assert code == 1 and report["identical"] is False
    assert report["fork"]["index"] == report["common_prefix"] == 30
    assert (report["different"]["count"], report["only_left"]["count"], report["only_right"]["count"]) == (10, 5, 0)
    row = report["different"]["rows"][0]
    assert row["left"]["change"].startswith("set z0 = ") and row["right"]["change"].startswith("set y0 = ")
    assert row["left"]["verification"] == row["right"]["verification"] == "verified"
    code, whole_doc = compare(str(backup), node.url, "--key", str(admin.key), "--covalue", doc)
    pairs = {p["session"]: p for p in whole_doc["sessions"]}
    assert code == 1 and pairs[session]["status"] == "forked" and pairs[session]["fork"]["index"] == 30
    code, whole = compare(str(backup), node.url, "--key", str(admin.key))
    statuses = {cv["covalue"]: cv["status"] for cv in whole["covalues"]}
    assert code == 1 and statuses[doc] == "forked" and group not in statuses  # the group is the same
    # the same store twice is identical
    assert compare(str(backup), str(backup), "--covalue", doc, "--session", session)[0] == 0

    back = clients("alice-back", alice, url=node.url, store=backup, session=session, steps=("connect",))
    back.do("load", doc)
    back.do("wait-event", "correction_applied")
    events = back.report(doc)["events"]
    back.quit()
    (corrected,) = [e["detail"] for e in events if e["kind"] == "correction_applied"]
    m = FORK_AT.search(corrected)
    assert m is not None and int(m.group(1)) == 30, corrected
    assert m.group(2) == report["fork"]["common_hash"][:8]  # the same last common hash
    detected = [e.detail for e in node_events(node.url, admin) if e.kind == "fork_detected" and e.session == session]
    assert detected and all(agrees(30, d) for d in detected), detected
    assert any(DIVERGES.search(d) for d in detected)  # the store held more: the node saw the content

    # The automatic recovery split the restored store's 15 edits into a conflict session and
    # recorded where: compared with its origin there, it aligns at the recorded fork point.
    conflict = f"{session}!"
    code, split = compare(str(backup), str(backup), "--covalue", doc, "--session", session, "--session", conflict)
    assert code == 1 and split["conflict"]["basis"] == "recorded", split["conflict"]
    assert split["conflict"]["index"] == split["common_prefix"] == 30
    assert split["only_right"]["count"] + split["different"]["count"] == 15


def test_the_live_demo_and_the_node_name_the_same_fork_points(
    node: NodeProcess, tmp_path: Path, admin: Account
) -> None:
    """Every correction the live demo reports ("fork at K after H") agrees with what the
    node's events said of that session: the same index when the node saw the content, else
    a bound from the known state that K is within."""
    result = run_cli("demo", "--headless", "--connect", node.url, "--json", "--store", str(tmp_path / "demo"))
    report = json.loads(result.stdout)
    corrections = {
        report["two_tabs"]["session"]: report["two_tabs"]["corrected"],
        report["crash_after_ack"]["killed_after_ack"]["session"]: report["crash_after_ack"]["after_restart"][
            "corrections"
        ],
    }
    events = node_events(node.url, admin)
    for session, details in corrections.items():
        assert details, session
        forks = [int(m.group(1)) for d in details if (m := FORK_AT.search(d)) is not None]
        assert len(forks) == len(details), details
        detected = [e.detail for e in events if e.kind == "fork_detected" and e.session == session]
        assert detected, session
        assert all(agrees(fork, d) for fork in forks for d in detected), (forks, detected)
