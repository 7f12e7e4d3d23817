"""Engine workloads, measured the way Jazz's cojson 0.20 measures its own.

Each workload writes or moves ``n`` ``set`` transactions on one CoMap in one session,
cycling over 1,000 keys (``k0`` … ``k999``) with integer values; the CoMap is owned by a
group, so every write is checked against the group's roles.

- ``write``: make and sign the transactions in memory (``LocalNode`` without a store).
- ``import_verify``: apply them to a fresh replica: every chain hash recomputed, every
  checkpoint signature verified, the session stored in memory.
- ``sqlite_write``: make them through a store-backed ``LocalNode`` until durably committed
  (WAL, ``synchronous=FULL``).
- ``sqlite_reload``: open that store in a new process and load the CoMap, verifying every
  chain and signature.
- ``sync_ws``: a node runs as its own process (``kintsugi node serve``); the writer client
  commits n transactions, and the time runs until a second client has received, verified and
  applied all of them over loopback WebSockets. ``node_rss_mb`` is the node's peak memory.

Each (workload, n) runs in its own child process, so ``rss_mb`` is that workload's peak
resident memory (including the interpreter, about 20 MB) and runs never share caches.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.node.facade import LocalNode

DEFAULT_SIZES = (10_000, 100_000)
KEYS = [f"k{i}" for i in range(1000)]
SEED_ALICE = bytes(range(32))


def _fill(node: LocalNode, n: int) -> CoValueID:
    group = node.create_group()
    comap = node.create_map(group.id)
    node.flush()
    return comap.id


def _write_all(node: LocalNode, comap: CoValueID, n: int) -> None:
    keys = KEYS
    with node.batch():
        for i in range(n):
            node.set(comap, keys[i % 1000], i)


def bench_write(n: int, _tmp: Path) -> float:
    node = LocalNode(AccountKey.from_seed(SEED_ALICE))
    comap = _fill(node, n)
    started = time.perf_counter()
    _write_all(node, comap, n)
    return time.perf_counter() - started


def bench_import_verify(n: int, _tmp: Path) -> float:
    writer = LocalNode(AccountKey.from_seed(SEED_ALICE))
    comap = _fill(writer, n)
    _write_all(writer, comap, n)
    source = writer.get(comap)
    group = writer.get(source.owner_group().id)  # type: ignore[union-attr]
    chunks = {sid: log.chunk() for sid, log in source.sessions.items()}
    replica_group = CoValueCore(group.header)
    replica_group.apply_content({sid: log.chunk() for sid, log in group.sessions.items()})
    started = time.perf_counter()
    replica = CoValueCore(source.header, comap)
    replica.resolve = {replica_group.id: replica_group}.get
    report = replica.apply_content(chunks)
    elapsed = time.perf_counter() - started
    assert [o.status for o in report.outcomes] == ["applied"] * len(chunks), report
    assert replica.transaction_count() == n
    return elapsed


def bench_sqlite_write(n: int, tmp: Path) -> float:
    node = LocalNode.open(tmp / "store", AccountKey.from_seed(SEED_ALICE))
    comap = _fill(node, n)
    started = time.perf_counter()
    _write_all(node, comap, n)
    elapsed = time.perf_counter() - started
    (tmp / "comap").write_text(comap)
    node.close()
    return elapsed


def bench_sqlite_reload(n: int, tmp: Path) -> float:
    if not (tmp / "comap").exists():
        _run_child("sqlite_write", n, tmp)
    comap = CoValueID((tmp / "comap").read_text())
    started = time.perf_counter()
    node = LocalNode.open(tmp / "store", AccountKey.from_seed(SEED_ALICE))
    core = node.get(comap)
    elapsed = time.perf_counter() - started
    assert core.transaction_count() == n and not core.corrupt
    node.close()
    return elapsed


def bench_sync_ws(n: int, tmp: Path) -> float:
    """Time from the writer's commit of n transactions until a second client has verified and
    applied all of them, through a node process over loopback WebSockets."""
    import asyncio

    return asyncio.run(_sync_ws(n, tmp))


async def _sync_ws(n: int, tmp: Path) -> float:
    import asyncio

    from engine.net.client import SyncClient
    from engine.net.shell import SyncShell

    ready = tmp / "node.ready"
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "node", "serve", "--store", str(tmp / "node"), "--ready-file", str(ready)],
        env=_child_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError("node did not start")
            await asyncio.sleep(0.01)
        url = ready.read_text().strip()
        writer = LocalNode(AccountKey.from_seed(SEED_ALICE))
        reader = LocalNode(AccountKey.from_seed(bytes(range(1, 33))))
        clients = [SyncClient(SyncShell(node), url) for node in (writer, reader)]
        for client in clients:
            client.start()
            await client.connected.wait()
        group = writer.create_group()
        writer.set_role(group.id, reader.account_id, "reader")
        comap = writer.create_map(group.id)
        writer.flush()
        clients[1].shell.manager.load(comap.id)
        clients[1].shell.dispatch()
        while reader.get_or_none(comap.id) is None:
            await asyncio.sleep(0.001)
        keys = KEYS
        with writer.batch():
            for i in range(n):
                writer.set(comap.id, keys[i % 1000], i)
        started = time.perf_counter()
        clients[0].shell.dispatch()
        target = writer.get(comap.id).known_state().sessions
        received = reader.get(comap.id)
        while received.known_state().sessions != target:
            await asyncio.sleep(0.0005)
        elapsed = time.perf_counter() - started
        assert received.transaction_count() == writer.get(comap.id).transaction_count()
        for client in clients:
            await client.stop()
        _NODE_RSS[0] = _peak_rss_mb(node_proc.pid)
        return elapsed
    finally:
        node_proc.terminate()
        node_proc.wait(timeout=30)


_NODE_RSS = [0.0]


def _peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a live process (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _child_env() -> dict[str, str]:
    repo = Path(__file__).resolve().parent.parent
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))


WORKLOADS: dict[str, Callable[[int, Path], float]] = {
    "write": bench_write,
    "import_verify": bench_import_verify,
    "sqlite_write": bench_sqlite_write,
    "sqlite_reload": bench_sqlite_reload,
    "sync_ws": bench_sync_ws,
}


def _run_child(name: str, n: int, tmp: Path) -> dict[str, Any]:
    env = _child_env()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.workloads", name, str(n), str(tmp)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"workload {name} n={n} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_workloads(
    names: list[str], sizes: list[int] | None = None, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run each workload for each size in a fresh child process; the JSON-ready results."""
    results = []
    for n in sizes or DEFAULT_SIZES:
        with tempfile.TemporaryDirectory(prefix="kintsugi-bench-") as tmp:
            for name in names:
                if progress is not None:
                    progress(f"{name} n={n}")
                results.append(_run_child(name, n, Path(tmp)))
    return {
        "workloads": results,
        "python": sys.version.split()[0],
        "machine": {"cpus": os.cpu_count()},
    }


def _child(name: str, n: int, tmp: Path) -> None:
    seconds = WORKLOADS[name](n, tmp)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "name": name,
        "n": n,
        "seconds": round(seconds, 4),
        "tx_per_s": round(n / seconds),
        "rss_mb": round(rss_mb, 1),
    }
    if name == "sync_ws":
        result["node_rss_mb"] = round(_NODE_RSS[0], 1)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
