"""What a connection does with each frame a peer sends after the handshake, decided sans-I/O:
deliver its messages, reject it and read on, or close the connection (DESIGN §6,
docs/protocol.md "Transport and frames", "Limits", "Close codes").

:class:`FrameGuard` is fed ``(bytes, time)`` for every frame, in order, and returns one
decision. The shell (:meth:`engine.net.shell.SyncShell.read_loop`) applies it: sends the
errors, hands the messages to the sync layer, or closes with the code given after sending the
error that explains the close. The time is passed in (seconds of any monotonic clock).

Rules, checked in this order for each frame:

1. Rate limit (only when the guard is ``rate_limited``: a node's downstream peers, not the
   node a client connected to): a :class:`~engine.protocol.ratelimit.TokenBucket` of
   ``Limits.rate_per_second``, ``Limits.rate_burst`` frames, starting full. A frame over it
   closes with 4429 and ``error{rate_limited}``, before the frame is even decoded.
2. The frame is decoded (:func:`engine.protocol.frames.decode_frame`: the size limit is
   checked first). An envelope version this build does not speak closes at once with 4426
   and ``error{unsupported_version}``: no budget, the peer speaks something else.
3. Any other frame-level problem (too large, not CBOR, not an envelope, too many messages)
   costs one from the malformed budget and rejects the frame with ``error{code}``; the
   connection goes on.
4. Each invalid message of a decodable frame costs one from the same budget and gets its own
   ``error{code}``; the valid messages are delivered.
5. The budget is ``Limits.max_malformed_frames``: the problem that goes over it closes the
   connection with 4400 and that problem's error instead; nothing of that frame is
   delivered. A good frame costs nothing.

After a close decision the guard is spent: feeding it again is our own bug and raises
:class:`~engine.errors.UsageError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import KintsugiError, ProtocolError, UnsupportedVersion, UsageError
from engine.protocol.frames import decode_frame
from engine.protocol.limits import MAX_CLOSE_REASON, CloseCode, Limits
from engine.protocol.messages import Error, Message
from engine.protocol.ratelimit import TokenBucket

__all__ = ["GUARD_CLOSE_CODES", "Close", "Deliver", "FrameGuard", "Reject"]

#: The close codes a guard closes a connection with.
GUARD_CLOSE_CODES = frozenset({CloseCode.PROTOCOL_ERROR, CloseCode.RATE_LIMITED, CloseCode.UNSUPPORTED_VERSION})


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send each of ``errors`` (one per invalid message of the frame, in order), then hand
    ``messages`` to the sync layer."""

    messages: tuple[Message, ...]
    errors: tuple[Error, ...] = ()


@dataclass(frozen=True, slots=True)
class Reject:
    """The frame is refused as a whole: send ``error`` and read on. ``cause`` is the problem
    (a :class:`~engine.errors.FrameTooLarge` carries the frame's size, for the log)."""

    error: Error
    cause: KintsugiError


@dataclass(frozen=True, slots=True)
class Close:
    """Stop reading: send ``error`` (the reason, first), then close with ``code`` and
    ``reason``. ``cause`` is the frame's problem when there was one."""

    code: int
    reason: str
    error: Error
    cause: KintsugiError | None = None

    def __post_init__(self) -> None:
        if self.code not in GUARD_CLOSE_CODES:
            raise UsageError(f"{self.code} is not a close code of the frame guard")
        if len(self.reason.encode()) > MAX_CLOSE_REASON:
            raise UsageError(f"close reason over {MAX_CLOSE_REASON} bytes")


Decision = Deliver | Reject | Close


class FrameGuard:
    """The per-connection frame checks: rate limit, decoding, malformed budget.

    ``now`` is the time the connection started reading (the bucket starts full then);
    ``rate_limited=False`` applies no rate limit (a client reading from its upstream node).
    """

    def __init__(self, limits: Limits, now: float, *, rate_limited: bool = True) -> None:
        self.limits = limits
        self.bucket = TokenBucket(limits.rate_per_second, limits.rate_burst, now) if rate_limited else None
        #: malformed frames and messages counted so far
        self.malformed = 0
        #: frames that decoded so far (delivered, or closed for their invalid messages)
        self.decoded = 0
        self.closed = False

    def receive(self, data: bytes, now: float) -> Decision:
        """Decide what to do with one frame received at ``now`` (rules 1-5 of the module).
        Raises :class:`UsageError` after a :class:`Close` was returned."""
        if self.closed:
            raise UsageError("frame guard: receive after the connection was closed")
        if self.bucket is not None and not self.bucket.take(now):
            flood = ProtocolError("too many frames; slow down", code="rate_limited")
            return self._close(CloseCode.RATE_LIMITED, "rate limited", flood, None)
        try:
            frame = decode_frame(
                data, max_size=self.limits.max_frame_size, max_messages=self.limits.max_messages_per_frame
            )
        except UnsupportedVersion as exc:
            return self._close(CloseCode.UNSUPPORTED_VERSION, "unsupported version", exc, exc)
        except KintsugiError as exc:
            if self._spend():
                return self._close(CloseCode.PROTOCOL_ERROR, "too many malformed frames", exc, exc)
            return Reject(Error.of(exc), exc)
        self.decoded += 1
        for problem in frame.errors:
            if self._spend():
                return self._close(CloseCode.PROTOCOL_ERROR, "too many malformed messages", problem, problem)
        return Deliver(tuple(frame.messages), tuple(Error.of(problem) for problem in frame.errors))

    def _spend(self) -> bool:
        """Count one malformed frame or message; True when that goes over the budget."""
        self.malformed += 1
        return self.malformed > self.limits.max_malformed_frames

    def _close(self, code: int, reason: str, error: KintsugiError, cause: KintsugiError | None) -> Close:
        self.closed = True
        return Close(code, reason, Error.of(error), cause)
