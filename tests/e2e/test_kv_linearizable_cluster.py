"""CAS histories from concurrent clients of three ``kintsugi node serve`` processes on one
PostgreSQL database (the throwaway server of tests/pg.py) are linearizable (DESIGN §8, §9,
§12).

A client reaches only its own account's namespace, so the clients are connections of one
account, each with its own session, two on each node; a CAS is decided by the database
(``UPDATE … WHERE generation = $expected``), so clients of different nodes race on the same
rows. They run seeded random ``get`` and ``cas`` on a few keys at once
(tests/e2e/_kv_history.py), and the history is checked with the CAS register checker of
tests/engine/kv/linearizable.py, together with a read of every key through each node once
they are done:

- with every node up, the history is linearizable, clients of different nodes raced, and
  every node reads each key at the generation the stored CASes add up to;
- one node SIGKILLed in the middle (the seed says which, and after how many operations):
  its clients, given every node's URL with their own first, move to another node and go
  on; an operation whose connection dropped before its reply is recorded with an unknown
  outcome (it may or may not have taken effect), and the history stays linearizable.

The seed is printed; ``KINTSUGI_KV_SEED`` replays the operations and the kill schedule (the
interleaving is the network's).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from engine.crypto import AccountKey
from engine.net.kv_client import RemoteKV
from tests.e2e._kv_history import (
    KEYS,
    assert_raced,
    kv_seed,
    overlapping,
    run_client,
    slot_value,
    stored_count,
)
from tests.e2e.conftest import Account, Processes
from tests.e2e.test_cluster import NODES, Cluster
from tests.engine.kv.linearizable import Op, check
from tests.util import timeout

#: Clients on each node (client ``n`` starts on node ``n % NODES``).
CLIENTS_PER_NODE = 2
CLIENTS = NODES * CLIENTS_PER_NODE
#: Operations per client (a CAS through a node on PostgreSQL takes a few milliseconds).
OPS = 150
#: Units a request may wait for its reply, and the whole scenario may take.
REQUEST_UNITS = 20
SCENARIO_UNITS = 120
#: Longest wait, in seconds, between a request of the victim's clients leaving and the
#: SIGKILL (a random moment from the seed, while the request is most likely in flight).
KILL_DELAY_MAX = 0.01


def home(n: int) -> int:
    """The node client ``n`` starts on."""
    return n % NODES


async def open_clients(cluster: Cluster, key: AccountKey) -> list[RemoteKV]:
    """:data:`CLIENTS` connections of ``key``'s account, client ``n`` on its :func:`home`
    node and given the others' URLs after it, to move to when its node goes away."""
    kvs: list[RemoteKV] = []
    try:
        for n in range(CLIENTS):
            urls = [cluster.node_url((home(n) + k) % NODES) for k in range(NODES)]
            kvs.append(await RemoteKV.open(urls, key, timeout=timeout(REQUEST_UNITS)))
    except BaseException:
        await close_clients(kvs)
        raise
    return kvs


async def close_clients(kvs: list[RemoteKV]) -> None:
    for kv in kvs:
        await kv.close()


async def final_reads(readers: list[RemoteKV]) -> list[Op]:
    """Every key read through each of ``readers`` in turn, once the clients are done, as
    operations of clients numbered from :data:`CLIENTS` on."""
    reads = []
    for j, kv in enumerate(readers):
        for k in KEYS:
            start = time.monotonic()
            generation, slot = await kv.get(k)
            reads.append(Op(CLIENTS + j, k, "get", start, time.monotonic(), (generation, slot_value(slot))))
    return reads


def assert_linearizable(seed: int, history: list[Op], elapsed: float) -> None:
    verdict = check(history)
    print(f"{len(history)} operations in {elapsed:.2f} s; {verdict.explored} search steps")
    assert verdict.ok, (
        f"seed {seed}: the history of key {verdict.key!r} is not linearizable; "
        f"the longest linearizable prefix found: {verdict.bad}"
    )


def test_cas_histories_across_three_nodes_are_linearizable(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    seed = kv_seed()
    cluster = Cluster(processes, pg_url, accounts("node"))
    cluster.start_all()
    key = AccountKey.load(accounts("writer").key)
    history: list[Op] = []
    served: dict[int, set[str]] = {n: set() for n in range(CLIENTS)}

    async def scenario() -> list[Op]:
        kvs = await open_clients(cluster, key)

        def on_op(n: int, op: Op | None) -> None:
            served[n].add(kvs[n].session.url)

        try:
            await asyncio.gather(
                *(
                    run_client(n, kv, random.Random(f"{seed}/{n}"), history, ops=OPS, on_op=on_op)
                    for n, kv in enumerate(kvs)
                )
            )
            return await final_reads(kvs[:NODES])  # one client of each node
        finally:
            await close_clients(kvs)

    started = time.monotonic()
    reads = asyncio.run(asyncio.wait_for(scenario(), timeout(SCENARIO_UNITS)))
    assert_linearizable(seed, history + reads, time.monotonic() - started)

    # Each client was served by its own node all along, and clients of different nodes raced.
    assert served == {n: {cluster.node_url(home(n))} for n in range(CLIENTS)}
    assert_raced(history)
    assert overlapping(history, lambda a, b: home(a.client) != home(b.client)) > 0, "no race across nodes"
    # Every node reads each key at the generation the stored CASes add up to (generations only
    # grow, one per stored CAS).
    for op in reads:
        assert op.result is not None and op.result[0] == stored_count(history, op.key), (op, seed)


def test_cas_histories_stay_linearizable_when_a_node_is_sigkilled(
    pg_url: str, processes: Processes, accounts: Callable[[str], Account]
) -> None:
    seed = kv_seed()
    schedule = random.Random(f"{seed}/kill")
    victim = schedule.randrange(NODES)
    kill_after = schedule.randrange(OPS // 4, OPS // 2)
    kill_delay = schedule.uniform(0, KILL_DELAY_MAX)
    print(
        f"node {victim} is killed {kill_delay * 1000:.1f} ms after a request of one of its clients leaves, "
        f"once it has made {kill_after} operations"
    )
    cluster = Cluster(processes, pg_url, accounts("node"))
    cluster.start_all()
    victim_url = cluster.node_url(victim)
    its_clients = [n for n in range(CLIENTS) if home(n) == victim]
    key = AccountKey.load(accounts("writer").key)
    history: list[Op] = []
    served: dict[int, list[tuple[Op, str]]] = {n: [] for n in range(CLIENTS)}
    kill: asyncio.TimerHandle | None = None
    killed_at: float | None = None
    lost: list[int] = []

    def sigkill() -> None:
        nonlocal killed_at
        cluster.kill(victim)
        killed_at = time.monotonic()

    async def scenario() -> list[Op]:
        kvs = await open_clients(cluster, key)

        def on_call(n: int) -> None:
            nonlocal kill
            if kill is None and n in its_clients and len(served[n]) >= kill_after:
                kill = asyncio.get_running_loop().call_later(kill_delay, sigkill)

        def on_op(n: int, op: Op | None) -> None:
            if op is not None and op.end is not None:
                served[n].append((op, kvs[n].session.url))

        try:
            runs = (
                run_client(n, kv, random.Random(f"{seed}/{n}"), history, ops=OPS, on_call=on_call, on_op=on_op)
                for n, kv in enumerate(kvs)
            )
            lost.extend(await asyncio.gather(*runs))
            survivors = [kvs[n] for n in range(NODES) if n != victim]
            return await final_reads([*survivors, *(kvs[n] for n in its_clients)])
        finally:
            await close_clients(kvs)

    started = time.monotonic()
    reads = asyncio.run(asyncio.wait_for(scenario(), timeout(SCENARIO_UNITS)))
    unknown = [op for op in history if op.end is None]
    took_effect = sum(op.result[0] - stored_count(history, op.key) for op in reads[: len(KEYS)] if op.result)
    print(
        f"{sum(lost)} operations lost their connection; {len(unknown)} CASes with an unknown outcome, "
        f"{took_effect} of which took effect"
    )
    assert_linearizable(seed, history + reads, time.monotonic() - started)

    # The node died in the middle. Its clients had been on it, and what they asked after its
    # death was answered by another node; the other clients stayed where they were.
    assert killed_at is not None, "the node was never killed"
    assert sum(lost) > 0, f"seed {seed}: the SIGKILL found no request of the node's clients in flight"
    for n in range(CLIENTS):
        urls = {url for _op, url in served[n]}
        if n not in its_clients:
            assert urls == {cluster.node_url(home(n))}, (n, urls, seed)
            continue
        before = {url for op, url in served[n] if op.start < killed_at}
        after = {url for op, url in served[n] if op.start > killed_at}
        assert before == {victim_url}, (n, before, seed)
        assert after and victim_url not in after, (n, after, seed)
    assert_raced(history)
    # Each key is at the generation of the stored CASes, plus those of unknown outcome that
    # took effect.
    for op in reads:
        stored = stored_count(history, op.key)
        maybe = sum(1 for u in unknown if u.key == op.key)
        assert op.result is not None and stored <= op.result[0] <= stored + maybe, (op, stored, maybe, seed)
