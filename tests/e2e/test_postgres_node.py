"""``kintsugi node serve --store postgresql://…``: a real node process on the throwaway
PostgreSQL server, real client processes over loopback WebSockets, and SIGKILL.

The story: Alice writes through the node in small batches and waits for acknowledgements;
the node is SIGKILLed the moment she has one — with more of her writes in flight — and
restarted on the same database and port, three times. Every acknowledged transaction is in
the database after each crash, chain intact; Alice's client reconnects by itself and the
rest of her writes arrive; Bob, connecting to the last node, gets everything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.ids import CoValueID, SessionID
from engine.storage import open_store
from tests.e2e.conftest import Account, NodeProcess, Proc, Processes
from tests.util import free_port

ROUNDS = 3
PER_ROUND = 60


class PostgresNode(NodeProcess):
    """``kintsugi node serve`` on a PostgreSQL store, on a given port (so a restarted node is
    where its clients reconnect to)."""

    def __init__(self, label: str, workdir: Path, *, url: str, key: Path, port: int, admins: tuple[str, ...]) -> None:
        self.store = workdir / label  # not used by a node on a database: its key is --key
        self.ready_file = workdir / f"{label}.ready"
        args = ["-m", "engine.cli", "-v", "node", "serve", "--store", url, "--key", str(key)]
        args += ["--host", "127.0.0.1", "--port", str(port), "--ready-file", str(self.ready_file)]
        for admin in admins:
            args += ["--admin", admin]
        self.key_file = key
        Proc.__init__(self, label, args)
        self.url = ""


def stored_heads(url: str, covalue: str) -> dict[SessionID, Any]:
    """Every verified session of ``covalue`` in the database, read by a store of our own."""
    store = open_store(url, readonly=True)
    try:
        loaded = store.load_covalue(CoValueID(covalue))
    finally:
        store.close()
    assert loaded is not None and not loaded.corrupt, loaded and loaded.corrupt
    return dict(loaded.sessions)


def test_a_node_on_postgres_keeps_every_acknowledged_write_across_sigkills(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    # pg_url first: its database outlives the node processes, which stop at teardown.
    alice, bob, node_account = accounts("alice"), accounts("bob"), accounts("node")
    port = free_port()
    started = 0

    def start_node() -> PostgresNode:
        nonlocal started
        started += 1
        node = PostgresNode(
            f"pg-node{started}", processes.workdir, url=pg_url, key=node_account.key, port=port, admins=()
        )
        processes.nodes.append(node)
        node.wait_ready()
        return node

    node = start_node()
    a = processes.client("alice", alice, url=node.url, steps=("connect", "create-group"))
    group = a.reply(1)["id"]
    a.do("role", group, bob.id, "reader")
    comap = a.do("create-map", group)["id"]
    a.do("ack", group)
    a.do("ack", comap)

    for round_ in range(ROUNDS):
        a.do("write", comap, f"r{round_}-", str(PER_ROUND), "1")
        acked = a.do("ack", comap)["acked"]
        heads = a.report(comap)["known"]
        a.send("write", comap, f"late{round_}-", str(PER_ROUND))  # in flight when the node dies
        node.reap()  # SIGKILL: a crash, not a shutdown
        processes.nodes.remove(node)
        stored = stored_heads(pg_url, comap)
        for sid, count in acked.items():
            log = stored[SessionID(sid)]
            assert log.signed_count >= count, f"round {round_}: {sid} lost acknowledged transactions"
            assert [count, log.hash_at(count).hex()] == heads[sid], f"round {round_}: {sid} holds another chain"
        node = start_node()
        a.do("ack", comap)  # the client reconnected to the new node by itself and caught up

    expected = 2 * ROUNDS * PER_ROUND
    report = a.report(comap)
    assert len(report["keys"]) == expected
    stored = stored_heads(pg_url, comap)
    assert {sid: [log.signed_count, log.head()[1].hex()] for sid, log in stored.items()} == report["known"]
    b = processes.client("bob", bob, url=node.url, steps=("connect", f"load {comap}"))
    b.reply(1)
    assert b.do("wait-keys", comap, str(expected))["keys"] == expected
    assert b.report(comap)["digest"] == report["digest"]
    a.quit()
    b.quit()
