"""engine.model.transaction: the canonical transaction envelope and its fast encoder (DESIGN §4)."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidTransaction
from engine.model.transaction import (
    MAX_CHANGES_PER_TRANSACTION,
    MAX_TRANSACTION_SIZE,
    Transaction,
    decode_transaction,
    encode_transaction,
)
from tests.engine.factories import cbor_values

MADE_AT = st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 300), st.just(2**63 - 1))
OPS = st.one_of(st.sampled_from(["set", "del", "role", "delete"]), st.text(max_size=6))


def _changes(*, allow_nan: bool) -> st.SearchStrategy[list[list[Any]]]:
    """Well-formed envelopes' changes: 1..5 lists, each an operation name and CBOR values."""
    change = st.tuples(OPS, st.lists(cbor_values(allow_nan=allow_nan, max_leaves=12), max_size=3))
    return st.lists(change.map(lambda t: [t[0], *t[1]]), min_size=1, max_size=5)


def _reference(made_at: int, changes: Any, meta: Any) -> bytes:
    """What the fast path must equal: plain cbor2 canonical encoding of the envelope map."""
    envelope: dict[str, Any] = {"t": made_at, "c": changes}
    if meta is not None:
        envelope["m"] = meta
    return cbor2.dumps(envelope, canonical=True)


# -- the fast path is byte-identical to cbor2 ------------------------------------------------


@given(MADE_AT, _changes(allow_nan=True), st.one_of(st.none(), cbor_values(allow_nan=True)))
def test_encoder_is_byte_identical_to_cbor2(made_at: int, changes: Any, meta: Any) -> None:
    """encode_transaction == cbor2.dumps({"t","c"[,"m"]}, canonical=True) for any content."""
    assert encode_transaction(made_at, changes, meta) == _reference(made_at, changes, meta)


@pytest.mark.parametrize(
    ("made_at", "changes", "meta"),
    [
        (0, [["set", "k", 1]], None),
        (2**63 - 1, [["del", "k"]], None),
        (23, [["set", "k", 1]], 0),
        (24, [["set", "k", 1]], False),
        (256, [["set", "k", -1.5]], {}),
        (65536, [["set", {"bb": 1, "a": 2, 3: 4, b"x": 5, -1: 6}, [float("inf")]]], {"z": None}),
        (4294967296, [["x"]], ""),
    ],
)
def test_encoder_matches_cbor2_on_edges(made_at: int, changes: Any, meta: Any) -> None:
    """Integer width boundaries of madeAt, falsy-but-present meta and mixed keys match cbor2."""
    assert encode_transaction(made_at, changes, meta) == _reference(made_at, changes, meta)


def test_envelope_bytes_by_hand() -> None:
    """{"c": [["set","k",1]], "t": 5} is a2 61'c' 81 83 63'set' 61'k' 01 61't' 05."""
    expected = bytes.fromhex("a2" "6163" "81" "83" "63736574" "616b" "01" "6174" "05")
    assert encode_transaction(5, [["set", "k", 1]]) == expected
    assert decode_transaction(expected) == Transaction(5, [["set", "k", 1]], None)


# -- round trip ------------------------------------------------------------------------------


@given(MADE_AT, _changes(allow_nan=False), st.one_of(st.none(), cbor_values()))
def test_round_trip(made_at: int, changes: list[list[Any]], meta: Any) -> None:
    """decode_transaction(encode_transaction(x)) == x."""
    data = encode_transaction(made_at, changes, meta)
    assert decode_transaction(data) == Transaction(made_at, changes, meta)


def test_most_changes_allowed_round_trip() -> None:
    """A transaction with exactly MAX_CHANGES_PER_TRANSACTION changes decodes."""
    changes = [["set", f"k{i}", i] for i in range(MAX_CHANGES_PER_TRANSACTION)]
    assert decode_transaction(encode_transaction(1, changes)).changes == changes


# -- encoder refusals ------------------------------------------------------------------------


@pytest.mark.parametrize("made_at", [-1, 2**63, True, False, 1.0, "5", None])
def test_encoder_refuses_bad_made_at(made_at: Any) -> None:
    """madeAt must be an int in [0, 2**63); bool, float, str and None are refused."""
    with pytest.raises(InvalidTransaction) as info:
        encode_transaction(made_at, [["set", "k", 1]])
    assert info.value.code == "invalid_transaction"


def test_encoder_refuses_unencodable_values() -> None:
    """A change holding a value CBOR cannot carry raises InvalidTransaction."""
    with pytest.raises(InvalidTransaction):
        encode_transaction(1, [["set", "k", object()]])
    with pytest.raises(InvalidTransaction):
        encode_transaction(1, [["set", "k", 1]], meta=object())


def test_encoder_refuses_oversized() -> None:
    """A transaction over MAX_TRANSACTION_SIZE is refused by the encoder."""
    with pytest.raises(InvalidTransaction):
        encode_transaction(1, [["set", "k", b"x" * MAX_TRANSACTION_SIZE]])


@pytest.mark.parametrize(
    "changes",
    [
        [],
        [[]],
        [5],
        [[1, "k"]],
        [["set", "k", 1]] * (MAX_CHANGES_PER_TRANSACTION + 1),
    ],
    ids=["no changes", "empty change", "change not a list", "op not text", "too many changes"],
)
def test_encoder_never_writes_what_the_decoder_refuses(changes: Any) -> None:
    """Whatever encode_transaction accepts, decode_transaction accepts too.

    Otherwise a local writer signs a transaction that every replica (itself included) finds
    undecodable: permanent junk in signed history.
    """
    try:
        data = encode_transaction(1, changes)
    except InvalidTransaction:
        return
    decode_transaction(data)


# -- decoder: non-canonical encodings of a valid value ---------------------------------------

CANONICAL = bytes.fromhex("a2" "6163" "81" "83" "63736574" "616b" "01" "6174" "05")
SAME_VALUE = {
    "keys in wrong order": bytes.fromhex("a2" "6174" "05" "6163" "81" "83" "63736574" "616b" "01"),
    "non-minimal madeAt": bytes.fromhex("a2" "6163" "81" "83" "63736574" "616b" "01" "6174" "1805"),
    "madeAt as uint32": bytes.fromhex("a2" "6163" "81" "83" "63736574" "616b" "01" "6174" "1a00000005"),
    "non-minimal value": bytes.fromhex("a2" "6163" "81" "83" "63736574" "616b" "1801" "6174" "05"),
    "non-minimal key length": bytes.fromhex("a2" "780163" "81" "83" "63736574" "616b" "01" "6174" "05"),
    "non-minimal array length": bytes.fromhex("a2" "6163" "9801" "83" "63736574" "616b" "01" "6174" "05"),
    "non-minimal map length": bytes.fromhex("b802" "6163" "81" "83" "63736574" "616b" "01" "6174" "05"),
    "indefinite changes": bytes.fromhex("a2" "6163" "9f" "83" "63736574" "616b" "01" "ff" "6174" "05"),
    "indefinite text": bytes.fromhex("a2" "6163" "81" "83" "7f63736574ff" "616b" "01" "6174" "05"),
}


@pytest.mark.parametrize("data", list(SAME_VALUE.values()), ids=list(SAME_VALUE))
def test_non_canonical_same_value_is_rejected(data: bytes) -> None:
    """Another encoding of the very same transaction is not that transaction: it is rejected."""
    assert data != CANONICAL
    assert cbor2.loads(data) == cbor2.loads(CANONICAL)
    with pytest.raises(InvalidTransaction) as info:
        decode_transaction(data)
    assert info.value.code == "invalid_transaction"


def test_non_canonical_float_and_nested_map_are_rejected() -> None:
    """A float64 where float16 suffices, a NaN payload or unsorted nested keys are rejected."""
    canonical = encode_transaction(5, [["set", "k", 1.5]])
    as_float64 = canonical.replace(bytes.fromhex("f93e00"), bytes.fromhex("fb3ff8000000000000"))
    nan = encode_transaction(5, [["set", "k", float("nan")]])
    odd_nan = nan.replace(bytes.fromhex("f97e00"), bytes.fromhex("f97e01"))
    nested = encode_transaction(5, [["set", "k", {"a": 1, "b": 2}]])
    unsorted = nested.replace(bytes.fromhex("616101616202"), bytes.fromhex("616202616101"))
    for data in (as_float64, odd_nan, unsorted):
        assert data not in (canonical, nan, nested)
        with pytest.raises(InvalidTransaction):
            decode_transaction(data)


@pytest.mark.parametrize(
    "data",
    [
        CANONICAL + b"\x00",
        bytes.fromhex("a3" "6163" "81" "83" "63736574" "616b" "01" "6163" "81" "83" "63736574" "616b" "02" "6174" "05"),
        bytes.fromhex("a3" "6163" "81" "83" "63736574" "616b" "01" "616d" "f6" "6174" "05"),
    ],
    ids=["trailing byte", "duplicate key", "meta null"],
)
def test_trailing_duplicate_and_null_meta_rejected(data: bytes) -> None:
    """Trailing bytes, a duplicated key and an explicit "m": null are rejected."""
    with pytest.raises(InvalidTransaction):
        decode_transaction(data)


# -- decoder: malformed envelopes ------------------------------------------------------------

GOOD_CHANGES = [["set", "k", 1]]
MALFORMED: dict[str, Any] = {
    "array": [5, GOOD_CHANGES],
    "text": "tx",
    "missing t": {"c": GOOD_CHANGES},
    "missing c": {"t": 5},
    "extra key": {"t": 5, "c": GOOD_CHANGES, "x": 1},
    "t negative": {"t": -1, "c": GOOD_CHANGES},
    "t too big": {"t": 2**63, "c": GOOD_CHANGES},
    "t bool": {"t": True, "c": GOOD_CHANGES},
    "t float": {"t": 5.0, "c": GOOD_CHANGES},
    "t text": {"t": "5", "c": GOOD_CHANGES},
    "t tagged": {"t": cbor2.CBORTag(1, 5), "c": GOOD_CHANGES},
    "c empty": {"t": 5, "c": []},
    "c map": {"t": 5, "c": {"set": "k"}},
    "change not a list": {"t": 5, "c": ["set"]},
    "change empty": {"t": 5, "c": [[]]},
    "op not text": {"t": 5, "c": [[1, "k"]]},
    "too many changes": {"t": 5, "c": [["del", "k"]] * (MAX_CHANGES_PER_TRANSACTION + 1)},
}


@pytest.mark.parametrize("obj", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_envelope_rejected(obj: Any) -> None:
    """Canonically encoded values that are not transactions raise InvalidTransaction."""
    with pytest.raises(InvalidTransaction) as info:
        decode_transaction(cbor2.dumps(obj, canonical=True))
    assert info.value.code == "invalid_transaction"


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\xa2", b"\x81" * 200 + b"\x01", b"\x00" * (MAX_TRANSACTION_SIZE + 1)],
    ids=["empty", "break", "truncated", "too deep", "oversized"],
)
def test_undecodable_rejected(data: bytes) -> None:
    """Bytes that are not one CBOR item, too deep or too large raise InvalidTransaction."""
    with pytest.raises(InvalidTransaction):
        decode_transaction(data)


@given(st.binary(max_size=48))
def test_decoder_raises_only_invalid_transaction(data: bytes) -> None:
    """Arbitrary bytes either decode to a transaction or raise InvalidTransaction."""
    with contextlib.suppress(InvalidTransaction):
        decode_transaction(data)


SMALL_CHANGES = st.lists(
    st.tuples(OPS, st.lists(cbor_values(max_leaves=4), max_size=2)).map(lambda t: [t[0], *t[1]]),
    min_size=1,
    max_size=2,
)


@given(MADE_AT, SMALL_CHANGES, st.data())
def test_any_mutation_is_rejected_or_canonical(made_at: int, changes: Any, data: st.DataObject) -> None:
    """A mutated transaction is rejected, or it is the canonical encoding of what it decodes to."""
    original = bytearray(encode_transaction(made_at, changes))
    pos = data.draw(st.integers(0, len(original) - 1))
    original[pos] = data.draw(st.integers(0, 255))
    mutated = bytes(original)
    try:
        tx = decode_transaction(mutated)
    except InvalidTransaction:
        return
    assert encode_transaction(tx.made_at, tx.changes, tx.meta) == mutated
