"""A token bucket: the per-connection rate limit (``Limits.rate_per_second`` /
``Limits.rate_burst``).

Rules this module keeps: time is passed in (seconds from any monotonic clock), never read,
so the bucket is a pure function of the times it is given; a refused take spends nothing, so
a refused peer is not pushed further into debt; the bucket never saves more than ``burst``.
:class:`engine.protocol.guard.FrameGuard` applies it to every frame a peer sends.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full at ``now``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if available; False (nothing spent) when over the rate."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True
