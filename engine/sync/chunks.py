"""Cutting session chunks to fit frames, sans-I/O: pure functions of chunks and byte sizes.

Content crosses the wire in frames of at most ``limits.max_frame_size`` bytes. A chunk can only
be cut at its checkpoints (every piece must end at a signature the receiver can verify), so:

- :func:`split_chunk` cuts one chunk at its checkpoints into pieces of about a budget, and
  :func:`split_content` groups the pieces of several sessions into ``content`` payloads;
- a run of transactions between two checkpoints is never cut, so a replica refuses content
  whose :func:`longest_stretch` exceeds :func:`servable_stretch` — it could never pass it on.

Sizes here are estimates of the canonical CBOR (a few bytes of framing per transaction and
signature); :data:`FRAME_HEADROOM` leaves room for the rest of the frame.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.ids import SessionID
from engine.model.session_log import Chunk, sigs_between

#: Bytes of a frame kept free for the envelope, the header and encoding overhead (a quarter
#: of the frame when frames are small).
FRAME_HEADROOM = 64 * 1024


def servable_stretch(max_frame_size: int) -> int:
    """Largest run of transactions between checkpoints that can be passed on in one frame."""
    return max_frame_size - min(FRAME_HEADROOM, max_frame_size // 4)


def longest_stretch(chunk: Chunk) -> int:
    """Encoded size (about) of the largest run of transactions between two checkpoints."""
    longest = 0
    start = chunk.after
    for n in sorted(k for k in chunk.sigs if type(k) is int):
        size = sum(len(tx) + 5 for tx in chunk.txs[start - chunk.after : n - chunk.after]) + 80
        longest = max(longest, size)
        start = n
    return longest


def split_chunk(chunk: Chunk, budget: int) -> list[Chunk]:
    """Cut a chunk at its checkpoints into pieces of about ``budget`` bytes or less.

    A stretch between two checkpoints is never cut (every piece must end at a checkpoint), so
    a piece may exceed the budget when one batch alone does.
    """
    if not chunk.txs:
        return [chunk]
    pieces: list[Chunk] = []
    start = chunk.after
    size = 0
    last_cut = start
    checkpoints = sorted(chunk.sigs)
    sizes = [len(tx) + 4 for tx in chunk.txs]
    position = chunk.after
    for n in checkpoints:
        stretch = sum(sizes[position - chunk.after : n - chunk.after])
        if size and size + stretch > budget:
            pieces.append(_sub_chunk(chunk, start, last_cut))
            start, size = last_cut, 0
        size += stretch
        last_cut = position = n
    pieces.append(_sub_chunk(chunk, start, chunk.end))
    return pieces


def _sub_chunk(chunk: Chunk, start: int, end: int) -> Chunk:
    lo, hi = start - chunk.after, end - chunk.after
    return Chunk(start, chunk.txs[lo:hi], sigs_between(chunk.sigs, start, end))


def split_content(new: dict[SessionID, Chunk], budget: int) -> Iterable[dict[SessionID, Chunk]]:
    """Group session chunks (split at checkpoints) into content payloads of about ``budget``."""
    part: dict[SessionID, Chunk] = {}
    size = 0
    for sid, chunk in new.items():
        for piece in split_chunk(chunk, budget):
            piece_size = sum(len(tx) + 4 for tx in piece.txs) + 80 * len(piece.sigs) + 100
            if part and (size + piece_size > budget or sid in part):
                yield part
                part, size = {}, 0
            part[sid] = piece
            size += piece_size
    if part:
        yield part


__all__ = ["FRAME_HEADROOM", "longest_stretch", "servable_stretch", "split_chunk", "split_content"]
