"""Three ``kintsugi node serve`` processes on one PostgreSQL database (the throwaway server of
tests/pg.py), clients on different nodes over loopback WebSockets:

- they converge: each client sees the others' writes, which reach its node only through the
  database (the change log and its notifications);
- SIGKILL one node at random moments, again and again: no acknowledged write is lost, the
  clients of the killed node move to another node by themselves (``--url`` lists all three)
  and everyone converges at the end (the seed is printed; ``KINTSUGI_CLUSTER_SEED`` replays);
- a fork made through two nodes (two processes writing one session, each on another node)
  is detected against the database and corrected, the divergent edits kept in a conflict
  session, as on one node.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

from engine.ids import SessionID
from tests.e2e.conftest import Account, ClientProc, Processes
from tests.e2e.test_postgres_node import PostgresNode, free_port, stored_heads

NODES = 3
#: Kill rounds of the crash story (the issue asks for at least 20 in CI).
KILL_ROUNDS = int(os.environ.get("KINTSUGI_CLUSTER_KILLS", "20"))
#: Writes each client sends per round, in flight when the node dies.
PER_ROUND = 4
#: Longest random wait, in seconds, between the writes leaving and the SIGKILL.
KILL_DELAY_MAX = 0.15


class Cluster:
    """Three nodes on one database, each on a fixed port (a restarted node is where it was)."""

    def __init__(self, processes: Processes, url: str, node_key: Account) -> None:
        self.processes = processes
        self.url = url
        self.key = node_key
        self.ports = [free_port() for _ in range(NODES)]
        self.nodes: list[PostgresNode | None] = [None] * NODES
        self.started = 0

    def start(self, i: int) -> PostgresNode:
        self.started += 1
        node = PostgresNode(
            f"pg-node{i}-{self.started}",
            self.processes.workdir,
            url=self.url,
            key=self.key.key,
            port=self.ports[i],
            admins=(),
        )
        self.processes.nodes.append(node)
        self.nodes[i] = node
        return node

    def start_all(self) -> None:
        for i in range(NODES):
            self.start(i)
        for node in self.nodes:
            assert node is not None
            node.wait_ready()

    def kill(self, i: int) -> None:
        node = self.nodes[i]
        assert node is not None
        node.reap()  # SIGKILL: a crash, not a shutdown
        self.processes.nodes.remove(node)
        self.nodes[i] = None

    def node_url(self, i: int) -> str:
        return f"ws://127.0.0.1:{self.ports[i]}"

    def urls_from(self, i: int) -> str:
        """Every node's URL, node ``i``'s first (comma-separated, as the test client takes them)."""
        return ",".join(self.node_url((i + k) % NODES) for k in range(NODES))


def shared_map(
    processes: Processes, cluster: Cluster, owner: Account, writers: list[Account]
) -> tuple[ClientProc, str, str]:
    """``owner``, on node 0, makes a group with ``writers`` as writers and a CoMap in it."""
    client = processes.client(owner.name, owner, url=cluster.urls_from(0), steps=("connect", "create-group"))
    group = client.reply(1)["id"]
    for writer in writers:
        client.do("role", group, writer.id, "writer")
    comap = client.do("create-map", group)["id"]
    client.do("ack", group)
    client.do("ack", comap)
    return client, group, comap


def test_clients_on_three_nodes_converge(pg_url: str, processes: Processes, accounts: Callable[[str], Account]) -> None:
    alice, bob, carol = accounts("alice"), accounts("bob"), accounts("carol")
    cluster = Cluster(processes, pg_url, accounts("node"))
    cluster.start_all()
    a, _group, comap = shared_map(processes, cluster, alice, [bob, carol])
    others = [
        processes.client(p.name, p, url=cluster.node_url(i), steps=("connect", f"load {comap}"))
        for i, p in ((1, bob), (2, carol))
    ]
    for client in others:
        client.reply(1)
    everyone = [a, *others]
    n = 20
    sent = [(c, c.send("write", comap, f"{c.label}-", str(n), "2")) for c in everyone]
    for c, seq in sent:
        c.reply(seq)
    started = time.monotonic()
    for c in everyone:
        c.do("ack", comap)
    for c in everyone:
        c.do("wait-keys", comap, str(3 * n))
    print(f"converged {time.monotonic() - started:.2f} s after the last write")
    reports = [c.report(comap) for c in everyone]
    expected = sorted(f"{c.label}-{i}" for c in everyone for i in range(n))
    assert all(r["keys"] == expected for r in reports)
    assert len({r["digest"] for r in reports}) == 1
    assert len({str(r["known"]) for r in reports}) == 1
    stored = stored_heads(pg_url, comap)
    assert {sid: [log.signed_count, log.head()[1].hex()] for sid, log in stored.items()} == reports[0]["known"]
    for c in everyone:
        c.quit()


def test_sigkilled_nodes_lose_no_acknowledged_write(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    seed = int(os.environ.get("KINTSUGI_CLUSTER_SEED", random.randrange(2**32)))
    print(f"seed {seed} (KINTSUGI_CLUSTER_SEED={seed} replays the kill schedule)")
    rng = random.Random(seed)
    alice, bob, carol = accounts("alice"), accounts("bob"), accounts("carol")
    cluster = Cluster(processes, pg_url, accounts("node"))
    cluster.start_all()
    a, _group, comap = shared_map(processes, cluster, alice, [bob, carol])
    others = [
        processes.client(p.name, p, url=cluster.urls_from(i), steps=("connect", f"load {comap}"))
        for i, p in ((1, bob), (2, carol))
    ]
    for client in others:
        client.reply(1)
    everyone = [a, *others]
    acked: dict[str, tuple[int, str]] = {}  # session → (count, head) some client had acknowledged
    started = time.monotonic()

    def check_stored(what: str) -> None:
        stored = stored_heads(pg_url, comap)
        for sid, (count, head) in acked.items():
            log = stored.get(SessionID(sid))
            assert log is not None and log.signed_count >= count, f"{what}: {sid} lost acknowledged writes"
            assert log.hash_at(count).hex() == head, f"{what}: {sid} holds another chain"

    for round_ in range(KILL_ROUNDS):
        victim = rng.randrange(NODES)
        for c in everyone:
            c.send("write", comap, f"{c.label}-r{round_}-", str(PER_ROUND))  # in flight at the kill
        time.sleep(rng.uniform(0, KILL_DELAY_MAX))  # a random moment to crash at, from the seed
        cluster.kill(victim)
        check_stored(f"round {round_} (seed {seed}), node {victim} killed")
        replacement = cluster.start(victim)
        for c in everyone:  # the clients of the killed node moved to another one by themselves
            c.do("ack", comap)
            report = c.report(comap)
            for sid, n in report["acked"].items():
                count, head = report["known"][sid]
                if count == n and acked.get(sid, (0, ""))[0] <= n:
                    acked[sid] = (n, head)
        replacement.wait_ready()
    check_stored("the end")
    total = KILL_ROUNDS * PER_ROUND * len(everyone)
    reports = []
    for c in everyone:
        c.do("wait-keys", comap, str(total))
        reports.append(c.report(comap))
    print(f"{KILL_ROUNDS} kills in {time.monotonic() - started:.1f} s (seed {seed})")
    assert all(len(r["keys"]) == total for r in reports)
    assert len({r["digest"] for r in reports}) == 1
    for c in everyone:
        c.quit()


def test_a_fork_made_through_two_nodes_is_corrected(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    """Bob's first process writes through node 1 and is acknowledged; a second process
    reusing its session (the lease bypassed on purpose) writes other edits through node 2.
    Node 2 judges them against the database, which holds the first history: a fork. It
    corrects the second process, which keeps its edits in the conflict session ``<sid>!``
    and moves to a new session; everyone ends with every edit, each exactly once."""
    alice, bob = accounts("alice"), accounts("bob")
    cluster = Cluster(processes, pg_url, accounts("node"))
    cluster.start_all()
    a, _group, comap = shared_map(processes, cluster, alice, [bob])
    first = processes.client("bob-1", bob, url=cluster.node_url(1), steps=("connect", f"load {comap}"))
    session = first.reply(0)["session"]
    first.reply(1)
    first.do("write", comap, "base-", "3")
    first.do("ack", comap)
    second = processes.client(
        "bob-2", bob, url=cluster.node_url(2), session=session, steps=("connect", f"load {comap}")
    )
    second.reply(1)
    assert second.do("wait-keys", comap, "3")["keys"] == 3
    n = 5
    first.do("write", comap, "bob-1-", str(n))
    first.do("ack", comap)  # node 1 committed these: the database holds this history
    second.do("write", comap, "bob-2-", str(n))  # the same session, another continuation
    second.do("wait-event", "correction_applied")
    second.do("ack-account", comap)
    everything = sorted([f"base-{i}" for i in range(3)] + [f"{p}-{i}" for p in ("bob-1", "bob-2") for i in range(n)])
    reports = {}
    for p in (a, first, second):
        p.do("wait-keys", comap, str(len(everything)))
        reports[p.label] = p.report(comap)
    for name, report in reports.items():
        assert report["keys"] == everything, name
    assert len({r["digest"] for r in reports.values()}) == 1
    final = reports["alice"]["sessions"]
    assert set(final[session]["keys"]) == {f"base-{i}" for i in range(3)} | {f"bob-1-{i}" for i in range(n)}
    assert final[session + "!"]["keys"] == [f"bob-2-{i}" for i in range(n)]
    assert reports["bob-2"]["session"] not in (session, session + "!")
    stored = stored_heads(pg_url, comap)
    assert stored[SessionID(session)].head()[1].hex() == reports["bob-1"]["sessions"][session]["head"]
    assert [k for k in final if k.startswith(session)] == [session, session + "!"]
    for p in (a, first, second):
        p.quit()
