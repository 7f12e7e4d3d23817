"""Admin requests in the sans-I/O sync core: ``peers`` (with the peer log), ``kv_slot`` and
``events`` — who may ask, what a refusal looks like, and that every reply fits in a frame.

No event loop and no sockets: a :class:`SyncManager` over an in-memory LocalNode, fed
``admin`` messages with :meth:`SyncManager.receive` and drained.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import codec
from engine.crypto import AccountKey
from engine.ids import AccountID
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present, Tombstone
from engine.kv.store import KV_LOG_KEEP_PER_KEY, Conflict, Stored
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, encode_frame
from engine.protocol.limits import Limits
from engine.protocol.messages import MAX_ADMIN_EVENTS, MAX_ADMIN_HISTORY, Admin, AdminResult, Message
from engine.sync.admin import first_within, newest_within
from engine.sync.events import EVENT_RING_SIZE, SyncEvent
from engine.sync.manager import PeerKind, SyncManager
from tests.engine.factories import covalue_id
from tests.engine.sync.sim import NODE, Faults, Simulation

CLOCK = 1_700_000_123_456
ADMIN, USER = "admin#1", "user#1"


class Harness:
    """A node (fixed clock) with one admin and one ordinary downstream peer."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.clock = CLOCK
        self.node = LocalNode(AccountKey.generate(), clock_ms=lambda: self.clock)
        self.manager = SyncManager(self.node, limits=limits or Limits())
        self.admin = AccountKey.generate().account_id
        self.user = AccountKey.generate().account_id
        self.manager.add_peer(ADMIN, PeerKind.DOWNSTREAM, self.admin, admin=True)
        self.manager.add_peer(USER, PeerKind.DOWNSTREAM, self.user)
        self.manager.drain()
        self._rid = 0

    def ask(self, peer: str, op: str, args: dict[str, Any] | None = None) -> AdminResult:
        """Send ``admin{op, args}`` from ``peer``; the one reply (checked to fit a frame)."""
        self._rid += 1
        self.manager.receive(peer, Admin(self._rid, op, args or {}))
        out = self.manager.drain()
        assert [p for p, _ in out] == [peer], out
        reply = out[0][1]
        assert isinstance(reply, AdminResult) and reply.rid == self._rid
        assert len(encode_frame(OP, [reply])) <= self.manager.limits.max_frame_size
        return reply

    def event(self, n: int = 0) -> None:
        """A sync event, as the manager records its own (``fork_detected`` numbered ``n``)."""
        peer = self.manager.peers[USER]
        covalue = covalue_id("events")
        self.manager._event("fork_detected", peer, covalue, None, f"event {n}")

    def close(self) -> None:
        self.manager.close()
        self.node.close()


@pytest.fixture
def harness() -> Any:
    h = Harness()
    yield h
    h.close()


def refused(reply: Message) -> str:
    assert isinstance(reply, AdminResult) and not reply.ok, reply
    assert isinstance(reply.result, dict) and reply.result["detail"]
    return str(reply.result["code"])


# -- who may ask --------------------------------------------------------------------------


def test_non_admins_are_refused_with_stable_codes(harness: Harness) -> None:
    """``peers`` and ``events`` are for admins; ``kv_slot`` reaches the caller's own namespace
    only. Each refusal is one ``admin_result{ok: false, code, detail}`` with the request's rid."""
    harness.manager.peers_report = lambda: []
    harness.node.kv.cas(harness.admin, "secret", 0, Present("admin's"))
    assert refused(harness.ask(USER, "peers")) == "permission_denied"
    assert refused(harness.ask(USER, "events")) == "permission_denied"
    assert refused(harness.ask(USER, "kv_slot", {"namespace": harness.admin, "key": "secret"})) == "kv_access_denied"
    harness.node.kv.cas(harness.user, "mine", 0, Present([1, 2]))
    own = harness.ask(USER, "kv_slot", {"namespace": harness.user, "key": "mine"})
    assert own.ok and own.result["value"] == [1, 2]
    assert harness.ask(ADMIN, "kv_slot", {"namespace": harness.admin, "key": "secret"}).result["value"] == "admin's"


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("kv_slot", {}),
        ("kv_slot", {"namespace": 5, "key": "k"}),
        ("kv_slot", {"namespace": "n", "key": b"k"}),
        ("kv_slot", {"namespace": "n", "key": "k", "history": -1}),
        ("kv_slot", {"namespace": "n", "key": "k", "history": MAX_ADMIN_HISTORY + 1}),
        ("kv_slot", {"namespace": "n", "key": "k", "history": True}),
        ("kv_slot", {"namespace": "n", "key": "k", "surprise": 1}),
        ("events", {"after": -1}),
        ("events", {"after": "0"}),
        ("events", {"limit": 0}),
        ("events", {"limit": MAX_ADMIN_EVENTS + 1}),
        ("events", {"cursor": 3}),
    ],
)
def test_malformed_arguments_are_refused_and_change_nothing(harness: Harness, op: str, args: dict[str, Any]) -> None:
    """Bad arguments get ``invalid_message`` (still with the rid, so the asker is not left
    waiting), nothing changes, and the next good request is answered."""
    harness.event()
    before = (list(harness.manager.events), harness.manager.event_seq, harness.node.kv.list(harness.admin))
    assert refused(harness.ask(ADMIN, op, args)) == "invalid_message"
    assert (list(harness.manager.events), harness.manager.event_seq, harness.node.kv.list(harness.admin)) == before
    assert harness.ask(ADMIN, "events").ok


def test_a_bad_key_is_a_kv_error_not_a_crash(harness: Harness) -> None:
    """A key the store refuses (over its length limit) is refused with the store's code."""
    assert refused(harness.ask(ADMIN, "kv_slot", {"namespace": harness.admin, "key": "k" * 1500})) == "kv"


def test_peers_without_a_report_hook_is_unsupported(harness: Harness) -> None:
    """A manager no shell reports peers for (the simulator's) says so instead of pretending."""
    assert refused(harness.ask(ADMIN, "peers")) == "unsupported_op"


# -- peers and the peer log ---------------------------------------------------------------


def test_peers_reply_carries_the_log_newest_within_the_frame() -> None:
    """``peers`` answers ``{peers, log, log_dropped}``; a log too long for the frame keeps its
    newest entries."""
    h = Harness(Limits(max_frame_size=8 * 1024))
    try:
        log = [
            {"at_ms": i, "peer_id": f"in:{i}:acc_z", "event": "up", "close_code": None, "lagged": False}
            for i in range(500)
        ]
        h.manager.peers_report = lambda: [{"peer_id": "in:1"}]
        h.manager.peer_log_report = lambda: log
        result = h.ask(ADMIN, "peers").result
        assert result["peers"] == [{"peer_id": "in:1"}]
        kept = result["log"]
        assert 0 < len(kept) < 500 and result["log_dropped"] == 500 - len(kept)
        assert kept == log[-len(kept) :]
    finally:
        h.close()


def test_newest_within_keeps_the_tail_and_first_within_the_head() -> None:
    items = list(range(100))
    assert newest_within(items, 10**6) == first_within(items, 10**6) == (items, 0)
    kept, dropped = newest_within(items, 20)
    assert kept == items[-len(kept) :] and dropped == 100 - len(kept) and 0 < len(kept) < 100
    kept, dropped = first_within(items, 20)
    assert kept == items[: len(kept)] and dropped == 100 - len(kept) and 0 < len(kept) < 100
    assert newest_within(items, 0) == first_within(items, 0) == ([], 100)


def test_a_huge_peers_table_is_cut_to_the_frame() -> None:
    h = Harness(Limits(max_frame_size=4 * 1024))
    try:
        h.manager.peers_report = lambda: [{"peer_id": f"in:{i}", "account": "acc_z" + "x" * 40} for i in range(500)]
        result = h.ask(ADMIN, "peers").result
        assert 0 < len(result["peers"]) < 500 and result["peers_dropped"] == 500 - len(result["peers"])
        assert result["peers"][0]["peer_id"] == "in:0"
    finally:
        h.close()


# -- kv_slot --------------------------------------------------------------------------------


def test_kv_slot_sends_value_and_history_with_lost_races(harness: Harness) -> None:
    """A slot's value, generation and its CAS records oldest first, lost races included."""
    kv, ns = harness.node.kv, harness.admin
    assert kv.cas(ns, "prefs", 0, Present({"theme": "dark"})) == Stored(1)
    assert isinstance(kv.cas(ns, "prefs", 0, Present({"theme": "light"})), Conflict)  # a lost race
    assert kv.cas(ns, "prefs", 1, Present({"theme": "light"})) == Stored(2)
    result = harness.ask(ADMIN, "kv_slot", {"namespace": ns, "key": "prefs"}).result
    assert (result["state"], result["generation"], result["value"]) == ("present", 2, {"theme": "light"})
    assert result["value_omitted"] is False and result["history_dropped"] == 0
    assert [(r["expected_gen"], r["outcome"], r["generation"]) for r in result["history"]] == [
        (0, "stored", 1),
        (0, "conflict", 1),
        (1, "stored", 2),
    ]
    times = [r["at_ms"] for r in result["history"]]
    assert times == sorted(times) and times[0] > 0  # the store's own clock

    assert kv.cas(ns, "prefs", 2, Tombstone(CLOCK + 9, AccountID(ns))) == Stored(3)
    gone = harness.ask(ADMIN, "kv_slot", {"namespace": ns, "key": "prefs", "history": 1}).result
    assert (gone["state"], gone["deleted_at"], gone["deleted_by"]) == ("tombstone", CLOCK + 9, ns)
    assert "value" not in gone and len(gone["history"]) == 1 and gone["history_dropped"] == 3
    never = harness.ask(ADMIN, "kv_slot", {"namespace": ns, "key": "never"}).result
    assert (never["state"], never["generation"], never["history"]) == ("absent", 0, [])


def test_kv_slot_reply_is_bounded_by_the_frame() -> None:
    """With frames smaller than a value plus a full history, the value is left out (its size
    still given) and the oldest records go; the reply fits the frame. With the default
    frames the same slot travels whole."""
    big_value = "v" * (MAX_SLOT_VALUE_SIZE - 64)
    attempts = KV_LOG_KEEP_PER_KEY
    for limits, whole in ((Limits(max_frame_size=16 * 1024), False), (Limits(), True)):
        h = Harness(limits)
        try:
            ns = h.admin
            for gen in range(attempts // 2):
                assert h.node.kv.cas(ns, "big", gen, Present(gen)) == Stored(gen + 1)
                assert isinstance(h.node.kv.cas(ns, "big", gen, Present("loser")), Conflict)
            assert h.node.kv.cas(ns, "big", attempts // 2, Present(big_value)) == Stored(attempts // 2 + 1)
            result = h.ask(ADMIN, "kv_slot", {"namespace": ns, "key": "big"}).result
            assert result["value_size"] == len(codec.encode(big_value))
            assert result["value_omitted"] is not whole
            assert result.get("value") == (big_value if whole else None)
            kept = len(result["history"])
            assert kept + result["history_dropped"] == KV_LOG_KEEP_PER_KEY  # what the store keeps
            assert (kept == KV_LOG_KEEP_PER_KEY) is whole and kept > 0
            assert result["history"][-1]["generation"] == attempts // 2 + 1  # the newest are kept
            assert len(codec.encode(result)) <= limits.max_frame_size
        finally:
            h.close()


# -- events ---------------------------------------------------------------------------------


def test_events_are_stamped_with_the_host_clock_and_read_by_cursor(harness: Harness) -> None:
    """Each event carries the host's clock; ``events{after}`` returns those numbered above
    the cursor, oldest first, with the epoch and the numbers kept."""
    for n in range(3):
        harness.clock = CLOCK + n
        harness.event(n)
    assert [e.at_ms for e in harness.manager.events] == [CLOCK, CLOCK + 1, CLOCK + 2]
    result = harness.ask(ADMIN, "events").result
    assert (result["epoch"], result["first"], result["last"], result["more"]) == (CLOCK, 1, 3, False)
    assert [(e["seq"], e["detail"], e["at_ms"]) for e in result["events"]] == [
        (1, "event 0", CLOCK),
        (2, "event 1", CLOCK + 1),
        (3, "event 2", CLOCK + 2),
    ]
    assert SyncEvent.from_json(result["events"][0]) == harness.manager.events[0]
    later = harness.ask(ADMIN, "events", {"after": 2}).result
    assert [e["seq"] for e in later["events"]] == [3]
    assert harness.ask(ADMIN, "events", {"after": 3}).result["events"] == []
    page = harness.ask(ADMIN, "events", {"after": 0, "limit": 2}).result
    assert [e["seq"] for e in page["events"]] == [1, 2] and page["more"] is True


def test_the_event_ring_is_bounded_and_says_what_was_dropped(harness: Harness) -> None:
    """The manager keeps the last EVENT_RING_SIZE events; a reader behind them learns from
    ``first`` how many it missed, and reads on from the oldest kept."""
    for n in range(EVENT_RING_SIZE + 30):
        harness.event(n)
    assert len(harness.manager.events) == EVENT_RING_SIZE and harness.manager.event_seq == EVENT_RING_SIZE + 30
    result = harness.ask(ADMIN, "events", {"after": 5}).result
    assert result["first"] == 31 and result["last"] == EVENT_RING_SIZE + 30
    assert [e["seq"] for e in result["events"]][:2] == [31, 32] and len(result["events"]) == MAX_ADMIN_EVENTS
    assert result["events"][0]["detail"] == "event 30" and result["more"] is True


def test_events_reply_is_bounded_by_the_frame() -> None:
    h = Harness(Limits(max_frame_size=4 * 1024))
    try:
        for n in range(100):
            h.event(n)
        result = h.ask(ADMIN, "events").result
        assert 0 < len(result["events"]) < 100 and result["more"] is True
        assert len(codec.encode(result)) <= 4 * 1024
    finally:
        h.close()


def test_sync_event_wire_shape_rejects_garbage() -> None:
    good = SyncEvent("fork_detected", "in:1", covalue_id("wire"), None, "x", 5).to_json()
    assert SyncEvent.from_json(good).at_ms == 5
    for bad in ([], {**good, "kind": 1}, {**good, "covalue": "nope"}, {**good, "at_ms": -1}, {**good, "session": "s"}):
        with pytest.raises(Exception) as info:
            SyncEvent.from_json(bad)
        assert getattr(info.value, "code", None) in ("invalid_message", "invalid_id")


def test_simulated_forks_are_stamped_with_the_simulated_clock() -> None:
    """The node's fork events in the simulator carry its fake clock, not the wall clock."""
    stamped = 0
    for seed in range(40):
        sim = Simulation(seed, faults=Faults(drop=0.1, partition=0.03))
        start = sim.clock
        for _ in range(200):
            sim.step()
        sim.heal()
        events = list(sim.managers[NODE].events)
        assert all(start <= e.at_ms <= sim.clock for e in events), seed
        stamped += len(events)
        if stamped:
            break
    assert stamped, "no seed produced a fork: the tabs should fork their shared session"
