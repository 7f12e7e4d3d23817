"""Two sessions side by side (engine.diagnostics.compare, engine.model.fork): no event loop.

Property tests over generated pairs of logs with a random shared prefix and random tails:
the fork point, the common prefix and the only-left / only-right / different counts are
exact; a log compared with itself is identical; swapping the sides mirrors the result. A
session against its conflict session aligns at the recorded fork point. Two
million-transaction sessions compare through windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crypto import chain_base
from engine.diagnostics.chain_verify import ChainVerifier, RowState
from engine.diagnostics.compare import RowKind, align_conflict, compare_sessions
from engine.diagnostics.session_rows import LogSessionSource, RawRow
from engine.errors import UsageError
from engine.ids import CoValueID, SessionID, conflict_session_id
from engine.model.fork import (
    MAX_INFER_PROBES,
    ForkPoint,
    decode_conflict_fork,
    encode_conflict_fork,
    find_fork,
    fork_bound_detail,
    infer_conflict_fork,
)
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from tests.engine.diagnostics._build import T0, comap, key, session_of

WHO = key(1)
DOC = comap("compare")
SID = session_of(WHO)


def log_of(parts: Sequence[tuple[str, int, int]], sid: SessionID = SID, *, sign_each: bool = False) -> SessionLog:
    """A log of ``(tag, count, madeAt start)`` parts, signed once at the end (or after
    every part with ``sign_each``)."""
    log = SessionLog(DOC.id, sid)
    for tag, count, start in parts:
        for i in range(count):
            log.append_pending(encode_transaction(T0 + start + i, [["set", tag, i]]))
        if sign_each and count:
            log.sign(WHO)
    log.sign(WHO)
    return log


def pair(prefix: int, a: int, b: int) -> tuple[SessionLog, SessionLog]:
    return log_of([("p", prefix, 0), ("a", a, 10_000)]), log_of([("p", prefix, 0), ("b", b, 10_000)])


@settings(max_examples=150, deadline=None)
@given(prefix=st.integers(0, 40), a=st.integers(0, 25), b=st.integers(0, 25))
def test_fork_prefix_and_counts_are_exact(prefix: int, a: int, b: int) -> None:
    left, right = pair(prefix, a, b)
    result = compare_sessions(LogSessionSource.of(left), LogSessionSource.of(right))
    al = result.alignment
    both = min(a, b)
    if a and b:
        assert al.fork == ForkPoint(prefix, left.hash_at(prefix))
    else:
        assert al.fork is None
    assert al.common_prefix == prefix
    assert al.count(RowKind.DIFFERENT) == both
    assert al.count(RowKind.ONLY_LEFT) == a - both
    assert al.count(RowKind.ONLY_RIGHT) == b - both
    assert al.identical == (a == b == 0)
    assert al.total == prefix + max(a, b)
    # every row agrees with the alignment, and carries each side's own transaction
    for row in result.rows(0, al.total + 5):
        assert row.kind is al.kind(row.index)
        assert (row.left is not None) == (row.index < prefix + a)
        assert (row.right is not None) == (row.index < prefix + b)
        if row.kind is RowKind.COMMON:
            assert row.left is not None and row.right is not None and row.left.hash == row.right.hash


@settings(max_examples=60, deadline=None)
@given(prefix=st.integers(0, 40), a=st.integers(0, 25))
def test_a_log_compared_with_itself_is_identical(prefix: int, a: int) -> None:
    log, _ = pair(prefix, a, 0)
    result = compare_sessions(LogSessionSource.of(log), LogSessionSource.of(log))
    assert result.identical and result.alignment.common_prefix == log.count
    assert all(block.kind is RowKind.COMMON for block in result.alignment.blocks())
    assert result.alignment.next_difference(-1) is None
    assert result.to_json()["identical"] is True


MIRROR = {
    RowKind.COMMON: RowKind.COMMON,
    RowKind.DIFFERENT: RowKind.DIFFERENT,
    RowKind.ONLY_LEFT: RowKind.ONLY_RIGHT,
    RowKind.ONLY_RIGHT: RowKind.ONLY_LEFT,
}


@settings(max_examples=100, deadline=None)
@given(prefix=st.integers(0, 40), a=st.integers(0, 25), b=st.integers(0, 25), conflict=st.booleans())
def test_swapping_sides_mirrors_the_result(prefix: int, a: int, b: int, conflict: bool) -> None:
    if conflict:
        origin = log_of([("p", prefix, 0), ("a", a, 10_000)])
        split = log_of([("b", b, 20_000)], conflict_session_id(SID, 1))
        record = encode_conflict_fork(SID, ForkPoint(prefix, origin.hash_at(prefix)))
        left, right = LogSessionSource.of(origin), LogSessionSource.of(split)
    else:
        one, two = pair(prefix, a, b)
        record = None
        left, right = LogSessionSource.of(one), LogSessionSource.of(two)
    forward = compare_sessions(left, right, conflict_record=record).alignment
    backward = compare_sessions(right, left, conflict_record=record).alignment
    assert (forward.fork, forward.common_prefix, forward.total) == (
        backward.fork,
        backward.common_prefix,
        backward.total,
    )
    assert [(MIRROR[b.kind], b.start, b.end) for b in forward.blocks()] == [
        (b.kind, b.start, b.end) for b in backward.blocks()
    ]
    assert forward.count(RowKind.ONLY_LEFT) == backward.count(RowKind.ONLY_RIGHT)


@settings(max_examples=100, deadline=None)
@given(prefix=st.integers(0, 40), a=st.integers(0, 25), b=st.integers(1, 25))
def test_a_session_and_its_conflict_session_align_at_the_recorded_fork_point(prefix: int, a: int, b: int) -> None:
    origin = log_of([("p", prefix, 0), ("a", a, 10_000)], sign_each=True)
    split = log_of([("b", b, 20_000)], conflict_session_id(SID, 1))
    record = encode_conflict_fork(SID, ForkPoint(prefix, origin.hash_at(prefix)))
    result = compare_sessions(LogSessionSource.of(origin), LogSessionSource.of(split), conflict_record=record)
    al = result.alignment
    assert al.conflict is not None and al.conflict.recorded and al.conflict.fork.index == prefix
    assert (al.right_offset, al.right_end) == (prefix, prefix + b)
    assert al.common_prefix == prefix and al.fork is None and not al.identical
    both = min(a, b)
    assert (al.count(RowKind.DIFFERENT), al.count(RowKind.ONLY_LEFT), al.count(RowKind.ONLY_RIGHT)) == (
        both,
        a - both,
        b - both,
    )
    rows = result.rows(0, al.total)
    # the conflict session's row j stands at the origin's index prefix + j
    for row in rows[prefix:]:
        if row.right is not None:
            assert row.right.index == row.index - prefix
    # in the common prefix the right pane shows the origin's rows (the divergent copy had them)
    assert all(r.right is r.left for r in rows[:prefix])


def test_fork_point_is_a_binary_search_on_chain_hashes() -> None:
    n, fork = 100_000, 61_234
    calls = [0]

    def hashes(side: bytes):  # type: ignore[no-untyped-def]
        def hash_at(i: int) -> bytes:
            calls[0] += 1
            if i == 0:
                return b"base"
            return hashlib.blake2b(b"%s%d" % (b"S" if i <= fork else side, i), digest_size=8).digest()

        return hash_at

    found = find_fork(hashes(b"L"), n, hashes(b"R"), n + 10)
    assert found is not None and found.index == fork
    assert calls[0] <= 2 * (n.bit_length() + 3)
    assert find_fork(hashes(b"L"), fork, hashes(b"R"), n) is None  # one is a prefix of the other
    with pytest.raises(UsageError):
        find_fork(lambda i: b"x", 3, lambda i: b"y", 3)


def test_the_one_wording_of_fork_points() -> None:
    assert ForkPoint(3, bytes.fromhex("1a2b3c4d55")).describe() == "fork at 3 after 1a2b3c4d"
    assert fork_bound_detail(5) == "heads differ at count 5: fork at or before 4"
    assert fork_bound_detail(1) == "heads differ at count 1: fork at 0"


def test_a_conflict_fork_record_round_trips_and_rejects_junk() -> None:
    fork = ForkPoint(7, b"\x01" * 32)
    assert decode_conflict_fork(encode_conflict_fork(SID, fork)) == (SID, fork)
    assert decode_conflict_fork(b"\xff\x00") is None
    assert decode_conflict_fork(encode_conflict_fork(SID, fork)[:-3]) is None


def test_without_a_record_the_fork_point_is_inferred_and_says_so() -> None:
    # The winner signed its divergent transactions as one batch: inference is exact.
    origin = log_of([("p", 30, 0)], sign_each=True)
    for i in range(6):
        origin.append_pending(encode_transaction(T0 + 100 + i, [["set", "a", i]]))
    origin.sign(WHO)
    split = log_of([("b", 4, 200)], conflict_session_id(SID, 1))
    inferred = align_conflict(LogSessionSource.of(origin), LogSessionSource.of(split))
    assert (inferred.fork.index, inferred.recorded, inferred.basis) == (30, False, "inferred")
    # A record the origin no longer matches (its hash differs there) is not believed.
    stale = encode_conflict_fork(SID, ForkPoint(20, b"\x00" * 32))
    assert not align_conflict(LogSessionSource.of(origin), LogSessionSource.of(split), stale).recorded
    # When the winner signed each divergent transaction, the clocks cannot tell the fork from
    # the later checkpoints (why a record is kept): inference lands on the latest of them.
    each = log_of([("p", 30, 0), *((f"a{i}", 1, 100 + i) for i in range(5))], sign_each=True)
    assert align_conflict(LogSessionSource.of(each), LogSessionSource.of(split)).fork.index == 34
    recorded = encode_conflict_fork(SID, ForkPoint(30, each.hash_at(30)))
    assert align_conflict(LogSessionSource.of(each), LogSessionSource.of(split), recorded).fork.index == 30


def test_inference_is_bounded() -> None:
    checkpoints = list(range(1, MAX_INFER_PROBES + 50))
    reads = [0]

    def made_at(i: int) -> int:
        reads[0] += 1
        return 10**9  # every transaction after the conflict's first: none qualifies

    fork = infer_conflict_fork(MAX_INFER_PROBES + 100, checkpoints, made_at, lambda n: b"h%d" % n, 5)
    assert fork.index == 0 and reads[0] == MAX_INFER_PROBES


def test_sessions_that_are_not_comparable_are_refused() -> None:
    other = log_of([("x", 3, 0)], session_of(WHO, 2))
    one = log_of([("x", 3, 0)])
    with pytest.raises(UsageError):
        compare_sessions(LogSessionSource.of(one), LogSessionSource.of(other))
    elsewhere = SessionLog(comap("another").id, SID)
    with pytest.raises(UsageError):
        compare_sessions(LogSessionSource.of(one), LogSessionSource.of(elsewhere))


def test_rows_carry_both_sides_verification_state() -> None:
    left, right = pair(10, 5, 3)
    right.hashes[11] = b"\x00" * 32  # a damaged stored hash on the right, after the fork
    a, b = LogSessionSource.of(left), LogSessionSource.of(right)
    lv, rv = ChainVerifier(LogSessionSource.of(left)), ChainVerifier(LogSessionSource.of(right))
    lv.run(), rv.run()
    result = compare_sessions(a, b, left_verifier=lv, right_verifier=rv)
    rows = {row.index: row for row in result.rows(0, 20)}
    assert rows[12].left_state is RowState.VERIFIED and rows[11].right_state is RowState.BROKEN
    assert rows[14].right_state is None  # no row on the right there
    report = result.to_json()
    assert report["right"]["verification"]["state"] == "broken"
    assert report["different"]["rows"][1]["right"]["verification"] == "broken"


class Synthetic:
    """A million-row session made up on demand: rows ``[0, shared)`` are the same on both
    sides, later ones depend on ``side``. Counts the rows it returns (``rows_read``)."""

    may_hold_pending = False

    def __init__(self, side: bytes, count: int, shared: int) -> None:
        self.covalue = CoValueID(DOC.id)
        self.session = SID
        self.side, self._count, self.shared = side, count, shared
        self.rows_read = 0

    @property
    def count(self) -> int:
        return self._count

    def window(self, offset: int, limit: int) -> list[RawRow]:
        stop = min(self._count, offset + limit)
        rows = []
        for i in range(max(0, offset), stop):
            tag = b"S" if i < self.shared else self.side
            tx = encode_transaction(T0 + i, [["set", f"k{i % 64}", tag.decode()]])
            rows.append((i, tx, hashlib.blake2b(b"%s%d" % (tag, i), digest_size=32).digest()))
        self.rows_read += len(rows)
        return rows

    def row_hash(self, index: int) -> bytes | None:
        rows = self.window(index, 1)
        return rows[0][2] if rows else None

    def checkpoints(self) -> list[int]:
        return list(range(1000, self._count + 1, 1000))

    def signature(self, n: int) -> bytes | None:
        return None

    def base(self) -> bytes:
        return chain_base(DOC.id, SID)

    def stored_head(self) -> tuple[int, bytes] | None:
        return None

    def identity(self) -> object:
        return self.side

    def reload(self) -> None:
        return None


def test_two_million_transaction_sessions_compare_through_windows() -> None:
    n, fork = 1_000_000, 500_000
    left, right = Synthetic(b"L", n, fork), Synthetic(b"R", n, fork)
    result = compare_sessions(left, right)
    assert result.alignment.fork is not None and result.alignment.fork.index == fork
    assert left.rows_read + right.rows_read <= 2 * (n.bit_length() + 3)
    report = result.to_json(listed=20)
    assert report["common_prefix"] == fork and report["different"]["count"] == n - fork
    assert len(report["different"]["rows"]) == 20 and report["only_left"]["count"] == 0
    assert left.rows_read <= 64 and right.rows_read <= 64
    last = result.rows(n - 1, 10)
    assert [r.index for r in last] == [n - 1] and last[0].kind is RowKind.DIFFERENT
