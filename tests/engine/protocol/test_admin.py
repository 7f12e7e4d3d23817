"""The admin requests' arguments and reply shapes (docs/protocol.md, "Admin requests"):
``admin_args`` checks each op's arguments, the reply builders and readers agree, and old and
new peers understand each other (an old node's reply, a new node's extra fields)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.crypto import AccountKey
from engine.errors import ProtocolError
from engine.kv.detail import SlotDetail, slot_detail_from_json, slot_detail_json
from engine.kv.envelope import Present, Tombstone
from engine.kv.store import CASRecord
from engine.protocol.messages import (
    MAX_ADMIN_EVENTS,
    MAX_ADMIN_HISTORY,
    Admin,
    AdminResult,
    EventsArgs,
    KvSlotArgs,
    NoArgs,
    admin_args,
    decode_message,
)
from engine.sync.events import PeerLogEntry, peer_log_from_json, peer_log_json
from engine.sync.peers import PeerInfo, peer_info_from_json


def wire(message: Admin | AdminResult) -> Any:
    return decode_message(codec.decode(codec.encode(message.to_obj()), require_canonical=True))


def test_builders_round_trip_to_checked_arguments() -> None:
    """What a client builds is what a node reads, defaults included."""
    request = wire(Admin.kv_slot(3, "acc_zX", "prefs/recent", 10))
    assert admin_args(request) == KvSlotArgs("acc_zX", "prefs/recent", 10)
    assert admin_args(Admin(4, "kv_slot", {"namespace": "n", "key": "k"})) == KvSlotArgs("n", "k", MAX_ADMIN_HISTORY)
    assert admin_args(wire(Admin.events(5, after=17, limit=3))) == EventsArgs(17, 3)
    assert admin_args(Admin(6, "events", {})) == EventsArgs(0, MAX_ADMIN_EVENTS)


@pytest.mark.parametrize("op", ["list", "peers"])
def test_old_ops_ignore_their_arguments(op: str) -> None:
    """``list`` and ``peers`` never had arguments; whatever an old client sends is ignored."""
    assert admin_args(Admin(1, op, {"anything": [1, 2]})) == NoArgs()


@pytest.mark.parametrize(
    "args",
    [{}, {"namespace": "n"}, {"namespace": "n", "key": "k", "extra": 0}, {"namespace": "n" * 2001, "key": "k"}],
)
def test_bad_kv_slot_arguments(args: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        admin_args(Admin(1, "kv_slot", args))
    assert info.value.code == "invalid_message"


def test_an_old_decoder_reads_the_new_ops_as_admin_messages() -> None:
    """Decoding stays as lenient as before (op known, args a map): the node, not the decoder,
    refuses bad arguments, so the reply can carry the rid."""
    message = wire(Admin(9, "kv_slot", {"namespace": 1}))
    assert isinstance(message, Admin) and message.rid == 9
    with pytest.raises(ProtocolError):
        wire(Admin(9, "drop_everything", {}))


# -- peers --------------------------------------------------------------------------------


def test_peer_log_round_trips_and_tolerates_other_versions() -> None:
    entries = [PeerLogEntry(1, "in:1:acc_z", "up"), PeerLogEntry(2, "in:1:acc_z", "down", 4412, True)]
    assert peer_log_from_json(codec.decode(codec.encode(peer_log_json(entries)))) == entries
    odd: list[Any] = [
        {"at_ms": 3, "peer_id": "in:2", "event": "down", "close_code": None, "lagged": False, "new_field": 1},
        {"peer_id": "in:3", "event": "up"},  # fields missing: neutral values
        "not an entry",
        {"peer_id": 7, "event": "up"},
    ]
    assert peer_log_from_json(odd) == [PeerLogEntry(3, "in:2", "down"), PeerLogEntry(0, "in:3", "up")]
    assert peer_log_from_json("garbage") == []


def test_peer_rows_ignore_unknown_fields() -> None:
    row = PeerInfo("in:1", "in", "acc_z", "downstream", True, 2, 3, 4, 5, 6).to_json()
    assert peer_info_from_json({**row, "future": "x"}) == PeerInfo(**row)
    assert peer_info_from_json({"peer_id": "in:9"}).behind == 0


# -- kv_slot --------------------------------------------------------------------------------


def records(n: int, ns: str = "ns", key: str = "k") -> list[CASRecord]:
    return [
        CASRecord(ns, key, 1000 + i, i, "conflict" if i % 3 == 2 else "stored", i + 1, "tab-1" if i % 2 else None)
        for i in range(n)
    ]


values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20), lambda c: st.lists(c, max_size=4)
)


@given(values)
def test_slot_detail_round_trips(value: Any) -> None:
    """A present slot with its history comes back as the same row and records."""
    history = records(5)
    sent = slot_detail_json("ns", "k", 5, Present(value), history, max_records=256, max_bytes=1 << 20)
    obj = codec.decode(codec.encode(sent))
    detail = slot_detail_from_json(obj)
    assert detail == SlotDetail(detail.row, history, 0, False)
    assert (detail.row.generation, detail.row.present, detail.row.value) == (5, True, value)


def test_slot_detail_of_a_tombstone_and_of_an_absent_key() -> None:
    by = AccountKey.generate().account_id
    gone = slot_detail_from_json(slot_detail_json("ns", "k", 4, Tombstone(77, by), [], max_records=0, max_bytes=4096))
    assert (gone.row.present, gone.row.deleted_at, gone.row.deleted_by, gone.history) == (False, 77, by, [])
    never = slot_detail_from_json(slot_detail_json("ns", "k", 0, None, records(1), max_records=5, max_bytes=4096))
    assert (never.row.generation, never.row.present, len(never.history)) == (0, False, 1)


def test_slot_detail_keeps_the_newest_records_within_limits() -> None:
    history = records(100)
    few = slot_detail_json("ns", "k", 100, Present(1), history, max_records=10, max_bytes=1 << 20)
    assert [r["expected_gen"] for r in few["history"]] == list(range(90, 100)) and few["history_dropped"] == 90
    small = slot_detail_json("ns", "k", 100, Present("x" * 3000), history, max_records=100, max_bytes=2048)
    assert small["value_omitted"] is True and "value" not in small and small["value_size"] > 3000
    assert small["history"] and small["history"][-1]["expected_gen"] == 99
    assert len(codec.encode(small)) <= 2048
    omitted = slot_detail_from_json(small)
    assert omitted.value_omitted and "too large to send" in omitted.row.value


@pytest.mark.parametrize(
    "change",
    [
        {"state": "gone"},
        {"generation": -1},
        {"key": 5},
        {"history": {}},
        {"history": [{"at_ms": 1, "expected_gen": 0, "outcome": "won", "generation": 1, "writer": None}]},
        {"history": [{"at_ms": "1", "expected_gen": 0, "outcome": "stored", "generation": 1, "writer": None}]},
        {"history": [{"at_ms": 1, "expected_gen": 0, "outcome": "stored", "generation": 1, "writer": 3}]},
        {"state": "tombstone", "deleted_at": 1, "deleted_by": "acc_znope"},
    ],
)
def test_a_malformed_slot_detail_is_refused(change: dict[str, Any]) -> None:
    good = slot_detail_json("ns", "k", 1, Present(1), records(1), max_records=5, max_bytes=4096)
    with pytest.raises(ProtocolError) as info:
        slot_detail_from_json({**good, **change})
    assert info.value.code == "invalid_message"
