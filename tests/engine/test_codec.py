"""engine.codec: canonical CBOR and the limits of decoding untrusted bytes (DESIGN §3)."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.codec import MAX_DECODE_DEPTH, MAX_DECODE_SIZE, decode, encode
from engine.errors import InvalidCBOR
from tests.engine.factories import cbor_values


def _nested_arrays(depth: int) -> bytes:
    """``depth`` arrays of one element each around the integer 1."""
    return b"\x81" * depth + b"\x01"


def _nested_maps(depth: int) -> bytes:
    """``depth`` maps ``{"a": …}`` around the integer 1."""
    return b"\xa1\x61a" * depth + b"\x01"


# -- encoding --------------------------------------------------------------------------------


def test_encode_is_cbor2_canonical() -> None:
    """encode() is cbor2.dumps(..., canonical=True): length-first sorted keys, short floats."""
    value = {"bb": 1, "a": [1.5, -1, b"x"], 10: None, -1: True}
    assert encode(value) == cbor2.dumps(value, canonical=True)
    assert encode({"b": 1, "a": 2}) == bytes.fromhex("a2616102616201")
    assert encode(1.5) == bytes.fromhex("f93e00")


def test_encode_is_independent_of_insertion_order() -> None:
    """Two maps with the same items encode to the same bytes."""
    assert encode({"x": 1, "y": 2, 3: 4}) == encode({3: 4, "y": 2, "x": 1})


@pytest.mark.parametrize("value", [object(), {1, 2, object()}, [lambda: None]])
def test_unencodable_is_invalid_cbor(value: Any) -> None:
    """A value cbor2 cannot encode raises InvalidCBOR, not the encoder's own error."""
    with pytest.raises(InvalidCBOR) as info:
        encode(value)
    assert info.value.code == "invalid_cbor"


# -- decoding: must-reject corpus ------------------------------------------------------------

MUST_REJECT = {
    "empty": b"",
    "trailing byte": b"\x01\x00",
    "two items": encode([1]) + encode([2]),
    "trailing after map": encode({"a": 1}) + b"\xff",
    "duplicate key": bytes.fromhex("a2616101616102"),
    "duplicate int key": bytes.fromhex("a2010102"),
    "duplicate key, nested": bytes.fromhex("81a2616101616102"),
    "indefinite array": bytes.fromhex("9f01ff"),
    "indefinite map": bytes.fromhex("bf616101ff"),
    "indefinite bytes": bytes.fromhex("5f4161ff"),
    "indefinite text": bytes.fromhex("7f6161ff"),
    "truncated array": bytes.fromhex("8301"),
    "truncated text": bytes.fromhex("6561"),
    "huge declared array": bytes.fromhex("9b0000010000000000"),
    "huge declared bytes": bytes.fromhex("5b0000010000000000"),
    "huge declared map": bytes.fromhex("bb000001000000000001"),
    "bad utf-8": bytes.fromhex("62c328"),
    "reserved additional info": bytes.fromhex("1c"),
    "lone break": bytes.fromhex("ff"),
    "too deep arrays": _nested_arrays(MAX_DECODE_DEPTH + 1),
    "too deep maps": _nested_maps(MAX_DECODE_DEPTH + 1),
    "far too deep": _nested_arrays(100_000),
}


@pytest.mark.parametrize("data", list(MUST_REJECT.values()), ids=list(MUST_REJECT))
def test_decode_must_reject(data: bytes) -> None:
    """Each malformed or disallowed input raises InvalidCBOR with code invalid_cbor."""
    with pytest.raises(InvalidCBOR) as info:
        decode(data)
    assert info.value.code == "invalid_cbor"


def test_nesting_up_to_the_limit_decodes() -> None:
    """MAX_DECODE_DEPTH nested containers decode; one more is rejected (the limit is exact)."""
    value: Any = 1
    for _ in range(MAX_DECODE_DEPTH):
        value = [value]
    assert decode(_nested_arrays(MAX_DECODE_DEPTH)) == value
    with pytest.raises(InvalidCBOR):
        decode(_nested_arrays(MAX_DECODE_DEPTH + 1))


def test_shared_references_cannot_build_a_cycle() -> None:
    """Value-sharing tags (28/29) cannot smuggle a self-containing, infinitely deep value.

    A cycle is unbounded nesting that bypasses MAX_DECODE_DEPTH: anything walking the
    decoded value (validation, comparison, re-encoding) recurses without bound.
    """
    cyclic_array = bytes.fromhex("d81c81d81d00")  # 28([29(0)]): a list containing itself
    cyclic_map = bytes.fromhex("d81ca16161d81d00")  # 28({"a": 29(0)})
    for data in (cyclic_array, cyclic_map):
        with pytest.raises(InvalidCBOR):
            decode(data)


def test_oversized_input_is_rejected_before_decoding() -> None:
    """Input over MAX_DECODE_SIZE is refused even when it is a well-formed item."""
    payload = b"\x5a" + (MAX_DECODE_SIZE).to_bytes(4, "big") + bytes(MAX_DECODE_SIZE)
    assert len(payload) > MAX_DECODE_SIZE
    with pytest.raises(InvalidCBOR) as info:
        decode(payload)
    assert "limit" in info.value.detail


def test_input_at_the_size_limit_decodes() -> None:
    """A document of exactly MAX_DECODE_SIZE bytes is accepted."""
    body = MAX_DECODE_SIZE - 5
    payload = b"\x5a" + body.to_bytes(4, "big") + bytes(body)
    assert len(payload) == MAX_DECODE_SIZE
    assert decode(payload) == bytes(body)


@pytest.mark.parametrize("value", ["text", 1, None, [b"x"]])
def test_decode_refuses_non_bytes(value: Any) -> None:
    """decode() of something that is not bytes-like raises InvalidCBOR."""
    with pytest.raises(InvalidCBOR):
        decode(value)


def test_decode_accepts_bytes_likes() -> None:
    """bytearray and memoryview decode like bytes."""
    data = encode({"a": [1, 2]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {"a": [1, 2]}


NON_CANONICAL = {
    "keys out of order": bytes.fromhex("a2616201616102"),
    "longer key first": bytes.fromhex("a262616101616202"),
    "non-minimal int": bytes.fromhex("1801"),
    "non-minimal int32": bytes.fromhex("1a00000001"),
    "non-minimal length": bytes.fromhex("780161"),
    "float64 for float16": bytes.fromhex("fb3ff8000000000000"),
    "non-minimal map length": bytes.fromhex("b802616101616202"),
}


@pytest.mark.parametrize("data", list(NON_CANONICAL.values()), ids=list(NON_CANONICAL))
def test_require_canonical_rejects_other_encodings(data: bytes) -> None:
    """With require_canonical, a valid but non-canonical encoding raises InvalidCBOR."""
    value = decode(data)  # well-formed: only the canonical check may refuse it
    assert encode(value) != data
    with pytest.raises(InvalidCBOR) as info:
        decode(data, require_canonical=True)
    assert "canonical" in info.value.detail


@given(st.binary(max_size=64))
def test_decode_raises_only_invalid_cbor(data: bytes) -> None:
    """Arbitrary bytes either decode or raise InvalidCBOR, never another exception."""
    for canonical in (False, True):
        with contextlib.suppress(InvalidCBOR):
            decode(data, require_canonical=canonical)


# -- round trip ------------------------------------------------------------------------------


@given(cbor_values())
def test_round_trip(value: Any) -> None:
    """decode(encode(v)) == v, and the canonical bytes are accepted by the strict decoder."""
    data = encode(value)
    assert decode(data) == value
    assert decode(data, require_canonical=True) == value
    assert encode(decode(data)) == data


@given(cbor_values(allow_nan=True))
def test_encoding_is_a_fixed_point(value: Any) -> None:
    """Re-encoding decoded canonical bytes gives the same bytes (NaN included)."""
    data = encode(value)
    assert encode(decode(data, require_canonical=True)) == data


def test_an_undecodable_item_names_the_decoders_reason() -> None:
    """The detail says why (not just the exception's type), bounded in length."""
    with pytest.raises(InvalidCBOR) as caught:
        decode(b"\xa2\x01\x02\x01\x03")  # a map with key 1 twice
    assert "Duplicate map key" in caught.value.detail
    assert len(caught.value.detail) < 250
