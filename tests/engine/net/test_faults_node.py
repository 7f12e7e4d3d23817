"""A serving node under load whose disk fails (issue 15, point 2): the node runs in process
on a real SQLite store with the seeded fault layer of :mod:`tests.engine.storage.faults`
under it (full disk, I/O errors, busy, failed fsyncs, connections lost mid-batch), and real
clients write to it over WebSockets on 127.0.0.1 while a reader keeps loading.

What must hold, for every seed:

- every transaction the node acknowledged (a ``known`` covering it) survives: its store,
  reopened without faults, holds each at its index, byte for byte, and every chain verifies;
- while faults last, writers get typed errors: ``error{storage_unavailable, id}`` (a full
  disk, and any other failure of the store while it refuses writes, docs/protocol.md), and
  every commit the node's writer thread saw fail failed with a typed storage-environment
  error, never a driver's exception or ``storage_bug``;
- the node resumes by itself when faults stop: every write is then acknowledged, with no
  restart of the node or the writers;
- a reader is served all along: each ``load`` of the CoValue is answered with its content.

Each run prints ``seed N: W writes, A acked, F faults (…), L acked lost`` and its other
figures. Seeds 0 … n-1 with ``KINTSUGI_FAULT_SEEDS=n`` (default 3); replay one with
``KINTSUGI_FAULT_SEED=<seed>``; ``KINTSUGI_FAULT_NODE_WRITES`` sets the writes per writer
while faults last (default 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.ids import CoValueID, SessionID
from engine.kv.lease import DEFAULT_LEASE_TTL_MS, lease_key, parse_lease
from engine.model.known_state import KnownState
from engine.net.client import Backoff, SyncClient
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode, now_ms
from engine.protocol.messages import Content, Error, Load
from engine.storage.sqlite.store import SQLiteStore
from tests.engine.factories import account
from tests.engine.net.conftest import RawPeer, run, until
from tests.engine.storage.faults import FULL, IOERR, KINDS, Acked, FaultPlan, RecordingStore, check_acked, seeds
from tests.util import timeout

WRITES = int(os.environ.get("KINTSUGI_FAULT_NODE_WRITES", "60"))
#: clients writing at once
WRITERS = 3
#: writes per writer after the faults stop
AFTER = 5


@dataclass
class Writer:
    """A client replica writing to the shared CoMap through the node; ``acked`` is how far
    the node's ``known`` messages have acknowledged its session, checked against its chain."""

    name: str
    node: LocalNode
    shell: SyncShell
    client: SyncClient
    acked: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: a ``known`` whose head is not this writer's chain at that count (each is a bug)
    bad_acks: list[str] = field(default_factory=list)
    writes: int = 0

    def watch(self, doc: CoValueID) -> None:
        manager = self.shell.manager

        def on_known(_peer: str, known: KnownState) -> None:
            if known.id != doc or self.node.session not in known.sessions:
                return
            n, head = known.sessions[self.node.session]
            log = self.node.get(doc).sessions[self.node.session]
            if n > log.count or log.hash_at(n) != head:
                self.bad_acks.append(f"{self.name}: known {n} with a head not on the writer's chain")
                return
            self.acked = max(self.acked, n)

        def on_error(_peer: str, error: Error) -> None:
            self.errors[error.code] += 1

        manager.on_known = on_known
        manager.on_error = on_error

    @property
    def session(self) -> SessionID:
        return self.node.session

    def written(self, doc: CoValueID) -> list[bytes]:
        return list(self.node.get(doc).sessions[self.session].txs)


@contextlib.asynccontextmanager
async def writer(url: str, n: int) -> AsyncIterator[Writer]:
    node = LocalNode(account(10 + n))
    shell = SyncShell(node)
    client = SyncClient(shell, url, backoff=Backoff(initial=0.05, cap=0.2))
    try:
        client.start()
        await asyncio.wait_for(client.connected.wait(), timeout(5))
        yield Writer(f"writer {n}", node, shell, client)
    finally:
        await client.stop()
        shell.close()
        node.close()


@dataclass
class Reads:
    """What the reader was served while faults lasted."""

    loads: int = 0
    served: int = 0
    failures: list[str] = field(default_factory=list)


async def keep_reading(url: str, doc: CoValueID, writers: list[Writer], stop: asyncio.Event, reads: Reads) -> None:
    """Until ``stop``, again and again: a new reader connection loads ``doc`` and must be
    answered with its content — the header and at least every transaction acknowledged to the
    writers before it asked — and no error. (The node's ``known`` closing the answer claims
    durability, so it may wait for a commit like every other acknowledgement.)"""
    while not stop.is_set():
        reads.loads += 1
        acked = {w.session: w.acked for w in writers}
        async with RawPeer(url) as reader:
            await reader.authenticate(account(9))
            await reader.send(Load(doc, KnownState(doc, False, {})))
            answer = await reader.recv_until(lambda m: isinstance(m, Content | Error))
        content = answer[-1]
        if not isinstance(content, Content) or content.header is None:
            reads.failures.append(f"load {reads.loads}: {answer[-1]}")
            continue
        served = {sid: chunk.end for sid, chunk in content.new.items() if chunk.after == 0}
        short = {sid: (n, served.get(sid, 0)) for sid, n in acked.items() if served.get(sid, 0) < n}
        if short:
            reads.failures.append(f"load {reads.loads}: acknowledged but not served (acked, served): {short}")
            continue
        reads.served += 1
        await asyncio.sleep(0.01)


async def write_for_a_while(w: Writer, doc: CoValueID, rng: random.Random, count: int, tag: str) -> None:
    for i in range(count):
        w.node.set(doc, f"{w.name}/{rng.randrange(8)}", [tag, i])
        w.writes += 1
        await asyncio.sleep(rng.random() * 0.02)


@dataclass
class NodeRun:
    """One run of :func:`serve_under_faults`: the plan's figures, the writers, what the node
    acknowledged to them, how many writes they made and what the reader was served."""

    seed: int
    plan: FaultPlan
    store: RecordingStore | None = None
    writers: list[Writer] = field(default_factory=list)
    acked: Acked = field(default_factory=dict)
    written: int = 0
    reads: Reads = field(default_factory=Reads)
    #: writes the node had acknowledged when the faults stopped
    acked_during: int = 0


def serve_under_faults(path: Path, seed: int, writes: int, *, drop_at_end: bool = False) -> NodeRun:
    """The scenario of the module docstring. ``drop_at_end``: the planted bug drops every
    commit after the faults stop (the writers' last writes are acknowledged but lost)."""
    rng = random.Random(seed)
    plan = FaultPlan(seed, rate=0.25)
    result = NodeRun(seed, plan)

    async def scenario() -> None:
        store = RecordingStore(SQLiteStore(path, wrap=plan.wrap))
        result.store = store
        node = LocalNode(account(1), store, background_commits=True)
        shell = SyncShell(node)
        server = NodeServer(shell)
        try:
            url = await server.start()
            async with contextlib.AsyncExitStack() as stack:
                writers = [await stack.enter_async_context(writer(url, n)) for n in range(WRITERS)]
                result.writers = writers
                doc = writers[0].node.create_map(None, meta={"shared": True}).id
                for w in writers[1:]:
                    w.shell.manager.load(doc)
                    w.shell.dispatch()
                await until(lambda: all(w.node.get_or_none(doc) is not None for w in writers), what="the map")
                for w in writers:
                    w.watch(doc)
                await node.durable()

                stop_reading = asyncio.Event()
                reading = asyncio.create_task(keep_reading(url, doc, writers, stop_reading, result.reads))
                plan.active = True
                await asyncio.gather(*(write_for_a_while(w, doc, rng, writes, "faults") for w in writers))
                plan.active = False
                result.acked_during = sum(w.acked for w in writers)
                plan.drop_commits = drop_at_end
                await asyncio.gather(*(write_for_a_while(w, doc, rng, AFTER, "after") for w in writers))
                stop_reading.set()
                await reading

                def all_acked() -> bool:
                    return all(w.acked == w.node.get(doc).sessions[w.session].signed_count for w in writers)

                try:
                    await until(all_acked, units=30, what="every write acknowledged after the faults stopped")
                except AssertionError as exc:
                    counts = {w.name: (w.acked, w.node.get(doc).sessions[w.session].signed_count) for w in writers}
                    raise AssertionError(f"seed {seed}: {exc}; (acknowledged, written) {counts}") from None
                for w in writers:
                    result.acked[(doc, w.session)] = w.written(doc)[: w.acked]
                    result.written += w.writes
        finally:
            plan.active = False
            await server.close()
            shell.close()
            await node.aclose()

    run(scenario, units=60)
    return result


def report(result: NodeRun, lost: int) -> str:
    errors: Counter[str] = Counter()
    for w in result.writers:
        errors.update(w.errors)
    store = result.store
    assert store is not None
    line = (
        f"seed {result.seed}: {result.written} writes, {sum(len(t) for t in result.acked.values())} acked "
        f"({result.acked_during} while faults lasted), "
        f"{result.plan.figures()}, failed commits {dict(store.codes())}, errors to writers {dict(errors)}, "
        f"reads {result.reads.served}/{result.reads.loads} served, {lost} acked lost"
    )
    print(line)
    return line


@pytest.mark.parametrize("seed", seeds(3))
def test_a_serving_node_keeps_every_acknowledged_write(seed: int, tmp_path: Path) -> None:
    result = serve_under_faults(tmp_path / "node", seed, WRITES)
    survival = check_acked(tmp_path / "node", result.acked)
    line = report(result, survival.lost)
    store = result.store
    assert store is not None
    assert survival.lost == 0 and not survival.corrupt, f"{line}\n{survival}"
    assert not store.untyped(), f"{line}\nuntyped errors: {store.untyped()}"
    assert not [b for w in result.writers for b in w.bad_acks], line
    # everything written was acknowledged once the faults stopped
    assert survival.acked == result.written, line
    # faults struck commits, writers were told, readers were served
    assert result.plan.total > 0 and store.codes(), line
    assert sum(w.errors["storage_unavailable"] for w in result.writers) > 0, line
    assert not result.reads.failures, f"{line}\n{result.reads.failures[:3]}"
    assert result.reads.served > 0, line


def test_planted_dropped_commits_are_caught_on_a_node(tmp_path: Path) -> None:
    """The node over a layer that silently drops its commits once the faults stop: the writers'
    last writes are acknowledged and the check finds them missing."""
    result = serve_under_faults(tmp_path / "node", 5, 10, drop_at_end=True)
    survival = check_acked(tmp_path / "node", result.acked)
    report(result, survival.lost)
    assert result.plan.dropped > 0
    assert survival.lost > 0, f"the check missed {result.plan.dropped} dropped commits: {survival}"


@contextlib.asynccontextmanager
async def faulty_node(
    path: Path, plan: FaultPlan, clock_ms: Callable[[], int] = now_ms
) -> AsyncIterator[tuple[LocalNode, str]]:
    """A node with background commits on a store under ``plan``, serving on 127.0.0.1."""
    node = LocalNode(account(1), SQLiteStore(path, wrap=plan.wrap), background_commits=True, clock_ms=clock_ms)
    shell = SyncShell(node)
    server = NodeServer(shell)
    try:
        yield node, await server.start()
    finally:
        plan.active = False
        await server.close()
        shell.close()
        await node.aclose()


async def shared_map(w: Writer) -> CoValueID:
    """A new CoMap the writer created and the node acknowledged."""
    doc = w.node.create_map(None)
    w.watch(doc.id)
    w.node.set(doc.id, "k", "before")
    await until(lambda: w.acked == 1, what="the first write acknowledged")
    return doc.id


@pytest.mark.parametrize("kind", KINDS)
def test_writers_are_told_while_a_fault_lasts(kind: str, tmp_path: Path) -> None:
    """Whatever fails — full disk, I/O error, busy, fsync, lost connection — a writer whose
    acknowledgement waits for the failing commit gets ``error{storage_unavailable, id}``; once
    the fault stops, the node commits by itself and acknowledges the write."""
    plan = FaultPlan(0, rate=1.0, weights={kind: 1})
    acked: Acked = {}

    async def scenario() -> None:
        async with faulty_node(tmp_path / "node", plan) as (_node, url), writer(url, 0) as w:
            doc = await shared_map(w)
            plan.active = True
            w.node.set(doc, "k", "during")
            await until(lambda: w.errors["storage_unavailable"] > 0, what="the writer told")
            assert w.acked == 1
            plan.active = False
            await until(lambda: w.acked == 2, units=10, what="the write acknowledged after the fault")
            assert not w.bad_acks
            acked[(doc, w.session)] = w.written(doc)

    run(scenario, units=30)
    assert plan.counts[kind] > 0
    survival = check_acked(tmp_path / "node", acked)
    assert survival.acked == 2 and survival.lost == 0, survival


def test_a_write_refused_meanwhile_is_taken_once_writes_resume(tmp_path: Path) -> None:
    """A writer whose only write was refused while the store refused writes (another writer's
    commit met the full disk), and which then writes nothing more, still has it acknowledged
    once writes resume: the node tells it what it holds and it sends the write again, with no
    reconnect."""
    plan = FaultPlan(0, rate=1.0, weights={FULL: 1})
    acked: Acked = {}

    async def scenario() -> None:
        async with faulty_node(tmp_path / "node", plan) as (node, url), writer(url, 0) as a, writer(url, 1) as b:
            doc = await shared_map(a)
            b.shell.manager.load(doc)
            b.shell.dispatch()
            await until(lambda: b.node.get_or_none(doc) is not None, what="the map at the second writer")
            b.watch(doc)
            plan.active = True
            a.node.set(doc, "k", "meets the full disk")
            await until(lambda: node.storage_unavailable is not None, what="the store refusing writes")
            b.node.set(doc, "k", "refused")
            await until(lambda: b.errors["storage_unavailable"] > 0, what="the write refused")
            assert b.session not in node.get(doc).sessions, "a refused write was applied"
            plan.active = False
            await until(lambda: b.acked == 1 and a.acked == 2, units=10, what="both writes acknowledged")
            assert a.client.connections == b.client.connections == 1, "a writer reconnected"
            acked.update({(doc, w.session): w.written(doc) for w in (a, b)})

    run(scenario, units=30)
    survival = check_acked(tmp_path / "node", acked)
    assert survival.acked == 3 and survival.lost == 0, survival


# -- the session lease, renewed on the store's own connection --------------------------------


def test_a_failed_lease_renewal_after_a_commit_holds_back_no_acknowledgement(tmp_path: Path) -> None:
    """The lease renewal that follows a background commit fails (faults on the store's own
    connection only): the commit stands, and its acknowledgement still leaves."""
    plan = FaultPlan(0, rate=1.0, weights={IOERR: 1}, only=frozenset({0}))
    clock = [now_ms()]

    async def scenario() -> None:
        async with faulty_node(tmp_path / "node", plan, lambda: clock[0]) as (_node, url), writer(url, 0) as w:
            doc = await shared_map(w)
            clock[0] += DEFAULT_LEASE_TTL_MS * 3 // 4  # the lease is due for renewal at the next commit
            plan.active = True
            w.node.set(doc, "k", "committed, then the renewal fails")
            await until(lambda: w.acked == 2, what="the write acknowledged")
            assert plan.counts[IOERR] >= 1, "no renewal met the fault"

    run(scenario, units=20)


def test_the_lease_keeper_survives_a_failed_renewal(tmp_path: Path) -> None:
    """The serving node's lease keeper meets failing renewals and goes on renewing once the
    store works again (it used to stop for good, and the lease ran out)."""
    plan = FaultPlan(0, rate=1.0, weights={IOERR: 1}, only=frozenset({0}))

    async def scenario() -> None:
        async with faulty_node(tmp_path / "node", plan) as (node, url):
            node.leases.ttl_ms = 300  # a short lease: the keeper renews every 100 ms
            async with writer(url, 0):  # the first peer starts the keeper
                plan.active = True
                await until(lambda: plan.counts[IOERR] >= 1, what="a renewal meeting the fault")
                plan.active = False
                after = now_ms()

                def renewed() -> bool:
                    lease = parse_lease(node.kv.get(node.account_id, lease_key(node.session))[1])
                    return lease is not None and lease.expires > after + 150

                await until(renewed, what="the lease renewed after the faults")

    run(scenario, units=20)
