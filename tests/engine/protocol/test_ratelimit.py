"""The per-connection rate limit's token bucket (engine/protocol/ratelimit.py) as a pure
function of the time it is given: no event loop. How the frame guard applies it is in
test_guard.py; how it works on real connections in tests/engine/net/test_ratelimit.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.protocol.ratelimit import TokenBucket

# -- TokenBucket (no event loop) ---------------------------------------------------------------


def test_starts_full_and_allows_the_burst() -> None:
    """A new bucket allows exactly ``burst`` takes at one instant, then refuses."""
    bucket = TokenBucket(rate=10, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_refusal_spends_nothing() -> None:
    """A refused take leaves the tokens as they were: refusals do not push the peer further
    into debt."""
    bucket = TokenBucket(rate=1, burst=2, now=0.0)
    assert bucket.take(0.0, cost=2)
    for _ in range(10):
        assert not bucket.take(0.5)
    assert bucket.tokens == pytest.approx(0.5)
    assert bucket.take(1.0)


def test_refills_at_the_rate() -> None:
    """Tokens come back at ``rate`` per second of the time passed in."""
    bucket = TokenBucket(rate=10, burst=100, now=0.0)
    assert bucket.take(0.0, cost=100)
    assert not bucket.take(0.05)
    assert bucket.take(0.1)
    assert bucket.tokens == pytest.approx(0.0)
    assert bucket.take(0.5, cost=4)
    assert not bucket.take(0.5)


def test_never_saves_more_than_the_burst() -> None:
    """After a long idle time the bucket holds ``burst`` tokens, not more."""
    bucket = TokenBucket(rate=1000, burst=3, now=0.0)
    assert [bucket.take(3600.0) for _ in range(4)] == [True, True, True, False]


def test_fractional_rate_and_cost() -> None:
    """Rates below one per second and costs other than one are honoured."""
    bucket = TokenBucket(rate=0.5, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(1.9)
    assert bucket.take(2.0)
    heavy = TokenBucket(rate=2, burst=10, now=0.0)
    assert heavy.take(0.0, cost=7.5)
    assert not heavy.take(0.0, cost=3)
    assert heavy.take(0.25, cost=3)


def test_time_standing_still_refills_nothing() -> None:
    """Calls at the same instant share the burst; nothing is refilled without time passing."""
    bucket = TokenBucket(rate=1_000_000, burst=2, now=5.0)
    assert [bucket.take(5.0) for _ in range(3)] == [True, True, False]


@given(
    st.floats(min_value=0.1, max_value=1000),
    st.integers(min_value=1, max_value=50),
    st.lists(st.tuples(st.floats(min_value=0, max_value=2), st.sampled_from([0.5, 1.0, 2.0])), max_size=200),
)
def test_never_admits_more_than_burst_plus_rate_times_time(
    rate: float, burst: int, steps: list[tuple[float, float]]
) -> None:
    """Over any window from the start, what is admitted is at most burst + rate * elapsed,
    and the bucket's tokens stay between 0 and burst."""
    now = 0.0
    bucket = TokenBucket(rate, burst, now)
    admitted = 0.0
    for dt, cost in steps:
        now += dt
        if bucket.take(now, cost):
            admitted += cost
        assert -1e-9 <= bucket.tokens <= burst + 1e-9
        assert admitted <= burst + rate * now + 1e-6


def test_sustained_rate_over_time() -> None:
    """Asked every millisecond for ten seconds, the bucket admits burst + rate * 10 takes."""
    bucket = TokenBucket(rate=50, burst=20, now=0.0)
    admitted = sum(bucket.take(ms / 1000) for ms in range(10_001))
    assert admitted == pytest.approx(20 + 50 * 10, abs=1)
