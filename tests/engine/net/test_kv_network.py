"""CAS slots over real WebSockets on 127.0.0.1 (docs/protocol.md "CAS slots").

Every message travels as frames between a node and a hand-driven peer (:class:`RawPeer`) or
the client library (:class:`RemoteKV`): each request and its reply, each refusal (another
account's slot, an oversized value, a bad key, a stale generation, a watch too many) with its
rid, a watch across two connections, the end of watches with their connection, paging, the
read-modify-write helper (retries, exhaustion, per-key isolation) and the feature check.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from engine.crypto import AccountKey
from engine.errors import (
    CASRetriesExhausted,
    KintsugiError,
    KVAccessDenied,
    KVBadKey,
    KVTooManyWatches,
    KVValueTooLarge,
    ProtocolError,
)
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present, Slot, Tombstone
from engine.kv.store import MAX_KEY_LENGTH, Conflict, Stored
from engine.net.kv_client import MAX_PENDING_EVENTS, RemoteKV, RemoteWatch, read_modify_write, read_modify_write_many
from engine.protocol.frames import OP, encode_frame
from engine.protocol.limits import FEATURES
from engine.protocol.messages import (
    MAX_KV_LIST_PAGE,
    NONCE_SIZE,
    Challenge,
    Error,
    KvCas,
    KvError,
    KvEvent,
    KvGet,
    KvKeys,
    KvList,
    KvResult,
    KvValue,
    KvWatch,
    Message,
    Welcome,
)
from engine.sync.kv_service import MAX_WATCHES_PER_CONNECTION
from tests.engine.net.conftest import RawPeer, Served, fake_node, run, serving, until
from tests.util import timeout

ALICE, BOB, OPERATOR = AccountKey.generate(), AccountKey.generate(), AccountKey.generate()


async def raw(url: str, key: AccountKey) -> RawPeer:
    peer = RawPeer(url)
    await peer.__aenter__()
    await peer.authenticate(key)
    return peer


async def reply_to(peer: RawPeer, request: Message) -> Message:
    """Send ``request``; the first message answering its rid."""
    rid = request.rid  # type: ignore[attr-defined]
    await peer.send(request)
    got = await peer.recv_until(lambda m: getattr(m, "rid", None) == rid or isinstance(m, Error))
    return got[-1]


def present(value: Any) -> dict[str, Any]:
    return {"present": value}


# -- the wire ------------------------------------------------------------------------------


def test_the_node_announces_the_kv_feature() -> None:
    assert "kv" in FEATURES

    async def scenario() -> None:
        async with serving() as served:
            peer = await raw(served.url, ALICE)
            try:
                assert peer.challenge is not None and "kv" in peer.challenge.features
            finally:
                await peer.close()

    run(scenario)


def test_every_request_gets_its_reply_over_the_wire() -> None:
    """get, cas (stored, conflict, delete), list and watch, frame by frame; the node's store
    holds what the replies say."""
    me = ALICE.account_id

    async def scenario() -> None:
        async with serving() as served:
            peer = await raw(served.url, ALICE)
            try:
                assert await reply_to(peer, KvGet(1, me, "k")) == KvValue(1, me, "k", 0, None)
                assert await reply_to(peer, KvCas(2, me, "k", 0, present([1]))) == KvResult(
                    2, "stored", 1, present([1])
                )
                assert await reply_to(peer, KvCas(3, me, "k", 0, present([2]))) == KvResult(
                    3, "conflict", 1, present([1])
                )
                deleted = await reply_to(peer, KvCas(4, me, "k", 1, {"tombstone": {}}))
                assert isinstance(deleted, KvResult) and deleted.status == "stored" and deleted.gen == 2
                assert deleted.slot is not None and deleted.slot["tombstone"]["by"] == me
                assert served.node.kv.get(me, "k") == (2, Tombstone(deleted.slot["tombstone"]["at"], me))
                listed = await reply_to(peer, KvList(5, me, ""))
                assert listed == KvKeys(5, me, [{"key": "k", "generation": 2, "state": "tombstone"}])
                watched = await reply_to(peer, KvWatch(6, me, ""))
                assert isinstance(listed, KvKeys) and watched == KvKeys(6, me, listed.items)
                await peer.send(KvCas(7, me, "k", 2, present("back")))
                got = await peer.recv_until(lambda m: isinstance(m, KvEvent))
                assert got == [KvResult(7, "stored", 3, present("back")), KvEvent(6, me, "k", 3, present("back"))]
            finally:
                await peer.close()

    run(scenario)


def test_every_refusal_comes_back_with_its_rid_and_changes_nothing() -> None:
    """Another account's slot, an oversized value, a bad key, a stale generation, one watch
    too many: each is answered for its rid, the connection goes on, the store is unchanged."""
    me, alice = BOB.account_id, ALICE.account_id
    too_big = "x" * MAX_SLOT_VALUE_SIZE

    async def scenario() -> None:
        async with serving() as served:
            served.node.kv.cas(alice, "secret", 0, Present("alice's"))
            served.node.kv.cas(me, "mine", 0, Present(1))
            before = (served.node.kv.list(alice), served.node.kv.list(me))
            peer = await raw(served.url, BOB)
            try:
                cases: list[tuple[Message, str]] = [
                    (KvGet(1, alice, "secret"), "kv_access_denied"),
                    (KvCas(2, alice, "secret", 1, present("bob's")), "kv_access_denied"),
                    (KvList(3, alice, ""), "kv_access_denied"),
                    (KvWatch(4, alice, ""), "kv_access_denied"),
                    (KvCas(5, me, "big", 0, present(too_big)), "kv_value_too_large"),
                    (KvGet(6, me, "k" * (MAX_KEY_LENGTH + 1)), "kv_bad_key"),
                    (KvCas(7, me, "nul\x00", 0, present(1)), "kv_bad_key"),
                    (KvList(8, "", ""), "kv_bad_key"),
                ]
                for request, code in cases:
                    reply = await reply_to(peer, request)
                    assert isinstance(reply, KvError), (request, reply)
                    assert (reply.rid, reply.code) == (request.rid, code), reply  # type: ignore[attr-defined]
                stale = await reply_to(peer, KvCas(9, me, "mine", 0, present(2)))
                assert stale == KvResult(9, "conflict", 1, present(1))
                for rid in range(100, 100 + MAX_WATCHES_PER_CONNECTION):
                    await peer.send(KvWatch(rid, me, f"w{rid}"))
                await peer.recv_until(lambda m: getattr(m, "rid", None) == 100 + MAX_WATCHES_PER_CONNECTION - 1)
                over = await reply_to(peer, KvWatch(999, me, "one too many"))
                assert isinstance(over, KvError) and (over.rid, over.code) == (999, "kv_too_many_watches")
                # a message that does not decode has no rid to answer: the frame-level error
                await peer.send_raw(encode_frame(OP, [KvGet(10, me, "k")]).replace(b"kv_get", b"kv_got"))
                assert isinstance(await peer.recv(), Error)
                assert await reply_to(peer, KvGet(11, me, "mine")) == KvValue(11, me, "mine", 1, present(1))
            finally:
                await peer.close()
            assert (served.node.kv.list(alice), served.node.kv.list(me)) == before

    run(scenario)


# -- the client library --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def client(served: Served, key: AccountKey) -> Any:
    kv = await RemoteKV.open(served.url, key, timeout=timeout(5))
    try:
        yield kv
    finally:
        await kv.close()


def test_the_client_reads_writes_deletes_and_pages() -> None:
    async def scenario() -> None:
        async with serving() as served, client(served, ALICE) as kv:
            assert await kv.get("k") == (0, None)
            assert await kv.cas("k", 0, Present({"n": 1})) == Stored(1)
            assert await kv.cas("k", 0, Present({"n": 9})) == Conflict(1, Present({"n": 1}))
            result, stored = await kv.cas_stored("k", 1, Tombstone(0, BOB.account_id))
            assert result == Stored(2)
            assert isinstance(stored, Tombstone) and stored.by == ALICE.account_id, "the node stamps the author"
            assert await kv.get("k") == (2, stored)
            for i in range(MAX_KV_LIST_PAGE + 20):
                served.node.kv.cas(ALICE.account_id, f"many/{i:05}", 0, Present(i))
            listed = await kv.list("many/")
            assert [item["key"] for item in listed] == [f"many/{i:05}" for i in range(MAX_KV_LIST_PAGE + 20)]

    run(scenario)


def test_the_client_raises_each_refusal_typed() -> None:
    async def scenario() -> None:
        async with serving() as served, client(served, BOB) as kv:
            with pytest.raises(KVAccessDenied):
                await kv.get("k", namespace=ALICE.account_id)
            with pytest.raises(KVAccessDenied):
                await kv.watch("", namespace=ALICE.account_id)
            with pytest.raises(KVValueTooLarge):
                await kv.cas("big", 0, Present("x" * MAX_SLOT_VALUE_SIZE))
            with pytest.raises(KVBadKey):
                await kv.get("k" * (MAX_KEY_LENGTH + 1))
            for i in range(MAX_WATCHES_PER_CONNECTION):
                await kv.watch(f"w{i}")
            with pytest.raises(KVTooManyWatches):
                await kv.watch("one more")
            assert await kv.get("k") == (0, None), "the connection goes on"

    run(scenario)


def test_a_watch_sees_changes_made_through_another_connection() -> None:
    """Alice watches ``lists/`` on one connection and writes on another; Bob writes his own
    slots; the operator (an admin) watches Alice's namespace. Each watch gets exactly the
    changes under its prefix, in the order stored."""

    async def scenario() -> None:
        async with serving(admins=[OPERATOR.account_id]) as served:
            served.node.kv.cas(ALICE.account_id, "lists/old", 0, Present("before"))
            async with (
                client(served, ALICE) as watcher,
                client(served, ALICE) as writer,
                client(served, BOB) as bob,
                client(served, OPERATOR) as operator,
            ):
                watch = await watcher.watch("lists/")
                assert watch.initial == [{"key": "lists/old", "generation": 1, "state": "present"}]
                audit = await operator.watch("", namespace=ALICE.account_id)
                await writer.cas("lists/a", 0, Present(1))
                await writer.cas("elsewhere", 0, Present(2))
                await bob.cas("lists/a", 0, Present("bob's"))
                await writer.cas("lists/a", 1, Present(3))
                await writer.cas("lists/a", 1, Present("lost"))  # a conflict: no event
                await writer.cas("lists/old", 1, Tombstone(0, ALICE.account_id))
                seen = [await asyncio.wait_for(watch.next(), timeout(5)) for _ in range(3)]
                assert [(c.key, c.generation, c.slot) for c in seen] == [
                    ("lists/a", 1, Present(1)),
                    ("lists/a", 2, Present(3)),
                    ("lists/old", 2, served.node.kv.get(ALICE.account_id, "lists/old")[1]),
                ]
                all_of_alice = [await asyncio.wait_for(audit.next(), timeout(5)) for _ in range(4)]
                assert [c.key for c in all_of_alice] == ["lists/a", "elsewhere", "lists/a", "lists/old"]
                assert {c.namespace for c in all_of_alice} == {ALICE.account_id}
                # nothing else came in between: the next change each sees is a last marker
                await writer.cas("lists/zz", 0, Present("end"))
                assert (await asyncio.wait_for(watch.next(), timeout(5))).key == "lists/zz"
                assert (await asyncio.wait_for(audit.next(), timeout(5))).key == "lists/zz"
                watch.close()
                with pytest.raises(StopAsyncIteration):
                    await watch.next()

    run(scenario)


def test_watches_end_when_their_connection_goes() -> None:
    """The node forgets a watch with its connection; the client's watch and a request in
    flight end with ``connection_lost`` as soon as the connection closes."""

    async def scenario() -> None:
        async with serving() as served:
            kv = await RemoteKV.open(served.url, ALICE, timeout=timeout(5))
            try:
                watch = await kv.watch("")
                assert served.shell.manager.kv.watch_count() == 1
                served.connection_of(ALICE.account_id).close(4000, "test closes it")
                with pytest.raises(ProtocolError) as info:
                    await asyncio.wait_for(watch.next(), timeout(5))
                assert info.value.code == "connection_lost"
                await until(lambda: served.shell.manager.kv.watch_count() == 0, what="the node to drop the watch")
            finally:
                await kv.close()

    run(scenario)


def test_a_watch_whose_reader_falls_behind_ends_with_lagged() -> None:
    """The client keeps at most MAX_PENDING_EVENTS unread changes of a watch: the reader gets
    every change kept, then ``lagged``, never an unbounded backlog."""

    async def scenario() -> None:
        watch = RemoteWatch(1, ALICE.account_id, "", "out:1")
        for gen in range(1, MAX_PENDING_EVENTS + 2):
            watch._deliver(KvEvent(1, ALICE.account_id, "k", gen, present(gen)))
        got = [(await watch.next()).generation for _ in range(MAX_PENDING_EVENTS)]
        assert got == list(range(1, MAX_PENDING_EVENTS + 1))
        with pytest.raises(ProtocolError) as info:
            await watch.next()
        assert info.value.code == "lagged"

    run(scenario)


def test_read_modify_write_over_the_network_loses_no_update() -> None:
    """Four clients append to one list concurrently through the node: every append lands
    once (conflicts are retried with the value that won)."""

    def append(item: str) -> Any:
        def merge(slot: Slot | None) -> Slot:
            items = slot.value if isinstance(slot, Present) else []
            return Present([*items, item])

        return merge

    async def scenario() -> None:
        async with serving() as served:
            kvs = [await RemoteKV.open(served.url, ALICE, timeout=timeout(5)) for _ in range(4)]
            try:

                async def writer(n: int, kv: RemoteKV) -> None:
                    for i in range(5):
                        await read_modify_write(kv, "list", append(f"{n}.{i}"))

                await asyncio.gather(*(writer(n, kv) for n, kv in enumerate(kvs)))
            finally:
                for kv in kvs:
                    await kv.close()
            generation, slot = served.node.kv.get(ALICE.account_id, "list")
            assert isinstance(slot, Present) and sorted(slot.value) == sorted(
                f"{n}.{i}" for n in range(4) for i in range(5)
            )
            assert generation == 20
            history = served.node.kv.history(ALICE.account_id, "list")
            assert sum(r.outcome == "stored" for r in history) == 20

    run(scenario)


def test_read_modify_write_many_isolates_errors_per_key_and_gives_up_after_eight_attempts() -> None:
    """One key always loses its race (another writer moves it on during every merge), one is
    another account's, one's merge fails, one is fine: each gets its own outcome."""

    async def scenario() -> None:
        async with serving() as served, client(served, ALICE) as kv:
            node_kv = served.node.kv
            me = ALICE.account_id
            merges = {"hot": 0}

            def merge(slot: Slot | None) -> Slot:
                value = slot.value if isinstance(slot, Present) else None
                if value == "hot":
                    merges["hot"] += 1
                    generation, _ = node_kv.get(me, "hot")
                    node_kv.cas(me, "hot", generation, Present("hot"))  # someone else wins first
                    return Present("hot")
                if value == "broken":
                    raise KVBadKey("the merge refuses this one")
                return Present("merged")

            node_kv.cas(me, "hot", 0, Present("hot"))
            node_kv.cas(me, "broken", 0, Present("broken"))
            results = await read_modify_write_many(kv, ["hot", "fine", "broken", "fine", "k" * 2000], merge)
            assert list(results) == ["hot", "fine", "broken", "k" * 2000]
            assert isinstance(results["hot"], CASRetriesExhausted) and merges["hot"] == 8
            assert results["fine"] == (1, Present("merged"))
            assert isinstance(results["broken"], KVBadKey)
            assert isinstance(results["k" * 2000], KVBadKey)
            other = await read_modify_write_many(kv, ["x"], merge, namespace=BOB.account_id)
            assert isinstance(other["x"], KVAccessDenied)
            assert node_kv.get(me, "broken") == (1, Present("broken"))

    run(scenario)


def test_a_node_without_the_feature_is_refused_before_any_request() -> None:
    async def node_of_old(ws: ServerConnection) -> None:
        challenge = Challenge("old-node", b"\x01" * NONCE_SIZE, 2, "0.9", ("sync", "kv_list"))
        await ws.send(encode_frame(OP, [challenge]))
        await ws.recv()
        await ws.send(encode_frame(OP, [Welcome(False)]))
        with contextlib.suppress(Exception):
            await ws.recv()

    async def scenario() -> None:
        async with fake_node(node_of_old) as url:
            with pytest.raises(KintsugiError) as info:
                await RemoteKV.open(url, ALICE, timeout=timeout(5))
            assert info.value.code == "unsupported_op"

    run(scenario)
