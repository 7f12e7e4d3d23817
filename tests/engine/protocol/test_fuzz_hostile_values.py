"""Fuzzing the wire decoders with hostile values: bignums far past what Python will print,
huge and special floats, arbitrary tags, and deep nesting, placed anywhere in valid messages
and envelopes (issue 12, point 2).

The outcome must be what :mod:`tests.engine.protocol.test_fuzz` demands of any input — a
validated message or a coded :class:`~engine.errors.KintsugiError` — and, further, the error
must be reportable: its text and its ``error`` message encode without raising (Python refuses
to turn an integer of more than 4,300 digits into text, which is how an unbounded integer
quoted in an error message used to escape as a bare ``ValueError``).
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import IntegerTooLarge, KintsugiError
from engine.protocol.frames import OP, decode_frame
from engine.protocol.guard import Close, Deliver, FrameGuard
from engine.protocol.limits import Limits
from engine.protocol.messages import Error, decode_message
from tests.engine.protocol.test_fuzz import (
    FUZZ,
    MAX_MESSAGES,
    MAX_SIZE,
    _get,
    _paths,
    _replace,
    assert_forwardable,
    assert_stable_error,
    messages,
)

#: Magnitudes from small to far past the 4,300-digit conversion limit (2**14,300 ≈ 10**4,300).
_bits = st.one_of(st.integers(0, 300), st.integers(14_000, 20_000))

bignums = st.builds(lambda bits, sign, low: sign * (2**bits + low), _bits, st.sampled_from([1, -1]), st.integers(0, 99))

big_floats = st.one_of(
    st.sampled_from([1e308, -1e308, float("inf"), float("-inf"), float("nan"), 5e-324, 2.0**1023]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _tagged(tag: int, value: Any) -> Any:
    return cbor2.CBORTag(tag, value)


#: Tagged values: bignum tags holding oversized byte strings, decimal fractions and bigfloats
#: with extreme exponents, dates out of range, and arbitrary tag numbers around any value.
tagged = st.one_of(
    st.builds(lambda n: _tagged(2, b"\xff" * n), st.integers(0, 4096)),
    st.builds(lambda n: _tagged(3, b"\x01" * n), st.integers(0, 4096)),
    st.builds(lambda e, m: _tagged(4, [e, m]), bignums, bignums),
    st.builds(lambda e, m: _tagged(5, [e, m]), bignums, bignums),
    st.builds(lambda v: _tagged(1, v), st.one_of(bignums, big_floats)),
    st.builds(_tagged, st.integers(0, 2**64 - 1), st.one_of(bignums, big_floats, st.text(max_size=4))),
)

hostile = st.one_of(bignums, big_floats, tagged)


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


#: A hostile value, sometimes buried under up to 100 levels of arrays (past the decoder's 64).
buried = st.one_of(hostile, st.builds(_deep, st.integers(1, 100), hostile))


def raw(value: Any) -> bytes:
    """CBOR of ``value`` as an attacker writes it (cbor2 encodes any integer as a bignum)."""
    return bytes(cbor2.dumps(value))


def check_reportable(data: bytes) -> None:
    """Decode ``data`` as a frame: a clean outcome, and every error it produces can be put into
    text, into an ``error`` message and onto the wire."""
    try:
        frame = decode_frame(data, max_size=MAX_SIZE, max_messages=MAX_MESSAGES)
    except KintsugiError as exc:
        _reportable(exc)
        return
    for error in frame.errors:
        _reportable(error)
    for message in frame.messages:
        assert_forwardable(message)


def _reportable(exc: KintsugiError) -> None:
    assert_stable_error(exc)
    assert len(str(exc)) < 100_000
    codec.encode(Error.of(exc).to_obj())


@FUZZ
@given(buried)
def test_hostile_value_as_envelope_version(value: Any) -> None:
    """A hostile ``v`` is refused cleanly, whatever it is."""
    check_reportable(raw({"v": value, "k": "op", "msg": {"t": "done", "id": "x"}}))


@FUZZ
@given(messages, buried, st.data())
def test_hostile_value_anywhere_in_a_message(message: Any, value: Any, data: st.DataObject) -> None:
    """A valid message with a hostile value swapped in at any depth, or added as an
    unexpected key or field value, decodes cleanly or is refused with a coded error."""
    obj = message.to_obj()
    paths = _paths(obj)
    action = data.draw(st.sampled_from(["swap", "add_key", "add_value"]))
    if action == "swap" and paths:
        obj = _replace(obj, data.draw(st.sampled_from(paths)), value)
    elif action == "add_key" and isinstance(value, int):
        maps = [()] + [p for p in paths if isinstance(_get(obj, p), dict)]
        obj = _replace(obj, (*data.draw(st.sampled_from(maps)), value), 1)
    else:
        obj["extra"] = value
    check_reportable(raw({"v": 1, "k": OP, "msg": obj}))


@FUZZ
@given(st.sampled_from(["t", "op", "type", "id", "code"]), hostile)
def test_hostile_value_in_the_fields_errors_quote(field: str, value: Any) -> None:
    """The fields a decoder quotes back (a message's type, an admin op, a header type, an
    error code) holding a hostile value."""
    admin = {"t": "admin", "rid": 1, "op": value, "args": {}}
    header = {"type": value, "ruleset": {"type": "unsafeAllowAll"}, "meta": None, "uniqueness": 1, "createdAt": 1}
    for msg in ({"t": value}, admin, {"t": "content", "id": "co_zx", "header": header, "new": {}}, {field: value}):
        check_reportable(raw({"v": 1, "k": OP, "msg": msg}))


@FUZZ
@given(st.integers(1, 200), hostile)
def test_deep_nesting_around_hostile_values(depth: int, value: Any) -> None:
    """Hostile values at the bottom of deep nesting: never a RecursionError, always coded."""
    check_reportable(raw({"v": 1, "k": OP, "msg": _deep(depth, value)}))


def test_bignums_are_bounded_by_the_named_limit() -> None:
    """Bignums up to MAX_BIGNUM_BYTES decode exactly; one byte more is integer_too_large, in
    both signs, and its detail names sizes only."""
    top = 2 ** (8 * codec.MAX_BIGNUM_BYTES) - 1
    assert codec.decode(raw(top)) == top
    assert codec.decode(raw(-top - 1)) == -top - 1
    for value in (top + 1, -top - 2, 10**5000):
        try:
            codec.decode(raw(value))
        except IntegerTooLarge as exc:
            assert exc.code == "integer_too_large"
            assert exc.max_size == codec.MAX_BIGNUM_BYTES
        else:
            raise AssertionError(f"a {value.bit_length()}-bit integer was accepted")


def test_short_repr_never_converts_huge_integers() -> None:
    """short_repr describes what repr() would refuse, and stays short for anything else."""
    assert codec.short_repr(10**5000) == f"<integer of {(10**5000).bit_length()} bits>"
    assert len(codec.short_repr("x" * 10_000)) <= codec.MAX_QUOTED
    assert codec.short_repr(7) == "7"
    assert codec.short_repr([10**5000]) == "<list>"


@FUZZ
@given(st.lists(st.one_of(buried, st.just(None)), min_size=1, max_size=12))
def test_guard_counts_hostile_frames_towards_the_malformed_budget(values: list[Any]) -> None:
    """Every frame holding a hostile value that does not decode costs one from the malformed
    budget, and the one over it closes with 4400; the guard itself never raises."""
    limits = Limits(max_malformed_frames=3)
    guard = FrameGuard(limits, 0.0, rate_limited=False)
    for value in values:
        data = (
            raw({"v": value, "k": "op", "msg": {"t": "done", "id": "x"}}) if value is not None else struct.pack("B", 0)
        )
        before = guard.malformed
        decision = guard.receive(data, 0.0)
        if isinstance(decision, Close):
            assert decision.code in (4400, 4426)
            codec.encode(decision.error.to_obj())
            return
        # A frame that decodes holds the invalid message ("x" is no id): one error either way.
        errors = decision.errors if isinstance(decision, Deliver) else (decision.error,)
        assert len(errors) == 1
        assert guard.malformed == before + 1
        codec.encode(errors[0].to_obj())


def test_decode_message_quotes_unexpected_integer_keys_bounded() -> None:
    """A message with a huge unexpected key is invalid_message with a short detail."""
    obj: dict[Any, Any] = {"t": "done", "id": "co_zx", 10**5000: 1}
    try:
        decode_message(obj)
    except KintsugiError as exc:
        assert exc.code in ("invalid_message", "invalid_id")
        assert len(str(exc)) < 1000
    else:
        raise AssertionError("accepted an unexpected key")
