"""CAS histories from concurrent clients of one ``kintsugi node serve`` on SQLite are
linearizable (DESIGN §8, §12).

Several connections of one account run random ``get`` and ``cas`` (a few deletes among
them) on a few keys of its namespace at once, each recording when it invoked an operation,
when the result came back and what it was; the history is then checked with the CAS
register checker of tests/engine/kv/linearizable.py. The operations come from a seeded
generator: ``KINTSUGI_KV_SEED`` replays them (the interleaving is the network's).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from typing import Any

from engine.crypto import AccountKey
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.store import Stored
from engine.net.kv_client import RemoteKV
from tests.e2e._recovery import restart
from tests.e2e.conftest import Processes
from tests.engine.kv.linearizable import Op, check, normal
from tests.util import timeout

#: Connections, operations per connection, keys.
CLIENTS = 6
OPS = 60
KEYS = ("a", "b", "c")


def slot_value(slot: Slot | None) -> Any:
    """A slot as the register compares it (a tombstone is one, whoever stamped it when)."""
    if slot is None:
        return None
    if isinstance(slot, Tombstone):
        return ("tombstone",)
    return ("present", normal(slot.value))


async def run_client(n: int, kv: RemoteKV, rng: random.Random, history: list[Op]) -> None:
    """``OPS`` random operations, mostly CASes from the generation this client last saw
    (so they race), some from a stale or future one, some reads."""
    seen = dict.fromkeys(KEYS, 0)
    for i in range(OPS):
        key = rng.choice(KEYS)
        roll = rng.random()
        start = time.monotonic()
        if roll < 0.3:
            generation, slot = await kv.get(key)
            history.append(Op(n, key, "get", start, time.monotonic(), (generation, slot_value(slot))))
            seen[key] = generation
            continue
        expect = seen[key] if roll < 0.85 else max(0, seen[key] + rng.choice((-1, 1)))
        new: Slot = Tombstone(0, kv.account) if rng.random() < 0.1 else Present([n, i])
        result, _stored = await kv.cas_stored(key, expect, new)
        end = time.monotonic()
        if isinstance(result, Stored):
            outcome: tuple[Any, ...] = ("stored", result.generation)
        else:
            outcome = ("conflict", result.generation, slot_value(result.slot))
        history.append(Op(n, key, "cas", start, end, outcome, expect, slot_value(new)))
        seen[key] = result.generation


def test_cas_histories_of_concurrent_clients_are_linearizable(processes: Processes) -> None:
    """The history is linearizable, the clients did race (some CASes lost, operations on one
    key overlapped), and every acknowledged CAS survives a SIGKILL of the node."""
    seed = int(os.environ.get("KINTSUGI_KV_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed {seed} (KINTSUGI_KV_SEED={seed} replays the operations)")
    node = processes.node("node1")
    key = AccountKey.load(processes.account("writer").key)
    history: list[Op] = []

    async def scenario() -> dict[str, tuple[int, Slot | None]]:
        kvs = [await RemoteKV.open(node.url, key, timeout=timeout(20)) for _ in range(CLIENTS)]
        try:
            await asyncio.gather(
                *(run_client(n, kv, random.Random(f"{seed}/{n}"), history) for n, kv in enumerate(kvs))
            )
            return {k: await kvs[0].get(k) for k in KEYS}
        finally:
            for kv in kvs:
                await kv.close()

    started = time.monotonic()
    final = asyncio.run(asyncio.wait_for(scenario(), timeout(120)))
    elapsed = time.monotonic() - started
    verdict = check(history)
    print(f"{len(history)} operations in {elapsed:.2f} s; {verdict.explored} search steps")
    assert verdict.ok, (
        f"seed {seed}: the history of key {verdict.key!r} is not linearizable; "
        f"the longest linearizable prefix found: {verdict.bad}"
    )

    # The check had something to decide: the clients raced, and some of them lost.
    outcomes = Counter(op.result[0] for op in history if op.kind == "cas" and op.result is not None)
    assert outcomes["stored"] and outcomes["conflict"], outcomes
    overlapping = sum(
        1
        for a in history
        for b in history
        if a.client < b.client and a.key == b.key and a.start < (b.end or 0) and b.start < (a.end or 0)
    )
    assert overlapping > 0, "no two operations on one key overlapped in time"
    # Generations only grew, one per stored CAS: the final generation of each key is their count.
    for k in KEYS:
        stored = sum(1 for op in history if op.key == k and op.result is not None and op.result[0] == "stored")
        assert final[k][0] == stored, (k, final[k], stored)

    # A node acknowledges a CAS only once it is committed: after a SIGKILL and a restart on
    # the same store, every key is where the last acknowledged CAS left it.
    node.kill()
    again = restart(processes, node)

    async def reread() -> dict[str, tuple[int, Slot | None]]:
        async with await RemoteKV.open(again.url, key, timeout=timeout(20)) as kv:
            return {k: await kv.get(k) for k in KEYS}

    after = asyncio.run(asyncio.wait_for(reread(), timeout(30)))
    assert {k: (g, slot_value(s)) for k, (g, s) in after.items()} == {
        k: (g, slot_value(s)) for k, (g, s) in final.items()
    }
