"""``kintsugi node serve --upstream ws://A,ws://B``: one upstream reached through either node of
a cluster, and a link that moves to the other node when its node dies.

The story, with real processes over loopback WebSockets: nodes A and B serve one PostgreSQL
database (the throwaway server of tests/pg.py); node D, on a SQLite store of its own, is
started with ``--upstream A,B`` and runs as an account that is an admin on both. Bob's client
is on B only, Alice's on D only.

- D links to A (the first URL of the list), and only to A: the list is one upstream, not two.
  Alice's writes through D reach Bob on B (D → A → the database → B).
- A is SIGKILLed. D's link moves to B by itself; what Alice writes through D afterwards (and
  meanwhile) reaches B, and what Bob writes on B reaches Alice through D. Everyone ends with
  the same content, which the database holds.

And at start: a malformed URL anywhere in a list is refused with the usage error (exit 2, no
traceback, nothing created), from the command line and from :func:`engine.net.serve.serve`.

About 6-9 s in all on 2 cores, the story 3-4 s of it (the PostgreSQL server, when this is
the first test to need it, adds its start of about a second).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.net.serve import serve
from tests.e2e.conftest import Account, NodeProcess, Processes
from tests.e2e.test_failover import crash
from tests.e2e.test_postgres_node import PostgresNode, free_port, stored_heads
from tests.util import run_cli, wait_until

#: Units any one wait of the story may take.
STEP_UNITS = 20
#: Keys each write step sets.
N = 10


def linked_to(node: NodeProcess, url: str) -> int:
    """How many times ``node`` logged its upstream link completing a handshake with ``url``."""
    return node.stderr.count(f"connected to {url} as ")


def wait_linked(node: NodeProcess, url: str, what: str) -> None:
    try:
        wait_until(lambda: linked_to(node, url) > 0 or node.proc.poll() is not None, STEP_UNITS, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{node.describe()}") from None
    assert linked_to(node, url) > 0, node.describe()


def test_a_node_with_two_upstream_urls_moves_to_the_other_when_its_node_dies(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    # pg_url first: its database outlives the node processes, which stop at teardown.
    alice, bob, node_key, link = accounts("alice"), accounts("bob"), accounts("node"), accounts("node-link")
    cluster = []
    for label in ("a", "b"):
        node = PostgresNode(
            f"pg-{label}", processes.workdir, url=pg_url, key=node_key.key, port=free_port(), admins=(link.id,)
        )
        processes.nodes.append(node)
        cluster.append(node)
    a, b = cluster
    a.wait_ready()
    b.wait_ready()
    down = processes.node("down", upstreams=(f"{a.url},{b.url}",), key=link.key)
    wait_linked(down, a.url, "D's link to A, the first URL of its --upstream")

    owner = processes.client("bob", bob, url=b.url, steps=("connect", "create-group"))
    group = owner.reply(1)["id"]
    owner.do("role", group, alice.id, "writer")
    comap = owner.do("create-map", group)["id"]
    owner.do("ack", group)
    owner.do("ack", comap)  # B committed both: the database holds them
    writer = processes.client("alice", alice, url=down.url, steps=("connect", f"load {comap}"))
    writer.reply(1)  # D fetched them through its link to A
    writer.do("write", comap, "before-", str(N))
    writer.do("ack", comap)
    owner.do("wait-keys", comap, str(N))  # D → A → the database → B → Bob
    assert linked_to(down, a.url) == 1
    assert linked_to(down, b.url) == 0, "one --upstream with two URLs made two links"

    crash(processes, a)
    writer.do("write", comap, "gap-", str(N))  # while D finds out and moves
    wait_linked(down, b.url, "D's link to move to B")
    writer.do("write", comap, "after-", str(N))
    writer.do("ack", comap)
    owner.do("wait-keys", comap, str(3 * N))  # D → B → Bob: A is gone
    owner.do("write", comap, "bob-", str(N))
    owner.do("ack", comap)
    writer.do("wait-keys", comap, str(4 * N))  # B → D → Alice

    reports = {c.label: c.report(comap) for c in (writer, owner)}
    expected = sorted(f"{p}-{i}" for p in ("before", "gap", "after", "bob") for i in range(N))
    assert reports["alice"]["keys"] == reports["bob"]["keys"] == expected
    assert reports["alice"]["digest"] == reports["bob"]["digest"]
    assert reports["alice"]["known"] == reports["bob"]["known"]
    stored = stored_heads(pg_url, comap)
    assert {sid: [log.signed_count, log.head()[1].hex()] for sid, log in stored.items()} == reports["bob"]["known"]
    assert (linked_to(down, a.url), linked_to(down, b.url)) == (1, 1)
    assert "Traceback" not in down.stderr, down.describe()
    writer.quit()
    owner.quit()


@pytest.mark.parametrize(
    ("upstream", "says"),
    [
        ("ws://127.0.0.1:9,http://127.0.0.1:9", "'http://127.0.0.1:9' is not a node URL"),
        ("ws://127.0.0.1:9,ws://127.0.0.1:http", "'http' is not a number"),
        ("ws://127.0.0.1:9,,ws://127.0.0.1:10", "empty node URL"),
    ],
)
def test_a_malformed_url_in_an_upstream_list_is_a_usage_error(tmp_path: Path, upstream: str, says: str) -> None:
    store = tmp_path / "store"
    ok = "ws://127.0.0.1:11"  # a well-formed --upstream before it changes nothing
    result = run_cli("node", "serve", "--store", str(store), "--upstream", ok, "--upstream", upstream, check=False)
    assert result.returncode == 2, result.stderr
    assert "argument --upstream" in result.stderr and says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not store.exists()


def test_serve_checks_every_url_of_every_upstream_before_it_creates_anything(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for upstreams, says in (
        (["ws://127.0.0.1:9", ["ws://127.0.0.1:10", "http://127.0.0.1:11"]], "--upstream http://127.0.0.1:11"),
        ([[]], "at least one node URL"),
    ):
        with pytest.raises(UsageError, match=says):
            asyncio.run(serve(store, upstreams=upstreams))
    assert not store.exists()


def test_node_serve_help_says_an_upstream_takes_several_urls() -> None:
    text = " ".join(run_cli("node", "serve", "--help").stdout.split())
    assert "several nodes of one cluster, comma-separated (ws://A:PORT,ws://B:PORT): one upstream" in text
    assert "Repeatable: each --upstream is another upstream" in text
