"""A client process of the soak (tests/soak/test_soak.py):
``python _client.py --key K --store S --journal J --url URL --label L --covalues G,M1,M2 --seed N``.

One life of a client: it opens a :class:`~engine.node.facade.LocalNode` on its own store (a
leased session; after a SIGKILL the old session's lease is still held, so a new one),
appends a ``life`` record to its journal (:mod:`tests.soak.journal`), connects to ``URL``
(the soak's proxy) with a short reconnect backoff, fetches the shared CoValues it does not
hold yet, prints ``{"ready": session}``, and writes: batches of transactions into the shared
CoMaps at random moments (its random choices come from ``--seed``, its label and its life).

Every transaction is journaled once its batch has committed to the store, and every
``known`` the node sends that covers one of this client's sessions at this client's own chain
hash is journaled as an acknowledgement. What the node held before is synced on every
(re)connection by the engine itself: nothing here resends anything.

Steps on stdin:

- ``stop``: write no more; once the node has acknowledged every session this store wrote (in
  any life) at its head, print ``{"synced": {cid: {sid: count}}}``. Syncing goes on.
- ``quit`` (or end of input): close cleanly (queued messages sent, the store closed, the
  lease released) and exit 0.

A failure prints ``{"error": ...}`` and exits 1. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID, is_conflict_of
from engine.model.known_state import KnownState
from engine.net.client import Backoff, SyncClient
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from tests.soak.journal import JournalWriter, ack_record, read_journal, write_records

#: Mean pause between two write batches of one client, in seconds.
MEAN_PAUSE = 0.15
#: Keys each shared CoMap uses (few, so that writers overwrite each other's keys).
KEYS = 12
#: Reconnect backoff of a soak client: faults come often, so retry quickly.
BACKOFF_INITIAL, BACKOFF_CAP = 0.05, 0.5
#: Seconds between two requests for a CoValue this client still lacks.
LOAD_RETRY = 1.0


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


class SoakClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.label: str = args.label
        self.timeout: float = args.timeout
        self.ids = [CoValueID(c) for c in args.covalues.split(",")]
        #: the CoMaps to write into (the first id is their owner group)
        self.maps = self.ids[1:]
        past = read_journal(Path(args.journal), self.label)
        self.life = past.lives + 1
        #: sessions this store wrote in, in any life
        self.mine: set[SessionID] = {SessionID(s) for s in past.sessions}
        #: the highest count the node acknowledged per (CoValue, session), as journaled
        self.acked: dict[tuple[CoValueID, SessionID], int] = {
            (CoValueID(c), SessionID(s)): n for (c, s), n in past.acked_counts().items()
        }
        #: the node's latest announced head of each of our sessions
        self.node_heads: dict[tuple[CoValueID, SessionID], tuple[int, bytes]] = {}
        self.rng = random.Random(f"{args.seed}/{self.label}/{self.life}")
        self.journal = JournalWriter(Path(args.journal))
        self.node = LocalNode.open(Path(args.store), AccountKey.load(args.key))
        self.journal.append([{"life": self.life, "pid": os.getpid(), "session": self.node.session}])
        self.mine.add(self.node.session)
        self.shell = SyncShell(self.node)
        self.shell.manager.on_known = self.on_known
        self.sync = SyncClient(self.shell, args.url, backoff=Backoff(initial=BACKOFF_INITIAL, cap=BACKOFF_CAP))
        self.writing = True
        self.counter = 0

    # -- acknowledgements --------------------------------------------------------------------

    def on_known(self, peer_id: str, known: KnownState) -> None:
        """Journal what the node announces holding of this store's sessions."""
        if not peer_id.startswith("out:") or not known.header:
            return
        core = self.node.get_or_none(known.id)
        if core is None:
            return
        records = []
        for sid, (n, head) in known.sessions.items():
            if not self.owns(sid):
                continue
            key = (known.id, sid)
            self.node_heads[key] = (n, head)
            log = core.sessions.get(sid)
            if log is None or n > log.signed_count or log.hash_at(n) != head:
                records.append(ack_record(known.id, sid, n, head, odd=True))
            elif n > self.acked.get(key, 0):
                self.acked[key] = n
                records.append(ack_record(known.id, sid, n, head))
        self.journal.append(records)

    def owns(self, sid: SessionID) -> bool:
        return sid in self.mine or any(is_conflict_of(sid, origin) for origin in self.mine)

    def all_acked(self) -> bool:
        """The node announced every session this store wrote, at its head here."""
        for cid in self.maps:
            core = self.node.get_or_none(cid)
            if core is None:
                return False
            for sid, log in core.sessions.items():
                if log.signed_count and self.owns(sid) and self.node_heads.get((cid, sid)) != log.head():
                    return False
        return True

    # -- writing -----------------------------------------------------------------------------

    def write_batch(self) -> None:
        """One batch (committed as one store transaction), then its journal records."""
        session = self.node.session
        if session not in self.mine:
            self.journal.append([{"session": session}])
            self.mine.add(session)
        big = self.rng.random() < 0.05
        count = self.rng.randint(20, 100) if big else self.rng.randint(1, 4)
        before: dict[CoValueID, int] = {}
        with self.node.batch():
            for _ in range(count):
                cid = self.rng.choice(self.maps)
                if cid not in before:
                    log = self.node.get(cid).sessions.get(session)
                    before[cid] = 0 if log is None else log.count
                self.node.write_changes(cid, self.changes())
        records = []
        for cid, start in before.items():
            log = self.node.get(cid).sessions[session]
            assert log.signed_count == log.count, "the batch ended unsigned"
            records += write_records(cid, session, start, log.txs[start : log.signed_count])
        self.journal.append(records)

    def changes(self) -> list[list[Any]]:
        """One transaction's changes: a tokened ``set`` first, then up to two more."""
        n, self.counter = self.counter, self.counter + 1
        changes: list[list[Any]] = []
        for j in range(self.rng.randint(1, 3)):
            key = f"k{self.rng.randrange(KEYS)}"
            if j and self.rng.random() < 0.25:
                changes.append(["del", key])
            else:
                changes.append(["set", key, [self.label, self.life, n, j]])
        return changes

    async def write_loop(self) -> None:
        while self.writing:
            self.write_batch()
            await asyncio.sleep(self.rng.expovariate(1 / MEAN_PAUSE))

    # -- the life ----------------------------------------------------------------------------

    async def fetch_shared(self) -> None:
        """Ask the node for the shared CoValues this store lacks, until they are all here."""
        deadline = time.monotonic() + self.timeout
        asked = 0.0
        while True:
            missing = [cid for cid in self.ids if self.node.get_or_none(cid) is None]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: the node never sent {missing}")
            if self.sync.connected.is_set() and time.monotonic() - asked > LOAD_RETRY:
                asked = time.monotonic()
                for cid in missing:
                    self.shell.manager.load(cid)
                self.shell.dispatch()
            await asyncio.sleep(0.02)

    async def until_synced(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.all_acked():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: the node did not acknowledge everything in {self.timeout:.0f}s")
            await asyncio.sleep(0.02)
        heads = {
            cid: {sid: log.signed_count for sid, log in self.node.get(cid).sessions.items() if self.owns(sid)}
            for cid in self.maps
        }
        emit({"synced": heads})

    async def close(self) -> None:
        self.writing = False
        await self.sync.stop()
        self.shell.close()
        self.node.close()
        self.journal.close()


async def read_stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(args: argparse.Namespace) -> int:
    client = SoakClient(args)
    tasks: set[asyncio.Task[None]] = set()
    reading: asyncio.Task[bytes] | None = None
    try:
        client.sync.start()
        stdin = await read_stdin()
        await client.fetch_shared()
        emit({"ready": client.node.session, "life": client.life})
        tasks.add(asyncio.create_task(client.write_loop()))
        reading = asyncio.create_task(stdin.readline())
        while True:
            done, _ = await asyncio.wait({reading, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in done & tasks:
                tasks.discard(task)
                task.result()  # a writer or a wait that failed fails the client
            if reading not in done:
                continue
            line = reading.result().decode().strip()
            if line in ("quit", ""):
                break
            if line == "stop":
                client.writing = False
                tasks.add(asyncio.create_task(client.until_synced()))
            reading = asyncio.create_task(stdin.readline())
    except Exception as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"})
        logging.getLogger("soak").exception("client %s failed", client.label)
        return 1
    finally:
        pending = [*tasks, *([reading] if reading is not None else [])]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await client.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="_client.py")
    parser.add_argument("--key", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--covalues", required=True, help="the owner group, then the CoMaps, comma-separated")
    parser.add_argument("--seed", required=True)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds any one wait may take")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
