"""The frame envelope (engine/protocol/frames.py): op and bulk frames, limits, packing.

Golden bytes pin the envelope (DESIGN §6 is normative): an encoder change that alters them is
a protocol change and needs a version bump, not a test update.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import FrameTooLarge, InvalidCBOR, ProtocolError, UnsupportedVersion
from engine.protocol.frames import (
    _BULK_HEAD,
    _BULK_OVERHEAD,
    BULK,
    ENVELOPE_VERSION,
    OP,
    Frame,
    decode_frame,
    encode_frame,
    pack_frames,
)
from engine.protocol.limits import DEFAULT_LIMITS, PROTOCOL_VERSION
from engine.protocol.messages import Done, Message, Welcome
from tests.engine.factories import covalue_id
from tests.engine.protocol.test_messages import messages

BIG = 64 * 1024 * 1024


def decode(data: bytes, *, max_size: int = BIG, max_messages: int = 100_000) -> Frame:
    return decode_frame(data, max_size=max_size, max_messages=max_messages)


# -- round trips -----------------------------------------------------------------------------


@given(messages)
def test_op_frame_round_trip(message: Message) -> None:
    """decode(encode(op, [m])) gives back exactly [m] and no errors."""
    frame = decode(encode_frame(OP, [message]))
    assert frame == Frame(OP, [message], [])


@given(st.lists(messages, max_size=5))
def test_bulk_frame_round_trip(batch: list[Message]) -> None:
    """decode(encode(bulk, ms)) gives back ms in order (including an empty bulk)."""
    frame = decode(encode_frame(BULK, batch))
    assert frame == Frame(BULK, batch, [])


@given(st.lists(messages, max_size=30), st.integers(min_value=600, max_value=8000))
def test_pack_frames_splits_under_max_size(batch: list[Message], max_size: int) -> None:
    """pack_frames keeps order, never exceeds max_size, writes canonical bulk frames, and only
    starts a new frame when the next message would not fit (as few frames as the greedy fill)."""
    encoded = [codec.encode(m.to_obj()) for m in batch]
    if any(len(e) + _BULK_OVERHEAD > max_size for e in encoded):
        with pytest.raises(FrameTooLarge):
            pack_frames(batch, max_size=max_size)
        return
    frames = pack_frames(batch, max_size=max_size)
    decoded = [decode(f) for f in frames]
    assert all(len(f) <= max_size for f in frames)
    assert all(d.kind == BULK and not d.errors and d.messages for d in decoded)
    assert [m for d in decoded for m in d.messages] == batch
    for data, frame in zip(frames, decoded, strict=True):
        assert data == encode_frame(BULK, frame.messages)
    for current, following in itertools.pairwise(decoded):
        used = _BULK_OVERHEAD + sum(len(codec.encode(m.to_obj())) for m in current.messages)
        assert used + len(codec.encode(following.messages[0].to_obj())) > max_size


@pytest.mark.parametrize("count", [0, 1, 23, 24, 255, 256, 65_536])
def test_pack_frames_array_headers(count: int) -> None:
    """Bulk frames of every CBOR array-length width (1, 2, 3 and 5 bytes) decode correctly."""
    done = Done(covalue_id("n"))
    frames = pack_frames([done] * count, max_size=BIG)
    assert len(frames) == (1 if count else 0)
    if count:
        assert frames[0] == encode_frame(BULK, [done] * count)
        assert len(decode(frames[0]).messages) == count


def test_pack_frames_refuses_a_message_that_fits_no_frame() -> None:
    """A single message larger than any frame raises FrameTooLarge with both sizes."""
    message = Welcome(True)
    size = len(codec.encode(message.to_obj()))
    with pytest.raises(FrameTooLarge) as info:
        pack_frames([message], max_size=size + _BULK_OVERHEAD - 1)
    assert (info.value.size, info.value.max_size, info.value.code) == (
        size,
        size + _BULK_OVERHEAD - 1,
        "frame_too_large",
    )


# -- envelope ------------------------------------------------------------------------------


def test_golden_op_frame() -> None:
    """The op envelope's bytes are fixed: canonical {k: "op", v: 1, msg: {...}}."""
    assert encode_frame(OP, [Welcome(True)]).hex() == "a3616b626f70617601636d7367a261746777656c636f6d656561646d696ef5"


def test_golden_bulk_frame() -> None:
    """The bulk envelope's bytes are fixed, and pack_frames' hand-written head matches them."""
    frame = encode_frame(BULK, [Welcome(False)])
    assert frame.hex() == "a3616b6462756c6b617601646d73677381a261746777656c636f6d656561646d696ef4"
    assert frame.startswith(_BULK_HEAD)
    assert pack_frames([Welcome(False)], max_size=1024) == [frame]


def test_op_frame_holds_exactly_one_message() -> None:
    """encode_frame refuses an op frame of zero or two messages."""
    for batch in ([], [Welcome(True), Welcome(False)]):
        with pytest.raises(ProtocolError):
            encode_frame(OP, batch)


def test_size_is_checked_before_decoding() -> None:
    """Over max_size is frame_too_large even for garbage; exactly max_size is decoded."""
    with pytest.raises(FrameTooLarge):
        decode(b"\xff" * 101, max_size=100)
    frame = encode_frame(OP, [Done(covalue_id("size"))])
    assert decode(frame, max_size=len(frame)).messages == [Done(covalue_id("size"))]
    with pytest.raises(FrameTooLarge):
        decode(frame, max_size=len(frame) - 1)


def test_max_messages_per_bulk_frame() -> None:
    """A bulk frame may hold max_messages messages, not one more."""
    done = Done(covalue_id("many"))
    assert len(decode(encode_frame(BULK, [done] * 5), max_messages=5).messages) == 5
    with pytest.raises(ProtocolError) as info:
        decode(encode_frame(BULK, [done] * 6), max_messages=5)
    assert info.value.code == "malformed_frame"


def test_bad_messages_are_reported_one_by_one() -> None:
    """In a bulk frame, good messages decode and each bad one becomes an error, in order."""
    good = Done(covalue_id("good")).to_obj()
    data = codec.encode(
        {"v": 1, "k": BULK, "msgs": [good, {"t": "nope"}, good, {"t": "done", "id": 3}, {"t": "welcome"}]}
    )
    frame = decode(data)
    assert frame.messages == [Done(covalue_id("good"))] * 2
    assert [e.code for e in frame.errors] == ["unknown_message", "invalid_id", "invalid_message"]


@pytest.mark.parametrize("version", [0, 2, -1, 2**64, "1", b"\x01", None, [1], 1.5])
def test_unknown_version(version: object) -> None:
    """Any envelope version but 1 raises UnsupportedVersion (code unsupported_version)."""
    data = codec.encode({"v": version, "k": OP, "msg": Done(covalue_id("v")).to_obj()})
    with pytest.raises(UnsupportedVersion) as info:
        decode(data)
    assert info.value.code == "unsupported_version"


@pytest.mark.parametrize("version", [True, 1.0], ids=["true", "float-1.0"])
def test_version_must_be_the_integer_1(version: object) -> None:
    """Envelope ``v`` is the CBOR integer 1: ``true`` (0xf5) and the float 1.0 are other CBOR
    values and must get unsupported_version, not be taken for version 1 by Python's ``==``."""
    data = codec.encode({"v": version, "k": OP, "msg": Done(covalue_id("v")).to_obj()})
    assert data != encode_frame(OP, [Done(covalue_id("v"))])
    with pytest.raises(UnsupportedVersion):
        decode(data)


@pytest.mark.parametrize(
    "obj",
    [
        {"v": 1, "k": OP},
        {"v": 1, "k": BULK},
        {"v": 1, "msg": {}},
        {"v": 1, "k": OP, "msgs": []},
        {"v": 1, "k": BULK, "msg": {}},
        {"v": 1, "k": BULK, "msgs": "x"},
        {"v": 1, "k": "OP", "msg": {}},
        {"v": 1, "k": OP, "msg": {}, "extra": True},
    ],
)
def test_malformed_envelope(obj: dict[str, object]) -> None:
    """Envelopes that are not exactly {v, k: op, msg} or {v, k: bulk, msgs: [...]} are refused."""
    with pytest.raises(ProtocolError) as info:
        decode(codec.encode(obj))
    assert info.value.code == "malformed_frame"


@pytest.mark.parametrize("data", [b"", b"\xa3", b"\x1c", b"\xa0\xa0", b"\xbf\xff"])
def test_undecodable_cbor(data: bytes) -> None:
    """Empty, truncated, reserved, trailing or indefinite CBOR is invalid_cbor."""
    with pytest.raises(InvalidCBOR) as info:
        decode(data)
    assert info.value.code == "invalid_cbor"


def test_default_limits_match_the_design() -> None:
    """The defaults DESIGN §6 states: 4 MiB frames, and envelope version 1 on the wire (the
    protocol version, 2 since group authority became causal, travels in the handshake)."""
    assert DEFAULT_LIMITS.max_frame_size == 4 * 1024 * 1024
    assert ENVELOPE_VERSION == 1
    assert PROTOCOL_VERSION == 2
