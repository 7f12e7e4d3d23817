"""The fork point (DESIGN §4, §5): where two copies of one session log stop agreeing.

**One definition**, used by the sync events, the demo's output, the inspector and the CLI:
the fork point of two copies of a session is the first transaction index ``k`` whose chain
hash ``h(k+1)`` differs, together with the last common hash ``h(k)`` (the chain base when
``k`` is 0). Because ``h(i+1)`` chains over every earlier transaction, equal hashes at
``n`` mean equal prefixes ``[0, n)``: the fork point is found by a binary search on chain
hashes (:func:`find_fork`, ``O(log n)`` hash reads, never a whole session), and it is the
first index whose transaction bytes differ too. Two copies where one is a prefix of the
other have no fork point: one is simply ahead.

A replica that sees only a peer's known state ``(n, h(n))`` can tell that the copies
differ but not where: the fork point is then known only to be at or before ``n - 1``
(:func:`fork_bound_detail`); the exact point is known once the divergent transactions
themselves are at hand (content, a correction, a comparison).

**Conflict sessions.** A conflict session ``sid!n`` holds the divergent tail ``[k, m)`` of
a copy of ``sid``, moved aside (bytes and ``madeAt`` kept) and re-signed in its own chain
(DESIGN §7). Its transaction ``j`` stands at index ``k + j`` of its origin ``sid``. Where
that ``k`` is must be *recorded*, because it cannot be recomputed from the two logs:

- the tail's transactions are by definition *not* in the origin's log (they are the other
  side of the fork), so matching their bytes against the origin finds nothing;
- ``madeAt`` does not decide it either: in the demo's own two-tabs story both tabs write
  after the shared prefix, and the tab that lost wrote *after* every transaction of the tab
  that won, so every index from the true fork to the origin's end is equally consistent
  with the clocks;
- the conflict session's id format and its transactions' bytes are normative (DESIGN §3,
  §4): nothing can be added to them.

So the replica that splits a tail off knows the fork point exactly (it is the
:class:`~engine.covalue.ReplaceOutcome`'s ``fork``, said in the correction event) and
records it beside its store as a *conflict fork record* (:func:`encode_conflict_fork`,
checkpoint namespace :data:`CONFLICT_FORK_NAMESPACE`): the origin, ``k`` and ``h(k)``. A
record is believed only while the origin on the reading replica still has ``h(k)`` at
``k`` (:func:`check_conflict_fork`), so a stale record never misaligns. A replica without
a record (a node that received the conflict session by sync) gets an *inferred* fork point
(:func:`infer_conflict_fork`): the latest origin checkpoint, before the origin's end, whose
last transaction was made no later than the conflict session's first. That rule is exact
when the winning copy signed its divergent transactions as one batch (a client's crash
after acknowledgement; two live tabs), and is reported as inferred so a viewer says so.

Imports: ids, codec, errors (the model row of the import table).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.codec import decode, encode
from engine.errors import KintsugiError, UsageError
from engine.ids import CoValueID, SessionID, parse_session_id

__all__ = [
    "CONFLICT_FORK_NAMESPACE",
    "CONFLICT_FORK_VERSION",
    "HASH_TEXT_BYTES",
    "MAX_INFER_PROBES",
    "ConflictFork",
    "ForkPoint",
    "HashAt",
    "check_conflict_fork",
    "conflict_fork_key",
    "decode_conflict_fork",
    "encode_conflict_fork",
    "find_fork",
    "fork_bound_detail",
    "fork_detail",
    "infer_conflict_fork",
    "origin_of",
]

#: Bytes of a hash shown in text (as hex: twice as many characters).
HASH_TEXT_BYTES = 4
#: Checkpoint namespace of the conflict fork records (key: :func:`conflict_fork_key`).
CONFLICT_FORK_NAMESPACE = "kintsugi/conflict-fork"
#: Version of the encoded conflict fork record.
CONFLICT_FORK_VERSION = 1
#: Most origin checkpoints :func:`infer_conflict_fork` looks at (newest first) before it
#: settles for the start of the session.
MAX_INFER_PROBES = 10_000

#: ``h(n)`` of one copy of a session, for ``0 <= n <= count`` (``h(0)`` is the chain base).
HashAt = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class ForkPoint:
    """Transaction ``index`` is the first whose chain hash differs; ``common_hash`` is
    ``h(index)``, the last hash both copies share (the chain base when ``index`` is 0)."""

    index: int
    common_hash: bytes

    def describe(self) -> str:
        """``fork at 3 after 1a2b3c4d``: the index and the last common hash's first bytes."""
        return f"fork at {self.index} after {self.common_hash[:HASH_TEXT_BYTES].hex()}"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "common_hash": self.common_hash.hex()}


def fork_detail(fork: ForkPoint) -> str:
    """The words every report uses for an exact fork point (see :meth:`ForkPoint.describe`)."""
    return fork.describe()


def fork_bound_detail(count: int) -> str:
    """What a known state alone tells: a peer's head at ``count`` differs from ours, so the
    fork point is at or before ``count - 1`` (exactly 0 when ``count`` is 1)."""
    if count <= 1:
        return f"heads differ at count {count}: fork at 0"
    return f"heads differ at count {count}: fork at or before {count - 1}"


def find_fork(left: HashAt, left_count: int, right: HashAt, right_count: int) -> ForkPoint | None:
    """The fork point of two copies of one session (same chain base), or None when one is a
    prefix of the other (identical, or one ahead).

    Binary search on chain hashes: about ``2 * log2(min(count))`` calls of ``left`` and
    ``right``. Hashes are taken as given: whether they link is a matter of verification.
    Raises :class:`UsageError` when the chain bases differ (not copies of one session).
    """
    if left(0) != right(0):
        raise UsageError("not two copies of one session: their chain bases differ")
    common = min(left_count, right_count)
    if common == 0 or left(common) == right(common):
        return None
    low, high = 0, common  # h(low) agrees, h(high) differs
    while high - low > 1:
        middle = (low + high) // 2
        if left(middle) == right(middle):
            low = middle
        else:
            high = middle
    return ForkPoint(low, left(low))


# -- conflict sessions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConflictFork:
    """Where conflict session ``conflict`` stands against ``origin``: its transaction ``j``
    is the origin's index ``fork.index + j``. ``recorded`` is False for an inferred point
    (no record, or one the origin no longer matches)."""

    conflict: SessionID
    origin: SessionID
    fork: ForkPoint
    recorded: bool

    @property
    def basis(self) -> str:
        return "recorded" if self.recorded else "inferred"

    def to_json(self) -> dict[str, Any]:
        return {"conflict": self.conflict, "origin": self.origin, **self.fork.to_json(), "basis": self.basis}


def origin_of(conflict: SessionID) -> SessionID:
    """The session a conflict session was split from. Raises
    :class:`~engine.errors.InvalidId` for a malformed id and :class:`UsageError` for the id
    of a session that is not a conflict session."""
    parsed = parse_session_id(conflict)
    if parsed.base == conflict:
        raise UsageError(f"{conflict} is not a conflict session")
    return parsed.base


def conflict_fork_key(covalue: CoValueID, conflict: SessionID) -> str:
    """The checkpoint key of ``conflict``'s record in :data:`CONFLICT_FORK_NAMESPACE`."""
    return f"{covalue}/{conflict}"


def encode_conflict_fork(origin: SessionID, fork: ForkPoint) -> bytes:
    """The record kept beside a store for a conflict session split off ``origin`` at
    ``fork``: canonical CBOR ``{"v", "origin", "at", "after"}``."""
    return encode({"v": CONFLICT_FORK_VERSION, "origin": origin, "at": fork.index, "after": fork.common_hash})


def decode_conflict_fork(data: bytes) -> tuple[SessionID, ForkPoint] | None:
    """``(origin, fork)`` from :func:`encode_conflict_fork`; None when ``data`` is not a
    record of this version (a record is a hint, never a reason to fail)."""
    try:
        value = decode(data)
    except KintsugiError:
        return None
    if not isinstance(value, dict) or value.get("v") != CONFLICT_FORK_VERSION:
        return None
    origin, at, after = value.get("origin"), value.get("at"), value.get("after")
    if not isinstance(origin, str) or type(at) is not int or at < 0 or not isinstance(after, bytes):
        return None
    return SessionID(origin), ForkPoint(at, after)


def check_conflict_fork(recorded: ForkPoint, origin_count: int, origin_hash: HashAt) -> bool:
    """True when the origin as this replica holds it still agrees with a record: it holds
    at least ``recorded.index`` transactions and ``h(index)`` is the recorded hash."""
    return recorded.index <= origin_count and origin_hash(recorded.index) == recorded.common_hash


def infer_conflict_fork(
    origin_count: int,
    checkpoints: Sequence[int],
    made_at: Callable[[int], int | None],
    origin_hash: HashAt,
    first_made_at: int | None,
) -> ForkPoint:
    """The fork point of a conflict session against its origin, without a record.

    ``checkpoints`` are the origin's (sorted), ``made_at(i)`` the ``madeAt`` of its
    transaction ``i`` (None: undecodable), ``first_made_at`` that of the conflict session's
    first transaction (None: unknown or undecodable). A divergent tail starts where a
    writer resumed from a signed prefix, before the origin's end (else it would extend the
    origin, not fork it), and after the last transaction of that prefix was made: the
    result is the latest checkpoint ``c < origin_count`` whose transaction ``c - 1`` was
    made no later than ``first_made_at`` (0 when there is none within
    :data:`MAX_INFER_PROBES` checkpoints). Exact when the winning copy signed its
    divergent transactions as one batch; see the module docstring for why nothing better
    can be computed.
    """
    probes = 0
    for c in reversed(checkpoints):
        if c >= origin_count or c <= 0:
            continue
        probes += 1
        if probes > MAX_INFER_PROBES:
            break
        if first_made_at is None:
            return ForkPoint(c, origin_hash(c))
        made = made_at(c - 1)
        if made is not None and made <= first_made_at:
            return ForkPoint(c, origin_hash(c))
    return ForkPoint(0, origin_hash(0))
