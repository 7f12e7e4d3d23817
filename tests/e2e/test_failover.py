"""Clients that survive a node: several node URLs, real ``kintsugi node serve`` processes on
SQLite stores of their own (they share nothing), and SIGKILL.

- A client given [A, B] writes through A; A is SIGKILLed; the client moves to B by itself,
  sends B everything it holds (B never saw any of it), keeps writing, and B acknowledges
  it all. A comes back on its port: the client stays on B, trying nothing, until B is
  SIGKILLed too; then it moves to A and A gets what was written meanwhile. Each node's
  store, read from disk after it died or stopped, holds every write made before that.
- ``kintsugi kv watch ws://A,ws://B PREFIX``: when A dies it says so, moves to B, prints
  the slots B holds that it had not printed, and goes on watching B.

The client of the first story runs in the test process (a real SyncClient on a real SQLite
store, over loopback); it is the nodes that crash. About 10 s for both stories.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.kv.envelope import Present
from engine.kv.store import Stored
from engine.net.client import Backoff, SyncClient
from engine.net.kv_client import RemoteKV
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.storage import open_store
from tests.e2e.conftest import NodeProcess, Proc, Processes
from tests.util import timeout, wait_until

#: Units the whole client story may take.
STORY_UNITS = 60
#: Units any one wait of a story may take.
STEP_UNITS = 15
#: Units the client must stay put on B once A is back (many reconnect rounds at its delays).
STAY_UNITS = 1.0

Heads = dict[str, tuple[int, str]]


class NodeOnPort(NodeProcess):
    """``kintsugi node serve`` on an existing store, on a given port: a node restarted after a
    crash, where its clients will look for it."""

    def __init__(self, label: str, workdir: Path, *, store: Path, port: int) -> None:
        self.store = store
        self.ready_file = workdir / f"{label}.ready"
        args = ["-m", "engine.cli", "-v", "node", "serve", "--store", str(store)]
        args += ["--host", "127.0.0.1", "--port", str(port), "--ready-file", str(self.ready_file)]
        self.key_file = store / "node.key"
        Proc.__init__(self, label, args)
        self.url = ""


def crash(processes: Processes, node: NodeProcess) -> None:
    """SIGKILL ``node`` (a crash, not a shutdown) and forget it (it will not exit 0)."""
    node.reap()
    processes.nodes.remove(node)


def stored_heads(store: Path, covalues: list[CoValueID]) -> Heads:
    """``{sid: (count, head hex)}`` of every session of ``covalues`` in the store on disk."""
    opened = open_store(store, readonly=True)
    try:
        heads: Heads = {}
        for cid in covalues:
            loaded = opened.load_covalue(cid)
            assert loaded is not None, f"{store} does not hold {cid}"
            assert not loaded.corrupt, loaded.corrupt
            heads.update(
                {f"{cid}/{sid}": (log.signed_count, log.head()[1].hex()) for sid, log in loaded.sessions.items()}
            )
        return heads
    finally:
        opened.close()


class Writer:
    """The client replica: a LocalNode on a SQLite store, synced by a SyncClient over
    [A, B], writing keys into one CoMap."""

    def __init__(self, store: Path, urls: list[str]) -> None:
        self.node = LocalNode.open(store, AccountKey.generate(), instance_id="writer")
        self.shell = SyncShell(self.node)
        self.client = SyncClient(self.shell, urls, backoff=Backoff(initial=0.1, cap=0.5))
        self.group = self.node.create_group().id
        self.comap = self.node.create_map(self.group).id
        self.written: set[str] = set()

    def write(self, prefix: str, n: int = 20) -> None:
        for i in range(n):
            self.node.set(self.comap, f"{prefix}{i}", {"i": i})
            self.written.add(f"{prefix}{i}")

    def heads(self) -> Heads:
        """What this replica holds, in :func:`stored_heads`' form."""
        return {
            f"{cid}/{sid}": (n, h.hex())
            for cid in (self.group, self.comap)
            for sid, (n, h) in self.node.known_state(cid).sessions.items()
        }

    def acked_by(self, url: str) -> bool:
        """Whether the node at ``url`` (connected now) announced, in its own known states,
        every session of both CoValues at this replica's heads."""
        peers = [p for pid, p in self.shell.manager.peers.items() if pid.startswith("out:") and pid.endswith(url)]
        if not peers or self.client.node_url != url:
            return False
        acked = peers[-1].acked
        return all(acked.get(cid, {}) == self.node.known_state(cid).sessions for cid in (self.group, self.comap))

    async def until(self, cond: Any, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout(STEP_UNITS)
        while not cond():
            if asyncio.get_running_loop().time() > deadline:
                tries = [(t.url, t.error) for t in self.client.attempts]
                raise AssertionError(f"timed out waiting for {what}; tries: {tries}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.client.stop()
        self.shell.close()
        self.node.close()


def test_a_client_moves_to_another_node_when_its_node_dies_and_loses_no_write(processes: Processes) -> None:
    a = processes.node("a")
    b = processes.node("b")
    port_a = int(a.url.rsplit(":", 1)[1])
    seen: dict[str, Heads] = {}
    covalues: list[CoValueID] = []

    async def story() -> None:
        writer = Writer(processes.workdir / "stores" / "writer", [a.url, b.url])
        covalues.extend([writer.group, writer.comap])
        writer.client.start()
        try:
            await writer.until(lambda: writer.client.node_url == a.url, "the first connection, to A")
            writer.write("on-a-")
            await writer.until(lambda: writer.acked_by(a.url), "A's acknowledgement")
            seen["a"] = writer.heads()

            await asyncio.to_thread(crash, processes, a)
            writer.write("gap-")  # while the client finds out and moves
            await writer.until(lambda: writer.client.node_url == b.url, "the client to move to B")
            writer.write("on-b-")
            await writer.until(lambda: writer.acked_by(b.url), "B's acknowledgement of everything")
            assert [(t.url, t.error) for t in writer.client.attempts] == [(a.url, None), (b.url, None)]

            back = NodeOnPort("a-back", processes.workdir, store=a.store, port=port_a)
            processes.nodes.append(back)
            assert await asyncio.to_thread(back.wait_ready) == a.url
            tries, connections = len(writer.client.attempts), writer.client.connections
            writer.write("still-on-b-")
            await writer.until(lambda: writer.acked_by(b.url), "B's acknowledgement of the later writes")
            await asyncio.sleep(timeout(STAY_UNITS))  # an absence to observe: no try, no move
            assert writer.client.node_url == b.url, "the client left B while B was fine"
            assert (len(writer.client.attempts), writer.client.connections) == (tries, connections)
            seen["b"] = writer.heads()

            await asyncio.to_thread(crash, processes, b)
            await writer.until(lambda: writer.client.node_url == a.url, "the client to move back to A")
            writer.write("on-a-again-")
            await writer.until(lambda: writer.acked_by(a.url), "A's acknowledgement of everything")
            seen["end"] = writer.heads()
            assert set(writer.node.get_map(writer.comap)) == writer.written
        finally:
            await writer.close()

    asyncio.run(asyncio.wait_for(story(), timeout(STORY_UNITS)))
    # B died holding everything written until then (all of it sent by the client: B had
    # none of it), and A, back, got what was written on B besides its own.
    assert stored_heads(b.store, covalues) == seen["b"]
    back = processes.nodes[-1]
    assert back.stop() == 0
    processes.nodes.remove(back)
    back.reap()
    assert stored_heads(a.store, covalues) == seen["end"]
    assert all(n >= seen["a"][sid][0] for sid, (n, _h) in seen["end"].items() if sid in seen["a"])


async def cas(url: str, key: AccountKey, slot: str, expect: int, value: Any) -> None:
    kv = await RemoteKV.open(url, key, timeout=timeout(STEP_UNITS))
    try:
        assert isinstance(await kv.cas(slot, expect, Present(value)), Stored)
    finally:
        await kv.close()


def test_kv_watch_over_two_nodes_moves_on_and_catches_up(processes: Processes) -> None:
    alice = processes.account("alice")
    key = AccountKey.load(alice.key)
    a = processes.node("a")
    b = processes.node("b")
    asyncio.run(cas(b.url, key, "p/only-on-b", 0, "b"))
    args = ["-m", "engine.cli", "kv", "watch", f"{a.url},{b.url}", "p/", "--key", str(alice.key), "--json"]
    watcher = processes.spawn("watch", [*args, "--timeout", str(timeout(STEP_UNITS))])
    _wait_stderr(watcher, "watching", "the watch to start")
    assert f"on {a.url}" in watcher.stderr

    asyncio.run(cas(a.url, key, "p/on-a", 0, "a"))
    watcher.wait_for(lambda line: line.get("key") == "p/on-a", STEP_UNITS, "the change on A")
    crash(processes, a)
    watcher.wait_for(lambda line: line.get("key") == "p/only-on-b", STEP_UNITS, "the catch-up from B")
    _wait_stderr(watcher, f"on {b.url} again", "the watch to resume on B")
    asyncio.run(cas(b.url, key, "p/on-b", 0, "b2"))
    watcher.wait_for(lambda line: line.get("key") == "p/on-b", STEP_UNITS, "the change on B")

    watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.wait_exit(STEP_UNITS) == 0, watcher.describe()
    rows = [(line["key"], line["generation"], line.get("value")) for line in watcher.lines]
    assert rows == [("p/on-a", 1, "a"), ("p/only-on-b", 1, "b"), ("p/on-b", 1, "b2")]
    assert f"lost {a.url}" in watcher.stderr and "Traceback" not in watcher.stderr


def _wait_stderr(proc: Proc, text: str, what: str) -> None:
    """Wait until ``proc`` wrote ``text`` on stderr (fails if it exits first)."""
    try:
        wait_until(lambda: text in proc.stderr or proc.proc.poll() is not None, STEP_UNITS, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{proc.describe()}") from None
    assert text in proc.stderr, proc.describe()
