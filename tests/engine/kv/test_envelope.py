from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import encode
from engine.errors import InvalidEnvelope
from engine.ids import AccountID, account_id_from_public_key
from engine.kv.envelope import (
    MAX_GENERATION,
    MAX_SLOT_VALUE_SIZE,
    Present,
    Slot,
    Tombstone,
    decode_envelope,
    encode_envelope,
)

ZERO_ACCOUNT = AccountID("acc_z" + "1" * 32)  # base58 of 32 zero bytes


# -- known bytes -------------------------------------------------------------------------


def test_present_bytes_by_hand() -> None:
    expected = bytes.fromhex(
        "01"  # envelope version 1
        "0200000000000000"  # generation 2, u64 little-endian
        "a1"  # CBOR map, 1 entry
        "67" + b"present".hex() + "01"  # "present": 1
    )
    assert encode_envelope(2, Present(1)) == expected
    assert decode_envelope(expected) == (2, Present(1))


def test_generation_is_little_endian() -> None:
    data = encode_envelope(0x0102030405060708, Present(None))
    assert data[:9] == bytes.fromhex("010807060504030201")
    assert data[9:] == bytes.fromhex("a167" + b"present".hex() + "f6")


def test_tombstone_bytes_by_hand() -> None:
    expected = bytes.fromhex(
        "01"
        "ff00000000000000"  # generation 255
        "a1"
        "69" + b"tombstone".hex() + "a2"  # "tombstone": {2 entries}
        "62" + b"at".hex() + "1903e8"  # "at": 1000
        "62" + b"by".hex() + "7825" + ZERO_ACCOUNT.encode().hex()  # "by": 37-char text
    )
    assert encode_envelope(255, Tombstone(1000, ZERO_ACCOUNT)) == expected
    assert decode_envelope(expected) == (255, Tombstone(1000, ZERO_ACCOUNT))


# -- round trip --------------------------------------------------------------------------

cbor_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8) | st.integers(-100, 100), children, max_size=5)
    ),
    max_leaves=20,
)
accounts = st.binary(min_size=32, max_size=32).map(account_id_from_public_key)
slots: st.SearchStrategy[Slot] = cbor_values.map(Present) | st.builds(
    Tombstone, st.integers(0, 2**63 - 1), accounts
)
generations = st.integers(1, MAX_GENERATION)


@given(generations, slots)
def test_round_trip(generation: int, slot: Slot) -> None:
    data = encode_envelope(generation, slot)
    assert decode_envelope(data) == (generation, slot)
    # Equal is not enough (0.0 == -0.0 == False): the bytes must survive too.
    assert encode_envelope(*decode_envelope(data)) == data


# -- malformed input ---------------------------------------------------------------------


def _raw(generation: int, payload: Any, version: int = 1) -> bytes:
    return struct.pack("<BQ", version, generation) + encode(payload)


GOOD = encode_envelope(1, Present("x"))
MALFORMED: dict[str, Any] = {
    "empty": b"",
    "version only": b"\x01",
    "header only": GOOD[:9],
    "truncated payload": GOOD[:-1],
    "version 0": b"\x00" + GOOD[1:],
    "version 2": b"\x02" + GOOD[1:],
    "generation 0": _raw(0, {"present": 1}),
    "generation 2**63": _raw(2**63, {"present": 1}),
    "generation 2**64-1": _raw(2**64 - 1, {"present": 1}),
    "not CBOR": GOOD[:9] + b"\xff",
    "trailing bytes": GOOD + b"\x00",
    "non-canonical int": GOOD[:9] + bytes.fromhex("a167") + b"present" + bytes.fromhex("1801"),
    "indefinite map": GOOD[:9] + bytes.fromhex("bf67") + b"present" + bytes.fromhex("01ff"),
    "payload a list": _raw(1, ["present", 1]),
    "payload a string": _raw(1, "present"),
    "empty map": _raw(1, {}),
    "two keys": _raw(1, {"present": 1, "tombstone": {"at": 1, "by": ZERO_ACCOUNT}}),
    "extra key": _raw(1, {"present": 1, "x": 2}),
    "unknown key": _raw(1, {"absent": 1}),
    "bytes key": _raw(1, {b"present": 1}),
    "tombstone not a map": _raw(1, {"tombstone": [1, ZERO_ACCOUNT]}),
    "tombstone extra key": _raw(1, {"tombstone": {"at": 1, "by": ZERO_ACCOUNT, "why": "x"}}),
    "tombstone without by": _raw(1, {"tombstone": {"at": 1}}),
    "tombstone negative at": _raw(1, {"tombstone": {"at": -1, "by": ZERO_ACCOUNT}}),
    "tombstone bool at": _raw(1, {"tombstone": {"at": True, "by": ZERO_ACCOUNT}}),
    "tombstone float at": _raw(1, {"tombstone": {"at": 1.5, "by": ZERO_ACCOUNT}}),
    "tombstone huge at": _raw(1, {"tombstone": {"at": 2**64, "by": ZERO_ACCOUNT}}),
    "tombstone bad account": _raw(1, {"tombstone": {"at": 1, "by": "acc_zO0"}}),
    "tombstone short key": _raw(1, {"tombstone": {"at": 1, "by": "acc_z1111"}}),
    "tombstone account bytes": _raw(1, {"tombstone": {"at": 1, "by": ZERO_ACCOUNT.encode()}}),
    "oversized": _raw(1, {"present": b"x" * MAX_SLOT_VALUE_SIZE}),
    "text instead of bytes": GOOD.decode("latin-1"),
    "None": None,
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_is_rejected(data: Any) -> None:
    with pytest.raises(InvalidEnvelope) as info:
        decode_envelope(data)
    assert info.value.code == "invalid_envelope"
    assert info.value.detail


def test_size_limit_is_on_the_payload() -> None:
    # {"present": b"..."}: 1 (map) + 8 ("present") + 3 (bytes header) = 12 bytes of framing.
    biggest = Present(b"x" * (MAX_SLOT_VALUE_SIZE - 12))
    data = encode_envelope(1, biggest)
    assert len(data) == 9 + MAX_SLOT_VALUE_SIZE
    assert decode_envelope(data) == (1, biggest)
    with pytest.raises(InvalidEnvelope):
        encode_envelope(1, Present(b"x" * (MAX_SLOT_VALUE_SIZE - 11)))
    with pytest.raises(InvalidEnvelope):
        decode_envelope(data, max_size=MAX_SLOT_VALUE_SIZE - 1)


@pytest.mark.parametrize(
    ("generation", "slot"),
    [
        (0, Present(1)),
        (-1, Present(1)),
        (2**63, Present(1)),
        (True, Present(1)),
        (1.0, Present(1)),
        (1, Present(object())),
        (1, Present(b"x" * MAX_SLOT_VALUE_SIZE)),
        (1, Tombstone(-1, ZERO_ACCOUNT)),
        (1, Tombstone(1, AccountID("acc_zbad"))),
        (1, "not a slot"),
    ],
)
def test_encode_refuses(generation: Any, slot: Any) -> None:
    with pytest.raises(InvalidEnvelope):
        encode_envelope(generation, slot)


# -- bit flips ---------------------------------------------------------------------------


def _assert_every_flip_detected(data: bytes) -> None:
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            decoded = decode_envelope(bytes(flipped))
        except InvalidEnvelope:
            continue
        # It decoded: it must be a different (generation, slot). Compare canonical bytes
        # rather than ==, because a flip can turn 0.0 into -0.0, which Python calls equal.
        assert encode_envelope(*decoded) == bytes(flipped), bit
        assert encode_envelope(*decoded) != data, bit


@pytest.mark.parametrize(
    ("generation", "slot"),
    [
        (1, Present(1)),
        (2**40 + 3, Present({"a": [1, 2.5, "x"], "b": b"\x00", "c": None, "d": True})),
        (7, Present(0.0)),
        (12, Tombstone(1_700_000_000_000, ZERO_ACCOUNT)),
    ],
)
def test_single_bit_flips_known(generation: int, slot: Slot) -> None:
    _assert_every_flip_detected(encode_envelope(generation, slot))


@settings(max_examples=50)
@given(generations, slots)
def test_single_bit_flips_any(generation: int, slot: Slot) -> None:
    _assert_every_flip_detected(encode_envelope(generation, slot))
