"""Cutting chunks to fit frames: pieces end at checkpoints, cover the chunk in order, and stay
within the budget unless one stretch between checkpoints alone is larger.

Pure functions: no manager, no event loop.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from engine.model.session_log import Chunk
from engine.sync.chunks import FRAME_HEADROOM, longest_stretch, servable_stretch, split_chunk, split_content
from tests.engine.factories import account, session


@st.composite
def chunks(draw: st.DrawFn) -> Chunk:
    """A chunk that ends at a checkpoint, with checkpoints anywhere before."""
    after = draw(st.integers(0, 5))
    txs = draw(st.lists(st.binary(max_size=200), min_size=1, max_size=30))
    end = after + len(txs)
    cuts = draw(st.sets(st.integers(after + 1, end), max_size=len(txs))) | {end}
    return Chunk(after, tuple(txs), {n: b"sig%d" % n for n in cuts})


def stretches(chunk: Chunk) -> list[int]:
    """Bytes (as split_chunk counts them) of each run between two checkpoints."""
    start, out = chunk.after, []
    for n in sorted(chunk.sigs):
        out.append(sum(len(tx) + 4 for tx in chunk.txs[start - chunk.after : n - chunk.after]))
        start = n
    return out


@given(chunks(), st.integers(1, 3000))
def test_split_chunk_cuts_only_at_checkpoints_and_loses_nothing(chunk: Chunk, budget: int) -> None:
    pieces = split_chunk(chunk, budget)
    assert pieces[0].after == chunk.after and pieces[-1].end == chunk.end
    assert [tx for piece in pieces for tx in piece.txs] == list(chunk.txs)
    assert {n: s for piece in pieces for n, s in piece.sigs.items()} == dict(chunk.sigs)
    for before, piece in itertools.pairwise(pieces):
        assert before.end == piece.after
    for piece in pieces:
        assert piece.end in piece.sigs
        size = sum(len(tx) + 4 for tx in piece.txs)
        assert size <= budget or len(piece.sigs) == 1, "only a single oversized stretch may exceed the budget"
    assert len(pieces) == 1 or sum(stretches(chunk)) > budget


def test_split_chunk_keeps_an_empty_chunk_whole() -> None:
    empty = Chunk(3, (), {})
    assert split_chunk(empty, 10) == [empty]


@given(st.lists(chunks(), min_size=1, max_size=4), st.integers(1, 3000))
def test_split_content_sends_each_session_in_order_one_piece_per_payload(parts: list[Chunk], budget: int) -> None:
    new = {session(account(1), i): chunk for i, chunk in enumerate(parts)}
    payloads = list(split_content(new, budget))
    for sid, chunk in new.items():
        pieces = [payload[sid] for payload in payloads if sid in payload]
        assert pieces == split_chunk(chunk, budget)


def test_stretches_over_the_servable_size_are_found() -> None:
    assert servable_stretch(4 * 1024 * 1024) == 4 * 1024 * 1024 - FRAME_HEADROOM
    assert servable_stretch(1000) == 750
    chunk = Chunk(0, (b"a" * 10, b"b" * 700, b"c" * 10), {1: b"s", 2: b"s", 3: b"s"})
    assert longest_stretch(chunk) == 700 + 5 + 80 > servable_stretch(1000)
    assert longest_stretch(Chunk(0, (b"a",), {1: b"s"})) == 1 + 5 + 80
