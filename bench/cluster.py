"""The ``cluster`` workload: three ``kintsugi node serve`` processes on one PostgreSQL database
(a throwaway server, :mod:`bench.pgserver`), and beside it the same load on one SQLite node.

The load, the same for both:

- :data:`WRITERS` writers, writer ``i`` on node ``i % 3`` (so 10 per node; on SQLite all on
  the one node), spread over :data:`WRITER_PROCESSES` client processes of 10 asyncio clients
  each (bench/cluster_client.py): the clients are in-memory LocalNodes, so no client disk is
  timed, and three processes keep the clients' own signing and verifying from being the
  bottleneck on two cores.
- One CoMap per writer, all in one group that the setup (before the clock starts) makes with
  every writer as ``writer``: a writer never waits on another writer's session, and the
  observers can tell by the CoMap which node a write went through.
- Each writer makes ``n // 30`` transactions in a closed loop: it makes its next one when
  fewer than :data:`WINDOW` are unacknowledged (an acknowledgement is the node's ``known``,
  sent after its commit). So each transaction is its own signed batch and frame, as an app
  that writes as its user types would send them.
- :data:`OBSERVERS` observer clients, one on each node (on SQLite, all three on the one node),
  each in a process of its own, each loading every CoMap written through another node than
  its own. Each write holds the writer's wall clock in nanoseconds; the delay until a write is
  seen is the observer's clock when it has verified and applied it, minus that stamp.

Timed: from the first write until the last acknowledgement (``seconds``; ``tx_per_s`` =
transactions / seconds). Reported beside it: ``seen_p50_ms``, ``seen_p99_ms``, ``node_rss_mb``
(the largest node's peak), ``node_cpu_s`` and ``client_cpu_s`` (CPU seconds of all node and
client processes during the whole run, setup included), and the same with ``sqlite_`` first
for the one SQLite node. The PostgreSQL server runs with ``fsync=off`` (see bench/pgserver.py)
while the SQLite node commits with ``synchronous=FULL``: the cluster's figures are those of the
nodes and the database's CPU, not of a disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bench.cluster_client import observer_key, wait_for, writer_key
from bench.pgserver import PostgresServer
from bench.workloads import _child_env, _peak_rss_mb
from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.model.known_state import KnownState
from engine.net.client import SyncClient
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode

#: Nodes of the cluster.
NODES = 3
#: Writing clients (10 per node).
WRITERS = 30
#: Client processes the writers are spread over (writers 0–9, 10–19, 20–29).
WRITER_PROCESSES = 3
#: Observers, one per node, each in a process of its own (one process verifying and applying
#: every write twice over fell behind on two shared cores, and its backlog was measured as
#: the cluster's delay).
OBSERVERS = 3
#: Transactions a writer may have unacknowledged at a time.
WINDOW = 1
#: Seconds any one wait of the workload may take (a node starting, a setup, a whole run).
WAIT = 300.0
#: When set to a folder, each node runs under cProfile and leaves ``<run>-node<i>.prof`` there.
PROFILE_ENV = "KINTSUGI_BENCH_PROFILE"
#: Who makes the group and the CoMaps.
SEED_OWNER = bytes(range(5, 37))
SEED_NODE = bytes(range(7, 39))


def run_cluster(n: int, tmp: Path) -> tuple[float, dict[str, Any]]:
    """Both runs for ``n`` transactions (rounded down to a multiple of :data:`WRITERS`): the
    cluster's seconds, and every figure by name."""
    per_client = max(1, n // WRITERS)
    key_file = tmp / "node.key"
    AccountKey.from_seed(SEED_NODE).save(key_file)
    figures: dict[str, Any] = {"transactions": per_client * WRITERS, "writers": WRITERS, "window": WINDOW}
    with PostgresServer() as server:
        cluster = _run(server.url(), NODES, per_client, tmp / "cluster", key_file)
    sqlite = _run(str(tmp / "sqlite-node"), 1, per_client, tmp / "sqlite", key_file)
    figures.update(cluster)
    figures.update({f"sqlite_{name}": value for name, value in sqlite.items()})
    return cluster["seconds"], figures


def _run(store: str, nodes: int, per_client: int, tmp: Path, key_file: Path) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    with _nodes(store, nodes, tmp, key_file) as procs:
        urls = [url for url, _proc in procs]
        urls = [urls[i % nodes] for i in range(NODES)]
        group, comaps = asyncio.run(_setup(urls[0]))
        base = {"urls": urls, "group": group, "comaps": comaps, "per_client": per_client, "timeout": WAIT}
        per_process = WRITERS // WRITER_PROCESSES
        writers = [
            _client(
                tmp,
                f"writers{p}",
                {
                    **base,
                    "role": "writers",
                    "window": WINDOW,
                    "clients": list(range(p * per_process, (p + 1) * per_process)),
                },
            )
            for p in range(WRITER_PROCESSES)
        ]
        observers = [
            _client(tmp, f"observer{o}", {**base, "role": "observers", "clients": [o]}) for o in range(OBSERVERS)
        ]
        children = [*writers, *observers]
        try:
            for child in children:
                _expect(child, "ready")
            for child in writers:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [_result(child) for child in writers]
            seen_by = [_result(child) for child in observers]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                child.wait()
        node_rss = max(_peak_rss_mb(proc.pid) for _url, proc in procs)
        node_cpu = sum(_cpu_seconds(proc.pid) for _url, proc in procs)
    acked = sum(r["acked"] for r in results)
    if acked != per_client * WRITERS:
        raise RuntimeError(f"{acked} of {per_client * WRITERS} transactions acknowledged")
    delays = sorted(d for seen in seen_by for d in seen["delays_ms"])
    expected = sum(seen["expected"] for seen in seen_by)
    if len(delays) < expected:
        raise RuntimeError(f"the observers saw {len(delays)} of {expected} writes")
    seconds = (max(r["last_ack_ns"] for r in results) - min(r["first_write_ns"] for r in results)) / 1e9
    return {
        "seconds": round(seconds, 4),
        "tx_per_s": round(acked / seconds),
        "seen_p50_ms": round(_percentile(delays, 0.50), 2),
        "seen_p99_ms": round(_percentile(delays, 0.99), 2),
        "seen_max_ms": round(delays[-1], 2),
        "node_rss_mb": round(node_rss, 1),
        "node_cpu_s": round(node_cpu, 2),
        "client_cpu_s": round(sum(r["cpu_s"] for r in [*results, *seen_by]), 2),
    }


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an ordered, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@contextmanager
def _nodes(store: str, count: int, tmp: Path, key_file: Path) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:
    """``count`` node processes on ``store``, each with its URL; terminated at the end."""
    procs: list[tuple[Path, subprocess.Popen[bytes]]] = []
    try:
        for i in range(count):
            ready = tmp / f"node{i}.ready"
            serve = ["node", "serve", "--store", store, "--key", str(key_file), "--ready-file", str(ready)]
            profile = os.environ.get(PROFILE_ENV)
            python = [sys.executable]
            if profile:
                python += ["-m", "cProfile", "-o", str(Path(profile) / f"{tmp.name}-node{i}.prof")]
            proc = subprocess.Popen(
                [*python, "-m", "engine.cli", *serve, "--host", "127.0.0.1", "--port", "0"],
                env=_child_env(),
                stderr=(tmp / f"node{i}.log").open("wb"),
            )
            procs.append((ready, proc))
        deadline = time.monotonic() + WAIT
        for ready, proc in procs:
            while not ready.exists() or not ready.read_text().strip():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"a node did not start (see {tmp})")
                time.sleep(0.01)
        yield [(ready.read_text().strip(), proc) for ready, proc in procs]
    finally:
        for _ready, proc in procs:
            proc.terminate()
        for _ready, proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _setup(url: str) -> tuple[CoValueID, list[CoValueID]]:
    """Through ``url``: the group (every writer a writer, every observer a reader) and one
    CoMap per writer, acknowledged by the node."""
    owner = LocalNode(AccountKey.from_seed(SEED_OWNER))
    shell = SyncShell(owner)
    acked: dict[CoValueID, KnownState] = {}
    shell.manager.on_known = lambda _peer, known: acked.__setitem__(known.id, known)
    client = SyncClient(shell, url)
    client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), WAIT)
        group = owner.create_group()
        for i in range(WRITERS):
            owner.set_role(group.id, writer_key(i).account_id, "writer")
        for o in range(OBSERVERS):
            owner.set_role(group.id, observer_key(o).account_id, "reader")
        comaps = [owner.create_map(group.id).id for _ in range(WRITERS)]
        owner.flush()
        every = [group.id, *comaps]

        def all_acked() -> bool:
            return all(
                c in acked and acked[c].header and acked[c].sessions == owner.get(c).known_state().sessions
                for c in every
            )

        await wait_for(all_acked, "the node's acknowledgement of the setup", WAIT)
        return group.id, comaps
    finally:
        await client.stop()
        shell.close()
        owner.close()


def _client(tmp: Path, name: str, config: dict[str, Any]) -> subprocess.Popen[str]:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cluster_client", str(path)],
        env=_child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(tmp / f"{name}.log").open("w"),
        text=True,
    )


def _line(child: subprocess.Popen[str]) -> dict[str, Any]:
    stdout: IO[str] | None = child.stdout
    assert stdout is not None
    line = stdout.readline()
    if not line:
        raise RuntimeError(f"a client process exited ({child.wait()}) before it answered; see its log")
    result: dict[str, Any] = json.loads(line)
    return result


def _expect(child: subprocess.Popen[str], key: str) -> None:
    line = _line(child)
    if key not in line:
        raise RuntimeError(f"expected {key!r} from a client process, got {line}")


def _result(child: subprocess.Popen[str]) -> dict[str, Any]:
    return _line(child)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
