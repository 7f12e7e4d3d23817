"""Forked sessions made on purpose, for the node and crash tests (DESIGN §5, §7.1).

A fork needs two writers of one session. The owner is a normal :class:`LocalNode`; its
*twin* is an in-memory node of the same account that takes the owner's session through the
``session=`` constructor argument, which bypasses the lease (the very thing leases prevent).
Both copy the same common prefix, then each writes its own tail: the twin's history is the
authoritative one that :meth:`LocalNode.replace_session` installs on the owner.

Also importable from child scripts, so it uses nothing from pytest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import codec
from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID
from engine.model.header import OwnedByGroup
from engine.model.session_log import Chunk
from engine.node.facade import LocalNode

#: Keys written by each side of a fork.
COMMON, MINE, THEIRS = "common", "mine", "theirs"


def key_from_seed(n: int) -> AccountKey:
    """A deterministic account key (``n`` < 256)."""
    return AccountKey.from_seed(bytes([n]) * 32)


def copy_covalue(src: LocalNode, dst: LocalNode, covalue: CoValueID) -> None:
    """Give ``dst`` what ``src`` holds of ``covalue`` (its owner group first), as a peer would."""
    core = src.get(covalue)
    if isinstance(core.header.ruleset, OwnedByGroup):
        copy_covalue(src, dst, core.header.ruleset.group)
    src.flush()
    dst.add_header(core.header)
    chunks = {sid: log.chunk() for sid, log in core.sessions.items() if log.signed_count}
    if chunks:
        dst.apply_content(covalue, chunks)


def write_keys(node: LocalNode, covalue: CoValueID, prefix: str, count: int, start: int = 0) -> None:
    """``count`` sets ``f"{prefix}/{i}" = [prefix, i]`` in one batch."""
    with node.batch():
        for i in range(start, start + count):
            node.set(covalue, f"{prefix}/{i}", [prefix, i])


def expected_keys(prefix: str, count: int, start: int = 0) -> dict[str, Any]:
    return {f"{prefix}/{i}": [prefix, i] for i in range(start, start + count)}


@dataclass
class Fork:
    """An owner node and its in-memory twin writing the same session of one CoMap."""

    owner: LocalNode
    twin: LocalNode
    covalue: CoValueID
    session: SessionID

    def authoritative(self) -> Chunk:
        """The twin's whole history of the session, from index 0."""
        return self.twin.get(self.covalue).sessions[self.session].chunk()


def make_fork(owner: LocalNode, covalue: CoValueID, *, common: int, mine: int, theirs: int) -> Fork:
    """Write ``common`` keys, copy them to a twin, then ``mine`` on the owner and ``theirs``
    on the twin, each in batches (so each side has its own signed, diverging tail)."""
    write_keys(owner, covalue, COMMON, common)
    twin = LocalNode(owner.account, None, session=owner.session)
    copy_covalue(owner, twin, covalue)
    write_keys(owner, covalue, MINE, mine)
    write_keys(twin, covalue, THEIRS, theirs)
    return Fork(owner, twin, covalue, owner.session)


def save_chunk(chunk: Chunk, path: Path) -> None:
    path.write_bytes(codec.encode({"after": chunk.after, "txs": list(chunk.txs), "sigs": dict(chunk.sigs)}))


def load_chunk(path: Path) -> Chunk:
    obj = codec.decode(path.read_bytes())
    return Chunk(obj["after"], obj["txs"], obj["sigs"])
