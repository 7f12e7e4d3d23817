"""Each peer's lag over time (:mod:`engine.sync.lag`): what a tick records, the bounds (samples
per peer, peers followed), gone peers ageing out, and the clock going back. Pure: no loop, no
Qt, no clock; the rows are the :class:`PeerInfo` values a node reports."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import UsageError
from engine.sync.lag import DEFAULT_KEEP_SAMPLES, DEFAULT_MAX_PEERS, LagHistory, LagSample
from engine.sync.peers import PeerInfo

T0 = 1_700_000_000_000


def row(peer_id: str, behind: int = 0, queue_bytes: int = 0, *, frames: int = 0, account: str = "acc_zA") -> PeerInfo:
    return PeerInfo(peer_id, "in", account, "client", False, 1, behind, frames, queue_bytes, 0)


def test_a_tick_gives_each_connected_peer_one_sample() -> None:
    history = LagHistory()
    history.record(T0, [row("in:1", 5, 100, frames=2), row("in:2", 0)])
    history.record(T0 + 1000, [row("in:1", 7, 300, frames=3), row("in:2", 1)])
    ring = history.ring("in:1")
    assert ring is not None and ring.peer_id == "in:1" and ring.account == "acc_zA"
    assert ring.samples() == [LagSample(T0, 5, 2, 100), LagSample(T0 + 1000, 7, 3, 300)]
    assert list(ring.behind) == [5, 7] and list(ring.queue_bytes) == [100, 300]
    assert history.peers() == ["in:1", "in:2"] and len(history) == 2
    assert history.ticks == [T0, T0 + 1000] and history.window == (T0, T0 + 1000)
    assert history.version == 2 and history.connected("in:1")


def test_each_ring_is_bounded_and_drops_its_oldest_samples() -> None:
    history = LagHistory(keep_samples=5)
    for i in range(12):
        history.record(T0 + i * 1000, [row("in:1", behind=i)])
    ring = history.ring("in:1")
    assert ring is not None and len(ring) == 5
    assert list(ring.behind) == [7, 8, 9, 10, 11]
    assert list(ring.at_ms) == [T0 + i * 1000 for i in range(7, 12)]
    assert history.ticks == list(ring.at_ms)


def test_a_gone_peer_keeps_its_line_until_it_ages_out() -> None:
    history = LagHistory(keep_samples=4)
    history.record(T0, [row("in:1", 10), row("in:2", 3)])
    history.record(T0 + 1000, [row("in:1", 20), row("in:2", 4)])
    history.record(T0 + 2000, [row("in:2", 5)])  # in:1 was closed (lagged)
    gone = history.ring("in:1")
    assert gone is not None and list(gone.behind) == [10, 20] and not history.connected("in:1")
    assert history.peers() == ["in:1", "in:2"]
    history.record(T0 + 3000, [row("in:2", 6)])
    history.record(T0 + 4000, [row("in:2", 7)])  # window is now T0+1000 .. T0+4000
    gone = history.ring("in:1")
    assert gone is not None and list(gone.at_ms) == [T0 + 1000]  # its older sample went first
    history.record(T0 + 5000, [row("in:2", 8)])
    assert history.ring("in:1") is None and history.peers() == ["in:2"]
    ring = history.ring("in:2")
    assert ring is not None and list(ring.behind) == [5, 6, 7, 8]


def test_a_peer_that_comes_back_under_its_id_continues_its_line() -> None:
    history = LagHistory(keep_samples=10)
    history.record(T0, [row("out:1:ws://a", 1)])
    history.record(T0 + 1000, [])
    history.record(T0 + 2000, [row("out:1:ws://a", 3)])
    ring = history.ring("out:1:ws://a")
    assert ring is not None and list(ring.at_ms) == [T0, T0 + 2000] and history.connected("out:1:ws://a")


def test_past_the_peer_limit_the_stalest_gone_peer_goes_first() -> None:
    history = LagHistory(keep_samples=100, max_peers=3)
    history.record(T0, [row("in:1"), row("in:2")])
    history.record(T0 + 1000, [row("in:2"), row("in:3")])  # in:1 gone, last seen at T0
    history.record(T0 + 2000, [row("in:3"), row("in:4")])  # in:2 gone, last seen at T0+1000
    assert history.peers() == ["in:2", "in:3", "in:4"]  # in:1 made room for in:4
    history.record(T0 + 3000, [row("in:3"), row("in:4"), row("in:5")])
    assert history.peers() == ["in:3", "in:4", "in:5"] and history.untracked == 0
    # every followed peer is connected: a fourth one is counted, not followed
    history.record(T0 + 4000, [row("in:3"), row("in:4"), row("in:5"), row("in:6")])
    assert history.peers() == ["in:3", "in:4", "in:5"] and history.ring("in:6") is None
    assert history.untracked == 1


def test_a_clock_set_back_keeps_the_rings_in_time_order() -> None:
    history = LagHistory()
    history.record(T0 + 5000, [row("in:1", 1)])
    history.record(T0, [row("in:1", 2)])
    ring = history.ring("in:1")
    assert ring is not None and list(ring.at_ms) == [T0 + 5000, T0 + 5000] and list(ring.behind) == [1, 2]


def test_a_peer_listed_twice_in_one_tick_counts_once() -> None:
    history = LagHistory()
    history.record(T0, [row("in:1", 1), row("in:1", 9)])
    ring = history.ring("in:1")
    assert ring is not None and list(ring.behind) == [9]


def test_clear_forgets_everything() -> None:
    history = LagHistory(max_peers=1)
    history.record(T0, [row("in:1"), row("in:2")])
    assert history.untracked == 1
    history.clear()
    assert history.peers() == [] and history.window is None and history.version == 0 and history.untracked == 0
    assert not history.connected("in:1")


def test_the_limits_are_named_and_checked() -> None:
    history = LagHistory()
    assert (history.keep_samples, history.max_peers) == (DEFAULT_KEEP_SAMPLES, DEFAULT_MAX_PEERS) == (600, 200)
    with pytest.raises(UsageError) as raised:
        LagHistory(keep_samples=0)
    assert raised.value.code == "usage"
    with pytest.raises(UsageError):
        LagHistory(max_peers=0)


@given(
    ticks=st.lists(
        st.tuples(st.integers(-3000, 5000), st.sets(st.integers(0, 8), max_size=6), st.integers(0, 10_000)),
        max_size=60,
    ),
    keep=st.integers(1, 12),
    max_peers=st.integers(1, 6),
)
def test_every_ring_stays_bounded_ordered_and_inside_the_window(
    ticks: list[tuple[int, set[int], int]], keep: int, max_peers: int
) -> None:
    history = LagHistory(keep_samples=keep, max_peers=max_peers)
    now = T0
    for step, peers, behind in ticks:
        now += step
        history.record(now, [row(f"in:{p}", behind + p) for p in sorted(peers)])
        window = history.window
        assert window is not None and len(history.ticks) <= keep and len(history) <= max_peers
        for ring in history.rings():
            times = list(ring.at_ms)
            assert 1 <= len(ring) <= keep and times == sorted(times)
            assert window[0] <= times[0] and times[-1] <= window[1]
            assert len(ring.behind) == len(ring.queue_bytes) == len(ring.queue_frames) == len(times)
        # every connected peer is followed unless the followed ones were all connected
        for p in peers:
            assert history.ring(f"in:{p}") is not None or history.untracked > 0
