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
- ``bundle`` (opt-in: run it with ``--workload bundle``): export a diagnostic bundle, without
  content, of the ``sqlite_write`` store (built first in its own process, not timed): every
  chain re-verified a window at a time. ``bundle_bytes`` is the bundle's size; the goal for
  n = 1,000,000 is 5 s and a peak RSS of 150 MB.
- ``compare``: two stores with one ``n``-transaction session each, forked at ``n // 2``;
  the time of ``kintsugi compare --json`` on them in its own process, which verifies both
  sides (``cli_rss_mb`` its peak memory; ``no_verify_seconds`` / ``no_verify_rss_mb`` with
  ``--no-verify``; ``app_first_rows_seconds`` the inspector's compare view, offscreen, from
  being asked until both panes show their first rows).
- ``recover``: a node process holds
  one CoMap of ``n`` transactions; a client store holds a stale, forked copy (the first
  ``n // 2`` of them and :data:`RECOVER_FORKED_TAIL` of its own). Timed: REPLACE of that
  CoMap from the node over loopback, as ``kintsugi recover apply`` does it — open the store
  read-only, fetch every page, verify, plan, reopen for writing, apply in one transaction —
  in a process of its own (``client_rss_mb`` its peak; ``node_rss_mb`` the node's).
  ``sync_ws_seconds`` is the ``sync_ws`` time of the same ``n`` in the same run and
  ``ratio_to_sync_ws`` the quotient (goal: at most 2). A default workload: for both default
  sizes it adds about 15 s to a run (it runs ``sync_ws`` again), below the ~30 s that makes
  a workload opt-in.
- ``cluster`` (opt-in: it starts a PostgreSQL server, three nodes on it and a SQLite node):
  30 writers on three nodes sharing one database, each transaction acknowledged before the
  writer's next; the time from the first write to the last acknowledgement, the delay until
  a write is seen on a client of another node (p50, p99), and the same load on one SQLite
  node beside it (``sqlite_*``). See bench/cluster.py.

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
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.compare_figures import app_first_rows, probe_ms
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
#: Extra figures a workload reports beside the common ones (name → value).
_EXTRA: dict[str, Any] = {}


def bench_bundle(n: int, tmp: Path) -> float:
    """Export a redacted bundle (no content) of the ``sqlite_write`` store of n transactions."""
    from engine.diagnostics.bundle import BundleInputs, export_bundle
    from engine.diagnostics.redact import Redaction, RedactionPolicy, Tokenizer
    from engine.storage import open_store

    if not (tmp / "comap").exists():
        _run_child("sqlite_write", n, tmp)
    started = time.perf_counter()
    store = open_store(tmp / "store", readonly=True)
    try:
        redaction = Redaction(RedactionPolicy(), Tokenizer(os.urandom(32)))
        result = export_bundle(BundleInputs("store", store.location, store=store), tmp / "bundle.zip", redaction)
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    assert result is not None and result.manifest["scope"]["transactions"] >= n
    _EXTRA["bundle_bytes"] = result.bytes
    return elapsed


def bench_compare(n: int, tmp: Path) -> float:
    """Two stores holding one ``n``-transaction session each, forked at ``n // 2``: the time
    of ``kintsugi compare A B --covalue C --session S --json`` in its own process (verifying
    both sides, as it does by default). Also measured: the same without verification, the
    peak memory of each run, and the inspector's compare view showing its first rows."""
    from engine.crypto import chain_extend, signed_message
    from engine.ids import SessionID
    from engine.model.header import Header, UnsafeAllowAll
    from engine.model.session_log import MAX_BATCH_TRANSACTIONS, SessionLog
    from engine.model.transaction import encode_transaction
    from engine.storage import open_store
    from engine.storage.interface import SessionWrite

    key = AccountKey.from_seed(SEED_ALICE)
    core = CoValueCore(Header("comap", UnsafeAllowAll(), {"name": "compare"}, b"compare", 1_700_000_000_000))
    session = SessionID(f"{key.account_id}_session_z2xXM3eePfED")
    fork = n // 2
    shared = [encode_transaction(1_700_000_000_000 + i, [["set", KEYS[i % 1000], i]]) for i in range(fork)]
    for side in ("a", "b"):
        log = SessionLog(core.id, session)
        log.txs.extend(shared)
        log.txs.extend(
            encode_transaction(1_700_000_000_000 + i, [["set", KEYS[i % 1000], f"{side}{i}"]]) for i in range(fork, n)
        )
        log.hashes.extend(chain_extend(log.base, log.txs))
        for count in [*range(MAX_BATCH_TRANSACTIONS, n, MAX_BATCH_TRANSACTIONS), n]:
            log.sigs[count] = key.sign(signed_message(core.id, session, count, log.hashes[count - 1]))
        store = open_store(tmp / side, synchronous="OFF")
        store.write([core.header], [SessionWrite(log, 0, n)])
        store.close()
        del log
    args = [str(tmp / "a"), str(tmp / "b"), "--covalue", core.id, "--session", session, "--json"]
    seconds, rss, report = _timed_cli(["compare", *args])
    assert report["fork"]["index"] == fork and report["different"]["count"] == n - fork, report
    _COMPARE["cli_rss_mb"] = rss
    _COMPARE["no_verify_seconds"], _COMPARE["no_verify_rss_mb"], _ = _timed_cli(["compare", *args, "--no-verify"])
    _COMPARE["app_first_rows_seconds"] = app_first_rows(tmp, core.id, session, _child_env())
    _COMPARE["probe_ms"] = probe_ms(tmp / "a")
    return seconds


_COMPARE: dict[str, float] = {}


def bench_cluster(n: int, tmp: Path) -> float:
    """Three nodes on one PostgreSQL and 30 writers, beside one SQLite node with the same
    load: the cluster's seconds from the first write to the last acknowledgement; every other
    figure in the result (see bench/cluster.py)."""
    from bench.cluster import run_cluster

    seconds, figures = run_cluster(n, tmp)
    _EXTRA.update(figures)
    return seconds


#: Transactions of the client's own divergent tail in the ``recover`` workload (archived).
RECOVER_FORKED_TAIL = 1_000
SEED_BOB = bytes(range(2, 34))


def _copy_in(src: LocalNode, dst: LocalNode, covalues: list[CoValueID]) -> None:
    for cid in covalues:
        core = src.get(cid)
        dst.add_header(core.header)
        dst.apply_content(cid, {sid: log.chunk() for sid, log in core.sessions.items() if log.signed_count})


def bench_recover(n: int, tmp: Path) -> float:
    """REPLACE of one CoMap of ``n`` transactions from a node process over loopback (plan,
    fetch, verify, apply) into a store holding a stale forked copy; see the module docstring.
    Also runs ``sync_ws`` for the same ``n`` to report the two side by side."""
    (tmp / "sync").mkdir(exist_ok=True)
    _EXTRA["sync_ws_seconds"] = round(bench_sync_ws(n, tmp / "sync"), 4)
    _EXTRA["sync_ws_node_rss_mb"] = round(_NODE_RSS[0], 1)
    alice, bob = AccountKey.from_seed(SEED_ALICE), AccountKey.from_seed(SEED_BOB)
    writer = LocalNode.open(tmp / "recover-node", alice)
    group = writer.create_group()
    writer.set_role(group.id, bob.account_id, "reader")
    comap = writer.create_map(group.id).id
    half = n // 2
    with writer.batch():
        for i in range(half):
            writer.set(comap, KEYS[i % 1000], i)
    writer.flush()
    twin = LocalNode(alice, None, session=writer.session)
    _copy_in(writer, twin, [group.id, comap])
    with twin.batch():
        for i in range(RECOVER_FORKED_TAIL):
            twin.set(comap, KEYS[i % 1000], -i)
    twin.flush()
    with writer.batch():
        for i in range(half, n):
            writer.set(comap, KEYS[i % 1000], i)
    writer.close()
    # the client's stale copy: the twin's (Alice's session forked at n // 2; Bob owns none of it)
    client = LocalNode.open(tmp / "recover-client", bob)
    _copy_in(twin, client, [group.id, comap])
    client.close()
    bob.save(tmp / "bob.key")
    del twin, client

    ready = tmp / "recover-node.ready"
    serve = ["node", "serve", "--store", str(tmp / "recover-node"), "--ready-file", str(ready)]
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *serve],
        env=_child_env(),
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError("node did not start")
            time.sleep(0.01)
        url = ready.read_text().strip()
        args = [str(tmp / "recover-client"), url, str(tmp / "bob.key"), comap]
        _wall, rss, report = _timed_python(_RECOVER_SCRIPT, args)
        _EXTRA["node_rss_mb"] = round(_peak_rss_mb(node_proc.pid), 1)
    finally:
        node_proc.terminate()
        node_proc.wait(timeout=30)
    summary = report["summary"]
    assert summary["replaced"] == 1 and summary["archived"] == RECOVER_FORKED_TAIL, report
    seconds = float(report["seconds"])
    _EXTRA.update(
        {
            "client_rss_mb": round(rss, 1),
            "fetch_verify_plan_seconds": round(report["fetch_verify_plan_seconds"], 4),
            "apply_seconds": round(report["apply_seconds"], 4),
            "pages": report["pages"],
            "ratio_to_sync_ws": round(seconds / _EXTRA["sync_ws_seconds"], 2),
        }
    )
    return seconds


#: The timed part of ``recover`` (``STORE URL KEYFILE COMAP``), from after its imports: prints
#: a JSON line with the times of fetch + verify + plan and of the apply, the pages and the
#: plan's summary.
_RECOVER_SCRIPT = """
import asyncio, json, sys, time
from engine.crypto import AccountKey
from engine.ids import new_session_id
from engine.net.recover import apply, recover_from
from engine.node.facade import LocalNode
from engine.protocol.messages.recovery import RecoveryScope
from engine.storage import open_store

store, url, key_file, comap = sys.argv[1:]
key = AccountKey.load(key_file)
pages = []
started = time.perf_counter()
reader = LocalNode(key, open_store(store, readonly=True), session=new_session_id(key.account_id))
scope = RecoveryScope(covalues=(comap,))
planned = asyncio.run(recover_from(reader, url, key, scope, progress=lambda p, _t: pages.append(p)))
reader.close()
fetched = time.perf_counter()
node = LocalNode.open(store, key)
apply(node, planned, key)
node.close()
done = time.perf_counter()
print(json.dumps({
    "seconds": done - started,
    "fetch_verify_plan_seconds": fetched - started,
    "apply_seconds": done - fetched,
    "pages": len(pages),
    "summary": planned.plan.summary(),
}))
"""


def _timed_python(script: str, args: list[str]) -> tuple[float, float, dict[str, Any]]:
    """Run ``python -c script args`` through the :data:`_MEASURE` wrapper: wall seconds, peak
    RSS (MB) and the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-c", script, *args],
        env=_child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"timed script failed: {proc.stderr}")
    line = next(x for x in proc.stderr.splitlines() if x.startswith("KINTSUGI-MEASURE "))
    rss_kb, seconds = line.split()[1:]
    return float(seconds), int(rss_kb) / 1024, json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_cli(args: list[str]) -> tuple[float, float, dict[str, Any]]:
    """Run ``kintsugi ARGS`` in a child: wall seconds, the child's peak RSS (MB), its JSON.

    Measured by a small wrapper process that starts the command: a child forked straight
    from this (large) process would count this process's memory in its own peak."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, sys.executable, "-m", "engine.cli", *args],
        env=_child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"kintsugi {' '.join(args)} failed: {proc.stderr}")
    line = next(x for x in proc.stderr.splitlines() if x.startswith("KINTSUGI-MEASURE "))
    rss_kb, seconds = line.split()[1:]
    return float(seconds), int(rss_kb) / 1024, json.loads(proc.stdout)


#: The wrapper of :func:`_timed_cli`: runs its arguments, then reports the child's peak RSS
#: (KB) and its wall time on stderr, and exits with the child's code.
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "started = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], check=False).returncode\n"
    "elapsed = time.perf_counter() - started\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "sys.stderr.write(f'KINTSUGI-MEASURE {peak} {elapsed}\\n')\n"
    "sys.exit(code)\n"
)


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


Workload = Callable[[int, Path], float]


class Workloads(Mapping[str, Workload]):
    """Every workload by name. Iterating lists only the default ones (what ``kintsugi bench``
    runs when no ``--workload`` is named); an opt-in workload (``bundle``: it first builds a
    big store) is found by name, so ``--workload bundle`` runs it."""

    def __init__(self, default: dict[str, Workload], opt_in: dict[str, Workload]) -> None:
        self._default = default
        self._all = {**default, **opt_in}
        self.opt_in = tuple(opt_in)

    def __getitem__(self, name: str) -> Workload:
        return self._all[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._default)

    def __len__(self) -> int:
        return len(self._default)


WORKLOADS = Workloads(
    {
        "write": bench_write,
        "import_verify": bench_import_verify,
        "sqlite_write": bench_sqlite_write,
        "sqlite_reload": bench_sqlite_reload,
        "sync_ws": bench_sync_ws,
        "recover": bench_recover,
    },
    # compare is opt-in too: it builds two stores of n transactions (meant for n = 1,000,000);
    # cluster starts a PostgreSQL server and eight processes (20 – 45 s for n = 3,000)
    {"bundle": bench_bundle, "compare": bench_compare, "cluster": bench_cluster},
)


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
    result.update(_EXTRA)
    if name == "compare":
        result.update({figure: round(value, 4) for figure, value in _COMPARE.items()})
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
