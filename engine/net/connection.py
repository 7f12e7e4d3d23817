"""One peer connection: a bounded outgoing queue and the task that drains it.

Frames for a peer are queued without blocking the node. A peer that does not keep up — more
than :attr:`Limits.max_queue_frames` frames or :attr:`Limits.max_queue_bytes` bytes waiting, beyond one frame —
is closed with :data:`CloseCode.LAGGED`; it reconnects and catches up from a fresh bulk
exchange. So one slow reader costs the node a bounded amount of memory and costs the other
peers nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from engine.protocol.limits import CloseCode, Limits

logger = logging.getLogger(__name__)


class PeerConnection:
    def __init__(self, ws: Connection, peer_id: str, limits: Limits) -> None:
        self.ws = ws
        self.peer_id = peer_id
        self.limits = limits
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self.lagged = False
        self.frames_sent = 0
        self._writer = asyncio.get_running_loop().create_task(self._drain(), name=f"kintsugi-writer-{peer_id}")

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, frame: bytes) -> bool:
        """Queue ``frame``; False (and the peer is closed as lagged) when it cannot keep up."""
        if self._closing:
            return False
        # One frame is always accepted (a single large content frame is not lagging); beyond
        # that, the queue must stay under both limits.
        if self._queue and (
            len(self._queue) >= self.limits.max_queue_frames
            or self._queued_bytes + len(frame) > self.limits.max_queue_bytes
        ):
            logger.warning(
                "peer %s lagged (%d frames, %d bytes waiting); closing it",
                self.peer_id,
                len(self._queue),
                self._queued_bytes,
            )
            self.lagged = True
            self.close(CloseCode.LAGGED, "lagged")
            return False
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        self._wakeup.set()
        return True

    async def _drain(self) -> None:
        try:
            while True:
                while not self._queue:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                frame = self._queue[0]
                await self.ws.send(frame)
                self._queue.popleft()
                self._queued_bytes -= len(frame)
                self.frames_sent += 1
        except ConnectionClosed:
            return

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Stop sending and close the WebSocket (in the background; never blocks the node)."""
        if self._closing:
            return
        self._closing = True
        self._wakeup.set()
        if code != CloseCode.NORMAL:
            self._queue.clear()
            self._queued_bytes = 0
            self._writer.cancel()
        asyncio.get_running_loop().create_task(self._close(code, reason), name=f"kintsugi-close-{self.peer_id}")

    async def _close(self, code: int, reason: str) -> None:
        if code == CloseCode.NORMAL:
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), self.limits.handshake_timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
        await self.ws.close(code, reason)

    async def wait_closed(self) -> None:
        if not self._writer.done():
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        await self.ws.wait_closed()
