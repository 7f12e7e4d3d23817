"""engine.sync.kv_service without an event loop: requests in, messages out, on a MemoryKV.

The rules of the module docstring one by one: namespaces (own; admins read others'), CAS
conditional on the generation (generations only grow, deletes write stamped tombstones),
exactly one reply or ``kv_error`` per request with its rid, watches (first page, events for
every stored change under the prefix from any connection, none for lost races, ended with
their connection, bounded per connection), listings paged and cut to the frame. And through
the SyncManager: the dispatch hook and ``remove_peer``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine import codec
from engine.errors import StorageUnavailable
from engine.ids import AccountID
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present, Slot, Tombstone
from engine.kv.store import MAX_KEY_LENGTH, CASResult, MemoryKV
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, decode_frame, encode_frame
from engine.protocol.limits import DEFAULT_LIMITS
from engine.protocol.messages import (
    MAX_KV_LIST_PAGE,
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
)
from engine.sync.kv_service import MAX_WATCHES_PER_CONNECTION, KvService, slot_from_wire, slot_to_wire
from engine.sync.manager import PeerKind, SyncManager
from tests.engine.factories import T0, account

ALICE, BOB, ADMIN = account(1).account_id, account(2).account_id, account(3).account_id


@dataclass(frozen=True)
class Peer:
    id: str
    account: AccountID
    admin: bool = False


A1, A2 = Peer("in:1", ALICE), Peer("in:2", ALICE)
B = Peer("in:3", BOB)
OP_ = Peer("in:4", ADMIN, admin=True)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(clock: Clock) -> KvService:
    return KvService(MemoryKV(), clock, reply_budget=DEFAULT_LIMITS.max_frame_size - 4096)


def wire(message: Message) -> Message:
    """``message`` as the other side decodes it (every reply must be a valid message)."""
    frame = decode_frame(encode_frame(OP, [message]), max_size=DEFAULT_LIMITS.max_frame_size, max_messages=1)
    assert not frame.errors, frame.errors
    return frame.messages[0]


def ask(service: KvService, peer: Peer, message: Message) -> list[tuple[str, Message]]:
    out = service.handle(peer, wire(message))  # type: ignore[arg-type]
    return [(pid, wire(m)) for pid, m in out]


def only(out: list[tuple[str, Message]], peer: Peer) -> Message:
    """The one message of ``out``, which must be for ``peer``."""
    assert len(out) == 1 and out[0][0] == peer.id, out
    return out[0][1]


def present(value: Any) -> dict[str, Any]:
    return {"present": value}


def cas(service: KvService, peer: Peer, key: str, expect: int, slot: dict[str, Any], *, rid: int = 1) -> Message:
    return only(ask(service, peer, KvCas(rid, peer.account, key, expect, slot)), peer)


# -- get and cas ---------------------------------------------------------------------------


def test_a_key_never_written_is_at_generation_zero(service: KvService) -> None:
    assert only(ask(service, A1, KvGet(4, ALICE, "k")), A1) == KvValue(4, ALICE, "k", 0, None)


def test_cas_stores_at_the_next_generation_and_only_from_the_expected_one(service: KvService) -> None:
    assert cas(service, A1, "k", 0, present([1])) == KvResult(1, "stored", 1, present([1]))
    assert cas(service, A1, "k", 1, present([1, 2]), rid=2) == KvResult(2, "stored", 2, present([1, 2]))
    # a stale generation: nothing stored, the answer carries what won
    assert cas(service, A2, "k", 1, present(["stale"]), rid=3) == KvResult(3, "conflict", 2, present([1, 2]))
    assert cas(service, A2, "k", 7, present(["ahead"]), rid=4) == KvResult(4, "conflict", 2, present([1, 2]))
    assert only(ask(service, A2, KvGet(5, ALICE, "k")), A2) == KvValue(5, ALICE, "k", 2, present([1, 2]))
    assert [r.outcome for r in service.kv.history(ALICE, "k")] == ["stored", "stored", "conflict", "conflict"]


def test_delete_writes_a_tombstone_stamped_by_the_node_and_generations_go_on(service: KvService, clock: Clock) -> None:
    cas(service, A1, "k", 0, present("v"))
    clock.now = T0 + 1234
    stamped = {"tombstone": {"at": T0 + 1234, "by": ALICE}}
    assert cas(service, A1, "k", 1, {"tombstone": {}}, rid=2) == KvResult(2, "stored", 2, stamped)
    assert service.kv.get(ALICE, "k") == (2, Tombstone(T0 + 1234, ALICE))
    assert only(ask(service, A1, KvGet(3, ALICE, "k")), A1) == KvValue(3, ALICE, "k", 2, stamped)
    # no generation reset: the deleted key is written again at 3, never 1
    assert cas(service, A1, "k", 0, present("again"), rid=4) == KvResult(4, "conflict", 2, stamped)
    assert cas(service, A1, "k", 2, present("again"), rid=5) == KvResult(5, "stored", 3, present("again"))


def test_a_client_reaches_only_its_own_namespace(service: KvService) -> None:
    cas(service, A1, "secret", 0, present("alice's"))
    before = service.kv.history(ALICE, "secret")
    for request in (
        KvGet(1, ALICE, "secret"),
        KvCas(2, ALICE, "secret", 1, present("bob's")),
        KvCas(3, ALICE, "secret", 1, {"tombstone": {}}),
        KvList(4, ALICE, ""),
        KvWatch(5, ALICE, ""),
    ):
        reply = only(ask(service, B, request), B)
        assert isinstance(reply, KvError) and reply.code == "kv_access_denied", reply
        assert reply.rid == request.rid  # type: ignore[attr-defined]
    assert service.kv.history(ALICE, "secret") == before
    assert service.watch_count() == 0


def test_an_admin_reads_any_namespace_but_writes_only_its_own(service: KvService) -> None:
    cas(service, A1, "k", 0, present("alice's"))
    assert only(ask(service, OP_, KvGet(1, ALICE, "k")), OP_) == KvValue(1, ALICE, "k", 1, present("alice's"))
    listed = only(ask(service, OP_, KvList(2, ALICE, "")), OP_)
    assert listed == KvKeys(2, ALICE, [{"key": "k", "generation": 1, "state": "present"}])
    assert isinstance(only(ask(service, OP_, KvWatch(3, ALICE, "")), OP_), KvKeys)
    refused = only(ask(service, OP_, KvCas(4, ALICE, "k", 1, present("admin's"))), OP_)
    assert isinstance(refused, KvError) and refused.code == "kv_access_denied"
    assert service.kv.get(ALICE, "k") == (1, Present("alice's"))
    assert cas(service, OP_, "own", 0, present(1), rid=5) == KvResult(5, "stored", 1, present(1))


@pytest.mark.parametrize(
    ("namespace", "key"),
    [
        (ALICE, "k" * (MAX_KEY_LENGTH + 1)),
        (ALICE, "nul\x00key"),
        ("", "k"),
    ],
)
def test_bad_keys_are_refused_with_their_rid(service: KvService, namespace: str, key: str) -> None:
    peer = Peer("in:9", AccountID(namespace) if namespace else ALICE)
    for request in (KvGet(7, namespace, key), KvCas(8, namespace, key, 0, present(1)), KvWatch(9, namespace, key)):
        reply = only(ask(service, peer, request), peer)
        assert isinstance(reply, KvError) and reply.code == "kv_bad_key", reply
        assert reply.rid == request.rid
    assert service.kv.list(ALICE) == []


def test_an_oversized_value_is_refused_and_nothing_is_stored(service: KvService) -> None:
    just_fits = "x" * (MAX_SLOT_VALUE_SIZE - len(codec.encode(present(""))) - 2)
    assert len(codec.encode(present(just_fits))) <= MAX_SLOT_VALUE_SIZE
    assert isinstance(cas(service, A1, "big", 0, present(just_fits)), KvResult)
    too_big = just_fits + "xyz"
    reply = cas(service, A1, "big", 1, present(too_big), rid=2)
    assert isinstance(reply, KvError) and reply.code == "kv_value_too_large"
    assert service.kv.get(ALICE, "big") == (1, Present(just_fits))


def test_a_store_failure_is_a_refusal_with_the_store_code(service: KvService) -> None:
    class FullDisk(MemoryKV):
        def cas(self, namespace: str, key: str, expected_gen: int, slot: Slot) -> CASResult:
            raise StorageUnavailable("the disk is full")

    service.kv = FullDisk()
    reply = cas(service, A1, "k", 0, present(1), rid=3)
    assert reply == KvError(3, "storage_unavailable", "the disk is full")


def test_a_generation_beyond_the_envelope_range_is_refused(service: KvService) -> None:
    reply = cas(service, A1, "k", 2**63 - 1, present(1))
    assert isinstance(reply, KvError) and reply.code == "invalid_envelope"


# -- listing -------------------------------------------------------------------------------


def test_listings_are_sorted_paged_and_carry_no_values(service: KvService) -> None:
    for i in range(5):
        cas(service, A1, f"p/{i}", 0, present(f"secret {i}"))
    cas(service, A1, "q", 0, present("other"))
    cas(service, A1, "p/3", 1, {"tombstone": {}})
    first = only(ask(service, A1, KvList(1, ALICE, "p/", None, 2)), A1)
    assert first == KvKeys(
        1,
        ALICE,
        [{"key": "p/0", "generation": 1, "state": "present"}, {"key": "p/1", "generation": 1, "state": "present"}],
        more=True,
    )
    rest = only(ask(service, A1, KvList(2, ALICE, "p/", "p/1", 10)), A1)
    assert isinstance(rest, KvKeys) and not rest.more
    assert [(i["key"], i["state"]) for i in rest.items] == [
        ("p/2", "present"),
        ("p/3", "tombstone"),
        ("p/4", "present"),
    ]
    assert "secret" not in repr(first) + repr(rest)


def test_a_listing_is_cut_to_the_page_and_to_the_frame(clock: Clock) -> None:
    kv = MemoryKV()
    for i in range(MAX_KV_LIST_PAGE + 5):
        kv.cas(ALICE, f"{i:05}", 0, Present(i))
    paged = KvService(kv, clock, reply_budget=10**9)
    page = only(ask(paged, A1, KvList(1, ALICE, "")), A1)
    assert isinstance(page, KvKeys) and len(page.items) == MAX_KV_LIST_PAGE and page.more
    tight = KvService(kv, clock, reply_budget=2000)
    cut = only(ask(tight, A1, KvList(2, ALICE, "")), A1)
    assert isinstance(cut, KvKeys) and cut.more
    assert 0 < len(cut.items) < 100 and len(codec.encode(cut.items)) <= 2000


# -- watches -------------------------------------------------------------------------------


def test_a_watch_sees_every_stored_change_under_its_prefix_from_any_connection(service: KvService) -> None:
    cas(service, A1, "lists/a", 0, present(1))
    first = only(ask(service, A1, KvWatch(10, ALICE, "lists/")), A1)
    assert first == KvKeys(10, ALICE, [{"key": "lists/a", "generation": 1, "state": "present"}])

    out = ask(service, A2, KvCas(1, ALICE, "lists/b", 0, present(2)))
    assert out == [
        (A2.id, KvResult(1, "stored", 1, present(2))),
        (A1.id, KvEvent(10, ALICE, "lists/b", 1, present(2))),
    ]
    # the watcher's own write: its result first, then its event
    out = ask(service, A1, KvCas(2, ALICE, "lists/a", 1, {"tombstone": {}}))
    tombstone = {"tombstone": {"at": T0, "by": ALICE}}
    assert out == [
        (A1.id, KvResult(2, "stored", 2, tombstone)),
        (A1.id, KvEvent(10, ALICE, "lists/a", 2, tombstone)),
    ]
    # lost races, other prefixes and other namespaces make no event
    assert ask(service, A2, KvCas(3, ALICE, "lists/b", 0, present(3))) == [
        (A2.id, KvResult(3, "conflict", 1, present(2)))
    ]
    assert len(ask(service, A2, KvCas(4, ALICE, "other", 0, present(4)))) == 1
    assert len(ask(service, B, KvCas(5, BOB, "lists/b", 0, present(5)))) == 1


def test_an_admin_watches_another_namespace_and_several_watches_each_get_their_event(service: KvService) -> None:
    ask(service, OP_, KvWatch(1, ALICE, ""))
    ask(service, A2, KvWatch(2, ALICE, "l"))
    ask(service, A2, KvWatch(3, ALICE, "lists/"))
    out = ask(service, A1, KvCas(9, ALICE, "lists/x", 0, present("x")))
    assert [(pid, type(m).__name__, getattr(m, "rid", None)) for pid, m in out] == [
        (A1.id, "KvResult", 9),
        (OP_.id, "KvEvent", 1),
        (A2.id, "KvEvent", 2),
        (A2.id, "KvEvent", 3),
    ]


def test_watches_end_with_their_connection_and_are_bounded_per_connection(service: KvService) -> None:
    for rid in range(MAX_WATCHES_PER_CONNECTION):
        assert isinstance(only(ask(service, A1, KvWatch(rid, ALICE, f"w{rid}")), A1), KvKeys)
    over = only(ask(service, A1, KvWatch(999, ALICE, "x")), A1)
    assert isinstance(over, KvError) and over.code == "kv_too_many_watches" and over.rid == 999
    again = only(ask(service, A2, KvWatch(0, ALICE, "w0")), A2)
    assert isinstance(again, KvKeys), "the limit is per connection"
    duplicate = only(ask(service, A2, KvWatch(0, ALICE, "y")), A2)
    assert isinstance(duplicate, KvError) and duplicate.code == "invalid_message"
    assert service.watch_count(A1.id) == MAX_WATCHES_PER_CONNECTION and service.watch_count(A2.id) == 1

    service.drop_peer(A1.id)
    assert service.watch_count(A1.id) == 0 and service.watch_count() == 1
    out = ask(service, B, KvCas(1, BOB, "w0", 0, present(0)))  # another namespace: no event
    assert len(out) == 1
    out = ask(service, OP_, KvCas(2, ADMIN, "w0", 0, present(0)))
    assert len(out) == 1
    out = ask(service, A2, KvCas(3, ALICE, "w0", 0, present(0)))
    assert [pid for pid, _m in out] == [A2.id, A2.id], "only the live connection's watch hears it"
    service.drop_peer(A2.id)
    assert service.watch_count() == 0
    assert len(ask(service, A2, KvCas(4, ALICE, "w0", 1, present(1)))) == 1


def test_slots_cross_the_wire_unchanged() -> None:
    for slot in (None, Present({"a": [1, b"\x00"]}), Tombstone(T0, ALICE)):
        assert slot_from_wire(slot_to_wire(slot)) == slot


# -- through the sync manager --------------------------------------------------------------


@pytest.fixture
def node() -> Iterator[LocalNode]:
    replica = LocalNode(account(5), clock_ms=lambda: T0)
    yield replica
    replica.close()


def test_the_manager_routes_kv_requests_and_ends_watches_with_the_peer(node: LocalNode) -> None:
    manager = SyncManager(node)
    try:
        manager.add_peer("alice-1", PeerKind.DOWNSTREAM, ALICE)
        manager.add_peer("alice-2", PeerKind.DOWNSTREAM, ALICE)
        manager.drain()
        manager.receive("alice-1", KvWatch(1, ALICE, ""))
        manager.receive("alice-2", KvCas(2, ALICE, "k", 0, present("v")))
        assert manager.drain() == [
            ("alice-1", KvKeys(1, ALICE, [])),
            ("alice-2", KvResult(2, "stored", 1, present("v"))),
            ("alice-1", KvEvent(1, ALICE, "k", 1, present("v"))),
        ]
        assert node.kv.get(ALICE, "k") == (1, Present("v"))
        manager.remove_peer("alice-1")
        assert manager.kv.watch_count() == 0
        manager.receive("alice-2", KvCas(3, ALICE, "k", 1, present("w")))
        assert manager.drain() == [("alice-2", KvResult(3, "stored", 2, present("w")))]
    finally:
        manager.close()


def test_replies_reach_the_requesting_side(node: LocalNode) -> None:
    manager = SyncManager(node)
    heard: list[tuple[str, Message]] = []
    manager.on_reply = lambda peer, message: heard.append((peer, message))
    try:
        manager.add_peer("up", PeerKind.UPSTREAM, ADMIN)
        replies = [
            KvValue(1, ALICE, "k", 0, None),
            KvResult(2, "conflict", 1, present(1)),
            KvKeys(3, ALICE, []),
            KvEvent(4, ALICE, "k", 2, present(2)),
            KvError(5, "kv_bad_key", "too long"),
        ]
        for reply in replies:
            manager.receive("up", reply)
        assert heard == [("up", reply) for reply in replies]
    finally:
        manager.close()
