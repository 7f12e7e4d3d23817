"""The frame guard (engine/protocol/guard.py) driven directly with bytes and times: no event
loop, no sockets. The malformed-frame budget, the rate limit, the unsupported-version close,
and what each decision carries. The same rules over real sockets are
tests/engine/net/test_hostile.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import FrameTooLarge, UsageError
from engine.protocol.frames import BULK, OP, encode_frame
from engine.protocol.guard import Close, Deliver, FrameGuard, Reject
from engine.protocol.limits import CloseCode, Limits
from engine.protocol.messages import Done, Error
from tests.engine.factories import covalue_id

GOOD = encode_frame(OP, [Done(covalue_id("fine"))])
GARBAGE = b"\xff\xfe"
#: Generous rate limits, so only the rule under test decides.
NO_FLOOD = {"rate_per_second": 1e9, "rate_burst": 10**9}


def guard(**limits: float) -> FrameGuard:
    return FrameGuard(Limits(**{**NO_FLOOD, **limits}), now=0.0)  # type: ignore[arg-type]


def v2(message: Done) -> bytes:
    return codec.encode({"v": 2, "k": OP, "msg": message.to_obj()})


# -- the malformed budget ------------------------------------------------------------------------


def test_budget_is_exhausted_after_n_malformed_frames() -> None:
    """With max_malformed_frames=N, N undecodable frames each get error{invalid_cbor} and the
    connection goes on; the next one closes it with 4400 ("too many malformed frames") and
    that frame's error."""
    g = guard(max_malformed_frames=3)
    for _ in range(3):
        decision = g.receive(GARBAGE, 0.0)
        assert isinstance(decision, Reject)
        assert decision.error.code == "invalid_cbor"
    assert g.malformed == 3
    decision = g.receive(GARBAGE, 0.0)
    assert decision == Close(CloseCode.PROTOCOL_ERROR, "too many malformed frames", decision.error, decision.cause)
    assert decision.error.code == "invalid_cbor"
    assert g.closed


def test_a_good_frame_does_not_count() -> None:
    """Good frames between malformed ones are delivered and cost nothing from the budget."""
    g = guard(max_malformed_frames=2)
    sequence = [GOOD, GARBAGE, GOOD, GOOD, GARBAGE, GOOD]
    decisions = [g.receive(frame, 0.0) for frame in sequence]
    assert [type(d) for d in decisions] == [Deliver, Reject, Deliver, Deliver, Reject, Deliver]
    assert g.malformed == 2
    assert decisions[0] == Deliver((Done(covalue_id("fine")),), ())
    assert g.decoded == 4
    assert isinstance(g.receive(GARBAGE, 0.0), Close)


def test_budget_of_zero_closes_on_the_first_malformed_frame() -> None:
    decision = guard(max_malformed_frames=0).receive(b"\x1c", 0.0)
    assert isinstance(decision, Close) and decision.code == CloseCode.PROTOCOL_ERROR


def test_invalid_messages_of_a_good_frame_count_one_by_one() -> None:
    """Each invalid message in a decodable bulk frame costs one and gets its own error; the
    valid messages are delivered. Over the budget, the frame closes the connection with 4400
    ("too many malformed messages") and nothing of it is delivered."""
    bad = [{"t": "load", "id": 1}, {"t": "nope"}, {"t": "done"}]
    good = Done(covalue_id("fine"))
    frame = codec.encode({"v": 1, "k": BULK, "msgs": [bad[0], good.to_obj(), bad[1], bad[2]]})

    roomy = guard(max_malformed_frames=5)
    decision = roomy.receive(frame, 0.0)
    assert isinstance(decision, Deliver)
    assert decision.messages == (good,)
    assert [e.code for e in decision.errors] == ["invalid_message", "unknown_message", "invalid_message"]
    assert roomy.malformed == 3

    tight = guard(max_malformed_frames=2)
    decision = tight.receive(frame, 0.0)
    assert isinstance(decision, Close)
    assert (decision.code, decision.reason) == (CloseCode.PROTOCOL_ERROR, "too many malformed messages")
    assert decision.error.code == "invalid_message"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (GARBAGE, "invalid_cbor"),
        (codec.encode([1, 2]), "malformed_frame"),
        (codec.encode({"v": 1, "k": "op"}), "malformed_frame"),
        (encode_frame(BULK, [Done(covalue_id("a"))] * 3), "malformed_frame"),
    ],
    ids=["garbage", "not-a-map", "no-message", "too-many-messages"],
)
def test_frame_level_problems_are_rejected_with_their_code(data: bytes, code: str) -> None:
    g = FrameGuard(Limits(max_messages_per_frame=2), now=0.0)
    decision = g.receive(data, 0.0)
    assert isinstance(decision, Reject)
    assert decision.error == Error.of(decision.cause)
    assert decision.error.code == code


def test_oversized_frame_is_rejected_before_decoding_and_counts() -> None:
    """A frame over max_frame_size gets error{frame_too_large} (its size in the cause, for the
    log) and costs one from the budget."""
    g = guard(max_frame_size=16, max_malformed_frames=1)
    decision = g.receive(b"\xff" * 17, 0.0)
    assert isinstance(decision, Reject) and isinstance(decision.cause, FrameTooLarge)
    assert (decision.error.code, decision.cause.size) == ("frame_too_large", 17)
    closing = g.receive(b"\xff" * 40, 0.0)
    assert isinstance(closing, Close) and isinstance(closing.cause, FrameTooLarge)


# -- unsupported version ----------------------------------------------------------------------------


@pytest.mark.parametrize("after_good_frames", [0, 3])
def test_unsupported_version_closes_at_once(after_good_frames: int) -> None:
    """An envelope version this build does not speak closes with 4426 and
    error{unsupported_version} on the first such frame, whatever budget is left."""
    g = guard(max_malformed_frames=100)
    for _ in range(after_good_frames):
        assert isinstance(g.receive(GOOD, 0.0), Deliver)
    decision = g.receive(v2(Done(covalue_id("x"))), 0.0)
    assert isinstance(decision, Close)
    assert (decision.code, decision.reason, decision.error.code) == (
        CloseCode.UNSUPPORTED_VERSION,
        "unsupported version",
        "unsupported_version",
    )
    assert g.malformed == 0


# -- rate limit ----------------------------------------------------------------------------------


def test_token_bucket_refuses_a_flood_and_refills_with_time() -> None:
    """rate_burst frames at one instant pass; the next closes with 4429 and
    error{rate_limited}. A second connection shows the refill: after 1/rate seconds one more
    frame passes, and not two."""
    limits = Limits(rate_per_second=4, rate_burst=3)
    flooded = FrameGuard(limits, now=10.0)
    assert all(isinstance(flooded.receive(GOOD, 10.0), Deliver) for _ in range(3))
    decision = flooded.receive(GOOD, 10.0)
    flood = Error("rate_limited", "too many frames; slow down")
    assert decision == Close(CloseCode.RATE_LIMITED, "rate limited", flood)

    paced = FrameGuard(limits, now=10.0)
    assert all(isinstance(paced.receive(GOOD, 10.0), Deliver) for _ in range(3))
    assert isinstance(paced.receive(GOOD, 10.25), Deliver)
    assert isinstance(paced.receive(GOOD, 10.25), Close)


def test_a_peer_within_the_rate_is_never_limited() -> None:
    g = FrameGuard(Limits(rate_per_second=10, rate_burst=2), now=0.0)
    assert all(isinstance(g.receive(GOOD, i * 0.1), Deliver) for i in range(1000))


def test_rate_limit_comes_before_decoding() -> None:
    """A flood of garbage is closed as a flood (4429), not as malformed frames (4400)."""
    g = FrameGuard(Limits(rate_per_second=1, rate_burst=2, max_malformed_frames=100), now=0.0)
    assert [type(g.receive(GARBAGE, 0.0)) for _ in range(2)] == [Reject, Reject]
    decision = g.receive(GARBAGE, 0.0)
    assert isinstance(decision, Close) and decision.code == CloseCode.RATE_LIMITED
    assert decision.cause is None


def test_upstream_guard_applies_no_rate_limit() -> None:
    g = FrameGuard(Limits(rate_per_second=1, rate_burst=1), now=0.0, rate_limited=False)
    assert all(isinstance(g.receive(GOOD, 0.0), Deliver) for _ in range(500))


# -- after a close -----------------------------------------------------------------------------------


def test_feeding_a_closed_guard_is_a_local_error() -> None:
    g = guard(max_malformed_frames=0)
    assert isinstance(g.receive(GARBAGE, 0.0), Close)
    with pytest.raises(UsageError):
        g.receive(GOOD, 0.0)


def test_close_decisions_validate_themselves() -> None:
    with pytest.raises(UsageError):
        Close(CloseCode.NORMAL, "fine", Error("x"))
    with pytest.raises(UsageError):
        Close(CloseCode.PROTOCOL_ERROR, "é" * 62, Error("x"))


@given(st.lists(st.booleans(), max_size=60), st.integers(min_value=0, max_value=10))
def test_closes_exactly_at_the_first_problem_over_the_budget(good: list[bool], budget: int) -> None:
    """For any sequence of good and malformed frames, the guard delivers every good frame and
    rejects every malformed one until the (budget + 1)-th malformed frame, which closes."""
    g = guard(max_malformed_frames=budget)
    bad_seen = 0
    for is_good in good:
        decision = g.receive(GOOD if is_good else GARBAGE, 0.0)
        if is_good:
            assert isinstance(decision, Deliver)
            continue
        bad_seen += 1
        if bad_seen > budget:
            assert isinstance(decision, Close) and decision.code == CloseCode.PROTOCOL_ERROR
            return
        assert isinstance(decision, Reject)
    assert bad_seen <= budget and not g.closed
