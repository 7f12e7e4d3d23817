"""The node registry of a cluster on one PostgreSQL database, as the admin op ``cluster`` and
``kintsugi node cluster`` show it: two real ``kintsugi node serve`` processes (one key, so the
registry tells them apart by process), heartbeats every :data:`HEARTBEAT` seconds, a client
on one node seen from the other, one node SIGKILLed and shown as gone once it missed its
heartbeats, the other stopped cleanly and so unregistered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.net.remote import RemoteSession
from engine.storage import open_store
from engine.storage.interface import GONE_AFTER_MISSED_BEATS, ClusterStore
from engine.sync.cluster import ClusterNode, ClusterReport
from tests.e2e.conftest import STEP_UNITS, Account, NodeProcess, Proc, Processes
from tests.util import free_port, run_cli, timeout, wait_until

#: Seconds between heartbeats of the nodes here (the default is 5 s).
HEARTBEAT = 0.2


class RegisteredNode(NodeProcess):
    """``kintsugi node serve`` on the shared database with a short heartbeat."""

    def __init__(self, label: str, workdir: Path, *, url: str, key: Path, admin: str, advertise: str = "") -> None:
        self.store = workdir / label
        self.ready_file = workdir / f"{label}.ready"
        args = ["-m", "engine.cli", "-v", "node", "serve", "--store", url, "--key", str(key), "--admin", admin]
        args += ["--host", "127.0.0.1", "--ready-file", str(self.ready_file), "--heartbeat", str(HEARTBEAT)]
        if advertise:
            port = advertise.rsplit(":", 1)[1]
            args += ["--port", port, "--advertise", advertise]
        self.key_file = key
        Proc.__init__(self, label, args)
        self.url = ""


def ask_cluster(url: str, key: Path) -> ClusterReport:
    """The node's answer to ``admin{cluster}``, over a real WebSocket."""

    async def ask() -> Any:
        session = RemoteSession(url, AccountKey.load(key))
        await session.open(timeout(STEP_UNITS))
        try:
            return await session.admin("cluster", None, timeout(STEP_UNITS))
        finally:
            await session.close()

    return ClusterReport.from_json(asyncio.run(ask()))


def wait_for_rows(
    url: str, key: Path, pred: Callable[[dict[str, ClusterNode]], bool], what: str, units: float = 20
) -> dict[str, ClusterNode]:
    """The rows by URL, once ``pred`` holds for them (asked again until then)."""
    seen: dict[str, ClusterNode] = {}

    def check() -> bool:
        nonlocal seen
        seen = {n.url: n for n in ask_cluster(url, key).nodes}
        return pred(seen)

    try:
        wait_until(check, units, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last seen: {seen}") from None
    return seen


def test_two_nodes_on_one_database_show_each_other_and_a_killed_one_goes(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    admin, node_account, alice = accounts("admin"), accounts("node"), accounts("alice")

    def start(label: str, advertise: str = "") -> RegisteredNode:
        node = RegisteredNode(
            label, processes.workdir, url=pg_url, key=node_account.key, admin=admin.id, advertise=advertise
        )
        processes.nodes.append(node)
        node.wait_ready()
        return node

    a = start("a")
    advertised = f"ws://localhost:{free_port()}"  # another spelling than where it listens
    b = start("b", advertise=advertised)
    assert b.url != advertised

    both = wait_for_rows(
        a.url, admin.key, lambda rows: {a.url, advertised} <= set(rows), "both nodes in the registry, seen from a"
    )
    assert both[a.url].this and not both[advertised].this
    assert all(n.alive and n.account == node_account.id for n in both.values())
    assert both[a.url].node != both[advertised].node  # one key, two processes, two rows
    assert all(n.interval_ms == HEARTBEAT * 1000 for n in both.values())

    # A client on b shows among b's peers, as a sees b's heartbeats.
    client = processes.client("alice", alice, url=b.url, steps=("connect",))
    client.reply(0)
    rows = wait_for_rows(
        a.url,
        admin.key,
        lambda rows: any(r.get("account") == alice.id for r in rows[advertised].peer_rows),
        "alice among b's peers, seen from a",
    )
    assert rows[advertised].peers >= 1
    # The CLI prints the same, as text and as JSON.
    text = run_cli("node", "cluster", a.url, "--key", str(admin.key)).stdout
    assert a.url in text and advertised in text and "alive" in text
    doc = json.loads(run_cli("node", "cluster", a.url, "--key", str(admin.key), "--json").stdout)
    assert {row["url"] for row in doc["nodes"]} == {a.url, advertised} and doc["shared"] is True

    # SIGKILL b: it cannot unregister; after three missed heartbeats it shows as gone.
    client.quit()
    b.reap()
    processes.nodes.remove(b)
    gone = wait_for_rows(a.url, admin.key, lambda rows: not rows[advertised].alive, "b to show as gone")
    assert gone[advertised].age_ms > HEARTBEAT * 1000 * GONE_AFTER_MISSED_BEATS
    assert gone[a.url].alive
    assert "GONE" in run_cli("node", "cluster", a.url, "--key", str(admin.key)).stdout

    # Not an admin of a: refused, with the code.
    refused = run_cli("node", "cluster", a.url, "--key", str(alice.key), check=False)
    assert refused.returncode == 1 and "permission_denied" in refused.stderr

    # a stops cleanly: it unregisters; b's row stays (gone) for an operator to see.
    assert a.stop() == 0  # (reaped with the others at the end)
    store = open_store(pg_url)
    try:
        assert isinstance(store, ClusterStore)
        registry = store.cluster_registry()
        try:
            left = registry.nodes()
        finally:
            registry.close()
    finally:
        store.close()
    assert [(r.url, r.gone) for r in left] == [(advertised, True)]


def test_a_node_on_sqlite_is_a_cluster_of_one(node_factory: Callable[..., NodeProcess], admin: Account) -> None:
    node = node_factory("solo")
    report = ask_cluster(node.url, admin.key)
    assert not report.shared and report.note
    (only,) = report.nodes
    assert only.this and only.alive and only.url == node.url and only.account == node.account
