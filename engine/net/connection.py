"""One peer connection: a backlog of messages, a bounded queue of frames, and the writer task.

Messages from the sync layer for a peer go to its *backlog* (cheap: content chunks share
transaction bytes with the CoValue in memory). The writer encodes frames from the backlog only
as the socket drains, keeping at most :attr:`Limits.max_queue_frames` frames /
:attr:`Limits.max_queue_bytes` bytes encoded and waiting. So a peer loading a CoValue larger
than its queue still gets all of it, frame by frame, as fast as it reads.

A peer is *lagged* — closed with :data:`CloseCode.LAGGED`, after which it reconnects and
catches up from a fresh bulk exchange — when one send makes no progress for
:attr:`Limits.lag_timeout` seconds (it stopped reading), or its backlog exceeds
:attr:`Limits.max_backlog_messages`. Either way the node's memory for that peer stays bounded
and the other peers never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from engine.errors import FrameTooLarge
from engine.protocol.frames import OP, encode_frame, pack_frames
from engine.protocol.limits import CloseCode, Limits
from engine.protocol.messages import Content, Error, Message

logger = logging.getLogger(__name__)

#: Seconds a close may take (close frame to a peer that reads) before the socket is aborted.
CLOSE_TIMEOUT = 2.0
#: Messages taken from the backlog and packed together at a time.
PACK_MESSAGES = 256


class PeerConnection:
    def __init__(self, ws: Connection, peer_id: str, limits: Limits) -> None:
        self.ws = ws
        self.peer_id = peer_id
        self.limits = limits
        self._backlog: deque[Message] = deque()
        self._frames: deque[bytes] = deque()
        self._frame_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._final: bytes | None = None
        self.lagged = False
        #: the close code this side sent (None until it closes); the socket may report 1006
        #: when the peer never completed the close handshake
        self.close_code_sent: int | None = None
        self.frames_sent = 0
        loop = asyncio.get_running_loop()
        self._writer = loop.create_task(self._drain(), name=f"kintsugi-writer-{peer_id}")
        self._closer: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Frames encoded and waiting (bounded by ``max_queue_frames``, plus one)."""
        return len(self._frames)

    @property
    def backlog_depth(self) -> int:
        """Messages waiting to be encoded (bounded by ``max_backlog_messages``)."""
        return len(self._backlog)

    @property
    def queued_bytes(self) -> int:
        """Bytes of encoded frames waiting (bounded by ``max_queue_bytes`` plus one frame)."""
        return self._frame_bytes

    def send_messages(self, messages: Iterable[Message]) -> bool:
        """Queue messages for this peer; False when it is closing or has just been found lagged."""
        if self._closing:
            return False
        self._backlog.extend(messages)
        if len(self._backlog) > self.limits.max_backlog_messages:
            self._lag(f"{len(self._backlog)} messages waiting")
            return False
        self._wakeup.set()
        return True

    def send_frame(self, frame: bytes) -> bool:
        """Queue an already encoded frame (handshake replies, errors) ahead of the backlog."""
        if self._closing:
            return False
        self._frames.append(frame)
        self._frame_bytes += len(frame)
        self._wakeup.set()
        return True

    def _room(self) -> bool:
        return not self._frames or (
            len(self._frames) < self.limits.max_queue_frames and self._frame_bytes < self.limits.max_queue_bytes
        )

    def _encode_some(self) -> None:
        """Encode the next frame from the backlog when the frame queue has room.

        One frame at a time, so the first frame leaves while later ones are still messages:
        the peer starts working on a large answer after one frame's encoding, not all of it.
        """
        if not self._backlog or not self._room():
            return
        max_size = self.limits.max_frame_size
        batch: list[Message] = []
        size = 0
        while self._backlog and len(batch) < PACK_MESSAGES:
            message = self._backlog[0]
            hint = message.size_hint() if isinstance(message, Content) else 256
            if batch and size + hint > max_size // 2:
                break
            batch.append(self._backlog.popleft())
            size += hint
        try:
            frames = [encode_frame(OP, batch)] if len(batch) == 1 else pack_frames(batch, max_size=max_size)
        except FrameTooLarge as exc:
            # Never happens for content split at checkpoints under the frame limit; if a
            # limit is set too low, say so to the peer instead of dying.
            logger.error("message for %s does not fit a frame: %s", self.peer_id, exc)
            frames = [encode_frame(OP, [Error.of(exc)])]
        for encoded in frames:
            frame = encoded
            if len(frame) > max_size:
                logger.error("frame of %d bytes for %s exceeds the frame limit; dropped", len(frame), self.peer_id)
                frame = encode_frame(OP, [Error.of(FrameTooLarge(len(frame), max_size))])
            self._frames.append(frame)
            self._frame_bytes += len(frame)

    async def _drain(self) -> None:
        try:
            while True:
                if len(self._frames) < 2:
                    self._encode_some()
                if not self._frames:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                frame = self._frames[0]
                try:
                    await asyncio.wait_for(self.ws.send(frame), self.limits.lag_timeout)
                except TimeoutError:
                    self._lag(f"no write progress for {self.limits.lag_timeout:.0f} s")
                    return
                self._frames.popleft()
                self._frame_bytes -= len(frame)
                self.frames_sent += 1
        except ConnectionClosed:
            return

    def _lag(self, why: str) -> None:
        logger.warning("peer %s lagged (%s); closing it", self.peer_id, why)
        self.lagged = True
        self.close(CloseCode.LAGGED, "lagged")

    def close(self, code: int = CloseCode.NORMAL, reason: str = "", *, final: Message | None = None) -> None:
        """Stop sending and close the WebSocket in the background (never blocks the node).

        A normal close first sends what is queued; any other drops the backlog, sends only
        ``final`` (the error that explains the close), then closes.
        """
        if self._closing:
            return
        self._closing = True
        self.close_code_sent = code
        if code != CloseCode.NORMAL:
            self._backlog.clear()
            self._frames.clear()
            self._frame_bytes = 0
            if final is not None:
                self._final = encode_frame(OP, [final])
            if asyncio.current_task() is not self._writer:
                self._writer.cancel()
        self._wakeup.set()
        self._closer = asyncio.get_running_loop().create_task(
            self._close(code, reason), name=f"kintsugi-close-{self.peer_id}"
        )

    async def _close(self, code: int, reason: str) -> None:
        if code == CloseCode.NORMAL and asyncio.current_task() is not self._writer:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._writer), self.limits.handshake_timeout)
        try:
            if self._final is not None:
                await asyncio.wait_for(self.ws.send(self._final), CLOSE_TIMEOUT)
            await asyncio.wait_for(self.ws.close(code, reason), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionClosed):
            # A peer that does not read cannot take a close frame either: drop the socket.
            self.ws.transport.abort()

    async def wait_closed(self) -> None:
        if not self._writer.done() and asyncio.current_task() is not self._writer:
            self._writer.cancel()
        await asyncio.gather(self._writer, return_exceptions=True)
        if self._closer is not None:
            await asyncio.gather(self._closer, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ws.wait_closed(), CLOSE_TIMEOUT)
        if self.ws.close_code is None:
            self.ws.transport.abort()
