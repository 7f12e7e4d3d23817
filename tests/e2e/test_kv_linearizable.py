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
import random
import time

from engine.crypto import AccountKey
from engine.kv.envelope import Slot
from engine.net.kv_client import RemoteKV
from tests.e2e._kv_history import KEYS, assert_raced, kv_seed, run_client, slot_value, stored_count
from tests.e2e._recovery import restart
from tests.e2e.conftest import Processes
from tests.engine.kv.linearizable import Op, check
from tests.util import timeout

#: Connections of the one account.
CLIENTS = 6


def test_cas_histories_of_concurrent_clients_are_linearizable(processes: Processes) -> None:
    """The history is linearizable, the clients did race (some CASes lost, operations on one
    key overlapped), and every acknowledged CAS survives a SIGKILL of the node."""
    seed = kv_seed()
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

    assert_raced(history)  # the check had something to decide
    # Generations only grew, one per stored CAS: the final generation of each key is their count.
    for k in KEYS:
        assert final[k][0] == stored_count(history, k), (k, final[k], stored_count(history, k))

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
