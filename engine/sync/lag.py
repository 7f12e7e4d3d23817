"""Each peer's lag over time: a bounded ring of samples per peer, for the inspector's chart.

Pure and Qt-free, like the rest of ``engine/sync``: it reads no clock. Whoever reads the
peer rows (:class:`~engine.sync.peers.PeerInfo`, e.g. the inspector's peers model on its
once-a-second poll) hands them to :meth:`LagHistory.record` together with the time it read
them; every call is one *tick*. Each peer seen in a tick gets one :class:`LagSample`
(transactions behind, queued frames and bytes) in its own ring.

Bounds, all named and handed in:

- :data:`DEFAULT_KEEP_SAMPLES` ticks are kept (600: ten minutes at one tick a second); each
  peer's ring holds at most that many samples, oldest dropped first.
- A peer that is gone (absent from the latest tick) keeps its line: its samples stay until
  they are older than the oldest tick kept, then it is forgotten (it *ages out*).
- At most :data:`DEFAULT_MAX_PEERS` peers are followed. Reconnecting peers get new ids, so
  over ten minutes many lines can pile up: when a new peer would pass the limit, the gone
  peer whose newest sample is oldest is forgotten first; if every followed peer is still
  connected, the new peer is not followed and counted in :attr:`LagHistory.untracked`.

Times are milliseconds since the epoch. A tick earlier than the previous one (the wall clock
was set back) is recorded at the previous tick's time, so every ring stays in time order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import UsageError
from engine.sync.peers import PeerInfo

__all__ = ["DEFAULT_KEEP_SAMPLES", "DEFAULT_MAX_PEERS", "LagHistory", "LagSample", "PeerLagRing"]

#: Ticks (and so samples per peer) kept: ten minutes at the inspector's one poll a second.
DEFAULT_KEEP_SAMPLES = 600
#: Peers followed at once, connected and gone together.
DEFAULT_MAX_PEERS = 200


@dataclass(frozen=True, slots=True)
class LagSample:
    """One peer at one tick: transactions behind, frames and bytes in its outgoing queue."""

    at_ms: int
    behind: int
    queue_frames: int
    queue_bytes: int


class PeerLagRing:
    """The samples of one peer, oldest first, in parallel columns (cheap to hand to a chart
    as arrays). ``account`` and ``kind`` are those of its latest row."""

    __slots__ = ("account", "at_ms", "behind", "kind", "peer_id", "queue_bytes", "queue_frames")

    def __init__(self, peer_id: str, account: str, kind: str, keep: int) -> None:
        self.peer_id = peer_id
        self.account = account
        self.kind = kind
        self.at_ms: deque[int] = deque(maxlen=keep)
        self.behind: deque[int] = deque(maxlen=keep)
        self.queue_frames: deque[int] = deque(maxlen=keep)
        self.queue_bytes: deque[int] = deque(maxlen=keep)

    def __len__(self) -> int:
        return len(self.at_ms)

    @property
    def last_ms(self) -> int:
        """Time of the newest sample (a ring is never left empty)."""
        return self.at_ms[-1]

    def samples(self) -> list[LagSample]:
        return [LagSample(*s) for s in zip(self.at_ms, self.behind, self.queue_frames, self.queue_bytes, strict=True)]

    def _append(self, at_ms: int, row: PeerInfo) -> None:
        self.account, self.kind = row.account, row.kind
        self.at_ms.append(at_ms)
        self.behind.append(row.behind)
        self.queue_frames.append(row.queue_frames)
        self.queue_bytes.append(row.queue_bytes)

    def _drop_before(self, start_ms: int) -> None:
        while self.at_ms and self.at_ms[0] < start_ms:
            for column in (self.at_ms, self.behind, self.queue_frames, self.queue_bytes):
                column.popleft()


class LagHistory:
    """Lag samples of every peer over the last ``keep_samples`` ticks (see the module doc).

    Raises :class:`~engine.errors.UsageError` for a limit below 1.
    """

    def __init__(self, keep_samples: int = DEFAULT_KEEP_SAMPLES, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if keep_samples < 1 or max_peers < 1:
            raise UsageError(
                f"lag history limits must be at least 1: keep_samples={keep_samples}, max_peers={max_peers}"
            )
        self.keep_samples = keep_samples
        self.max_peers = max_peers
        self._ticks: deque[int] = deque(maxlen=keep_samples)
        self._rings: dict[str, PeerLagRing] = {}  # in the order peers were first seen
        self._connected: frozenset[str] = frozenset()
        #: Peers seen but not followed because :attr:`max_peers` connected peers were.
        self.untracked = 0
        #: Ticks recorded since creation or :meth:`clear` (a chart redraws when it moved).
        self.version = 0

    def record(self, at_ms: int, rows: Iterable[PeerInfo]) -> None:
        """One tick: the peers connected at ``at_ms``. A peer listed twice counts once (its
        last row)."""
        if self._ticks and at_ms < self._ticks[-1]:
            at_ms = self._ticks[-1]
        self._ticks.append(at_ms)
        latest = {row.peer_id: row for row in rows}
        self._connected = frozenset(latest)
        start = self._ticks[0]
        for peer_id in list(self._rings):
            ring = self._rings[peer_id]
            ring._drop_before(start)
            if not ring:
                del self._rings[peer_id]
        for peer_id, row in latest.items():
            ring_or_none = self._rings.get(peer_id)
            if ring_or_none is None:
                if not self._make_room():
                    self.untracked += 1
                    continue
                ring_or_none = self._rings[peer_id] = PeerLagRing(peer_id, row.account, row.kind, self.keep_samples)
            ring_or_none._append(at_ms, row)
        self.version += 1

    def _make_room(self) -> bool:
        """Forget gone peers, stalest first, until one more fits; False if none can go."""
        while len(self._rings) >= self.max_peers:
            gone = [ring for ring in self._rings.values() if ring.peer_id not in self._connected]
            if not gone:
                return False
            del self._rings[min(gone, key=lambda ring: ring.last_ms).peer_id]
        return True

    def clear(self) -> None:
        """Forget everything (another node is shown)."""
        self._ticks.clear()
        self._rings.clear()
        self._connected = frozenset()
        self.untracked = 0
        self.version = 0

    @property
    def ticks(self) -> list[int]:
        """Times of the ticks kept, oldest first."""
        return list(self._ticks)

    @property
    def window(self) -> tuple[int, int] | None:
        """``(oldest, newest)`` tick times kept; None before the first tick."""
        return (self._ticks[0], self._ticks[-1]) if self._ticks else None

    def connected(self, peer_id: str) -> bool:
        """True if ``peer_id`` was in the latest tick."""
        return peer_id in self._connected

    def peers(self) -> list[str]:
        """Followed peers, connected or gone, in the order first seen."""
        return list(self._rings)

    def ring(self, peer_id: str) -> PeerLagRing | None:
        """The samples of ``peer_id``; None if it is not followed (never seen, aged out,
        forgotten for room, or untracked)."""
        return self._rings.get(peer_id)

    def rings(self) -> list[PeerLagRing]:
        """Every followed peer's samples, in the order first seen."""
        return list(self._rings.values())

    def __len__(self) -> int:
        return len(self._rings)
