"""One client process of the ``cluster`` benchmark (bench/cluster.py): several asyncio clients
on one event loop, each an in-memory :class:`LocalNode` with its own account, session and
:class:`SyncClient` to one node.

``python -m bench.cluster_client CONFIG.json``; the config (written by bench/cluster.py):

- ``role``: ``writers`` or ``observers``;
- ``urls``: the node URLs; client ``i`` uses ``urls[i % len(urls)]``;
- ``group`` and ``comaps``: the group every client is a member of, and one CoMap per writer
  (writer ``i`` writes ``comaps[i]``; an observer loads them all);
- ``clients``: the indices of the writers (or observers) this process runs;
- ``per_client``: transactions each writer makes; ``window``: how many of them may wait for
  their acknowledgement at a time (a closed loop: a writer makes its next transaction only
  when fewer than ``window`` are unacknowledged);
- ``timeout``: seconds any one wait may take.

The process prints ``{"ready": true}`` once every client is connected and holds what it
needs. Writers then wait for a ``go`` line on stdin. Each write sets ``k<j % 1000>`` to the
wall clock in nanoseconds (``time.time_ns()``, one clock for every process of the machine):
an observer that receives it subtracts that from its own clock to get the delay until the
write was seen. An observer records only writes made through another node than its own
(writer ``i`` is on node ``i % len(urls)``, observer ``o`` on node ``o % len(urls)``).

The last line is the result: writers ``{"first_write_ns", "last_ack_ns", "acked",
"cpu_s"}`` (an acknowledgement is the node's own ``known`` covering the write, sent only
after its commit); observers ``{"delays_ms", "expected", "cpu_s"}``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID
from engine.model.known_state import KnownState
from engine.model.transaction import decode_transaction
from engine.net.client import SyncClient
from engine.net.shell import SyncShell
from engine.node.changes import ChangeEvent
from engine.node.facade import LocalNode

#: Seconds between two looks at a condition that no event announces (setup only).
POLL = 0.002


def writer_key(i: int) -> AccountKey:
    """The account of writer ``i`` (deterministic, so the setup can give it its role)."""
    return AccountKey.from_seed(b"w" + i.to_bytes(4, "big") + bytes(27))


def observer_key(i: int) -> AccountKey:
    """The account of observer ``i``."""
    return AccountKey.from_seed(b"o" + i.to_bytes(4, "big") + bytes(27))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wait_for(cond: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")
        await asyncio.sleep(POLL)


class BenchClient:
    """One LocalNode synced with one node; :meth:`load` waits until CoValues are here."""

    def __init__(self, key: AccountKey, url: str) -> None:
        self.node = LocalNode(key)
        self.shell = SyncShell(self.node)
        self.sync = SyncClient(self.shell, url)

    async def start(self, timeout: float) -> None:
        self.sync.start()
        await asyncio.wait_for(self.sync.connected.wait(), timeout)

    async def load(self, covalues: list[CoValueID], timeout: float) -> None:
        for cid in covalues:
            self.shell.manager.load(cid)
        self.shell.dispatch()
        await wait_for(lambda: all(self.node.get_or_none(c) is not None for c in covalues), "the CoValues", timeout)

    async def stop(self) -> None:
        await self.sync.stop()
        self.shell.close()
        self.node.close()


class Writer(BenchClient):
    """Writes ``per_client`` stamped transactions into its CoMap, at most ``window`` of them
    unacknowledged at a time."""

    def __init__(self, key: AccountKey, url: str, comap: CoValueID) -> None:
        super().__init__(key, url)
        self.comap = comap
        self.acked = 0
        self.first_write_ns = 0
        self.last_ack_ns = 0
        self._progress = asyncio.Event()
        self.shell.manager.on_known = self._on_known

    def _on_known(self, _peer: str, known: KnownState) -> None:
        if known.id != self.comap:
            return
        count = known.sessions.get(SessionID(self.node.session), (0, b""))[0]
        if count > self.acked:
            self.acked = count
            self.last_ack_ns = time.time_ns()
            self._progress.set()

    async def run(self, per_client: int, window: int, timeout: float) -> None:
        self.first_write_ns = time.time_ns()
        for j in range(per_client):
            while j - self.acked >= window:
                self._progress.clear()
                await asyncio.wait_for(self._progress.wait(), timeout)
            self.node.set(self.comap, f"k{j % 1000}", time.time_ns())
            await asyncio.sleep(0)  # let this write be signed and sent on its own
        while self.acked < per_client:
            self._progress.clear()
            await asyncio.wait_for(self._progress.wait(), timeout)


class Observer(BenchClient):
    """Records, for every write into the watched CoMaps, the delay from its stamp until this
    client has it (verified and applied)."""

    def __init__(self, key: AccountKey, url: str, watched: list[CoValueID]) -> None:
        super().__init__(key, url)
        self.watched = set(watched)
        self.delays_ms: list[float] = []
        self._seen: dict[tuple[CoValueID, SessionID], int] = {}
        self.node.subscribe(self._on_change)

    def _on_change(self, event: ChangeEvent) -> None:
        now = time.time_ns()
        cid = event.covalue
        if cid not in self.watched:
            return
        for sid, log in self.node.get(cid).sessions.items():
            seen = self._seen.get((cid, sid), 0)
            for tx in log.txs[seen : log.signed_count]:
                for change in decode_transaction(tx).changes:
                    if change[0] == "set":
                        self.delays_ms.append((now - change[2]) / 1e6)
            self._seen[(cid, sid)] = max(seen, log.signed_count)


async def run(config: dict[str, Any]) -> dict[str, Any]:
    urls: list[str] = config["urls"]
    group = CoValueID(config["group"])
    comaps = [CoValueID(c) for c in config["comaps"]]
    timeout = float(config["timeout"])
    per_client = int(config["per_client"])
    clients: list[BenchClient] = []
    if config["role"] == "writers":
        writers = [Writer(writer_key(i), urls[i % len(urls)], comaps[i]) for i in config["clients"]]
        clients.extend(writers)
    else:
        observers = []
        expected = 0
        for o in config["clients"]:
            watched = [c for i, c in enumerate(comaps) if i % len(urls) != o % len(urls)]
            expected += per_client * len(watched)
            observers.append(Observer(observer_key(o), urls[o % len(urls)], watched))
        clients.extend(observers)
    for client in clients:
        await client.start(timeout)
    for i, client in enumerate(clients):
        await client.load(
            [group, comaps[config["clients"][i]]] if isinstance(client, Writer) else [group, *comaps], timeout
        )
    print(json.dumps({"ready": True}), flush=True)
    try:
        if isinstance(clients[0], Writer):
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if line.strip() != "go":
                raise RuntimeError(f"expected 'go', got {line!r}")
            await asyncio.gather(*(w.run(per_client, int(config["window"]), timeout) for w in writers))
            return {
                "first_write_ns": min(w.first_write_ns for w in writers),
                "last_ack_ns": max(w.last_ack_ns for w in writers),
                "acked": sum(w.acked for w in writers),
                "cpu_s": round(cpu_seconds(), 3),
            }

        def all_seen() -> bool:
            return sum(len(o.delays_ms) for o in observers) >= expected

        await wait_for(all_seen, f"{expected} writes at the observers", timeout)
        return {
            "delays_ms": [round(d, 3) for o in observers for d in o.delays_ms],
            "expected": expected,
            "cpu_s": round(cpu_seconds(), 3),
        }
    finally:
        for client in clients:
            await client.stop()


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    result = asyncio.run(run(config))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
