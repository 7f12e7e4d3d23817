"""The peers × sessions matrix: how much of each session each peer of a node has acknowledged.

Rows are a node's peers, columns the sessions the node holds (a CoValue and a session id,
with the count the node holds), and a cell is what the peer last reported holding of that
session in its own ``load``/``known`` (its *acknowledged* count), for the CoValues the peer
follows. ``behind`` is the node's count minus the acknowledged one; a cell whose acknowledged
head is not on the node's chain is *diverged* (the peer holds another history: a fork).
A peer that does not follow a CoValue has no cells in its columns.

:func:`matrix_of` builds it from a sync manager's per-peer beliefs (anything shaped like
:class:`AckSource`) and the node's loaded CoValues; it is pure and changes nothing. A node
seen over the wire sends the whole matrix in the same form (``admin{matrix}``,
docs/protocol.md); an older one only its peers: :func:`partial_matrix` keeps their rows and
total lag, with ``available`` False and a note saying so. :meth:`PeersSessionsMatrix.to_json`
and :func:`matrix_from_json` are the form bundles, ``kintsugi inspect --json`` and
``admin{matrix}`` carry (cells sparse, by row and column number).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.errors import InvalidInput
from engine.ids import CoValueID, SessionID
from engine.model.header import OwnedByGroup
from engine.model.session_log import SessionLog

__all__ = [
    "REMOTE_MATRIX_NOTE",
    "STORE_MATRIX_NOTE",
    "AckSource",
    "MatrixCell",
    "MatrixColumn",
    "MatrixPeer",
    "PeersSessionsMatrix",
    "matrix_from_json",
    "matrix_of",
    "partial_matrix",
]

#: Why a store (or a bundle of one) has no matrix.
STORE_MATRIX_NOTE = "a store file has no peers: the matrix belongs to a running node"
#: Why a node seen over the wire has rows without cells.
REMOTE_MATRIX_NOTE = (
    "the node reports its peers and their total lag, not per-session acknowledgements "
    "(it does not answer admin{matrix}: an older node)"
)


class _Kind(Protocol):
    @property
    def value(self) -> str: ...


class AckPeer(Protocol):
    """One peer as a sync manager believes it (:class:`engine.sync.manager.PeerState`)."""

    @property
    def account(self) -> str: ...

    @property
    def kind(self) -> _Kind: ...

    @property
    def interested(self) -> set[CoValueID]: ...

    @property
    def acked(self) -> dict[CoValueID, dict[SessionID, tuple[int, bytes]]]: ...


class AckSource(Protocol):
    """What :func:`matrix_of` reads of a sync manager."""

    @property
    def peers(self) -> Mapping[str, AckPeer]: ...


class HeldCoValue(Protocol):
    """What :func:`matrix_of` reads of a node's CoValue (:class:`engine.covalue.CoValueCore`)."""

    @property
    def sessions(self) -> Mapping[SessionID, SessionLog]: ...


@dataclass(frozen=True, slots=True)
class MatrixPeer:
    """A row. ``behind`` is the peer's total lag when only that is known (a remote node's
    ``peers`` row), else None (sum the cells)."""

    peer_id: str
    account: str
    kind: str
    behind: int | None = None


@dataclass(frozen=True, slots=True)
class MatrixColumn:
    """A column: one session of one CoValue and the count the node holds."""

    covalue: CoValueID
    session: SessionID
    count: int


@dataclass(frozen=True, slots=True)
class MatrixCell:
    """What one peer acknowledged of one session; ``behind`` = held count − ``acked``."""

    acked: int
    behind: int
    diverged: bool = False


@dataclass(frozen=True)
class PeersSessionsMatrix:
    """Peers × sessions. ``cells`` maps ``(row, column)`` to a :class:`MatrixCell`, only for
    the CoValues the row's peer follows. ``available`` False: the rows are known but not the
    cells (``note`` says why)."""

    peers: tuple[MatrixPeer, ...] = ()
    columns: tuple[MatrixColumn, ...] = ()
    cells: Mapping[tuple[int, int], MatrixCell] = field(default_factory=dict)
    available: bool = True
    note: str = ""
    #: CoValue → the group that owns it (for "the sessions of a group and its CoValues")
    owners: Mapping[CoValueID, CoValueID] = field(default_factory=dict)

    def cell(self, row: int, column: int) -> MatrixCell | None:
        """None: the peer does not follow that CoValue (or the cell is not known)."""
        return self.cells.get((row, column))

    def columns_of(self, covalue: CoValueID) -> list[int]:
        """Column numbers of ``covalue``'s sessions and, for a group, of the sessions of every
        CoValue it owns, in column order."""
        wanted = {covalue} | {cid for cid, group in self.owners.items() if group == covalue}
        return [i for i, col in enumerate(self.columns) if col.covalue in wanted]

    def behind(self, row: int) -> int:
        """Total transactions peer ``row`` has not acknowledged (its ``behind`` when only that
        is known)."""
        known = self.peers[row].behind
        if known is not None:
            return known
        return sum(cell.behind for (r, _c), cell in self.cells.items() if r == row)

    def acked_sessions(self, row: int, covalue: CoValueID) -> dict[SessionID, int] | None:
        """What peer ``row`` acknowledged of each session of ``covalue`` (None: it does not
        follow the CoValue, or cells are not available)."""
        if not self.available:
            return None
        out = {
            self.columns[c].session: cell.acked
            for (r, c), cell in self.cells.items()
            if r == row and self.columns[c].covalue == covalue
        }
        return out or None

    def to_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "note": self.note,
            "peers": [
                {"peer_id": p.peer_id, "account": p.account, "kind": p.kind, "behind": self.behind(i)}
                for i, p in enumerate(self.peers)
            ],
            "sessions": [{"covalue": c.covalue, "session": c.session, "count": c.count} for c in self.columns],
            "cells": [[r, c, cell.acked, cell.behind, cell.diverged] for (r, c), cell in sorted(self.cells.items())],
            "owners": dict(sorted(self.owners.items())),
        }


def matrix_of(
    source: AckSource, held: Mapping[CoValueID, HeldCoValue], owners: Mapping[CoValueID, CoValueID] | None = None
) -> PeersSessionsMatrix:
    """The matrix of a node: rows are ``source``'s peers (by peer id), columns every session
    of ``held`` (the node's loaded CoValues, by CoValue and session id). ``owners`` maps
    CoValues to their owner group (None: read from the held CoValues' headers when they
    have them)."""
    columns: list[MatrixColumn] = []
    logs: dict[tuple[CoValueID, SessionID], SessionLog] = {}
    for cid in sorted(held):
        for sid, log in sorted(held[cid].sessions.items()):
            columns.append(MatrixColumn(cid, sid, log.signed_count))
            logs[(cid, sid)] = log
    by_covalue: dict[CoValueID, list[int]] = {}
    for i, col in enumerate(columns):
        by_covalue.setdefault(col.covalue, []).append(i)
    peers: list[MatrixPeer] = []
    cells: dict[tuple[int, int], MatrixCell] = {}
    for row, (peer_id, peer) in enumerate(sorted(source.peers.items())):
        peers.append(MatrixPeer(peer_id, str(peer.account), str(peer.kind.value)))
        for cid in sorted(peer.interested):
            acked = peer.acked.get(cid, {})
            for column in by_covalue.get(cid, []):
                col = columns[column]
                count, head = acked.get(col.session, (0, b""))
                log = logs[(cid, col.session)]
                # more than we hold, or a head off our chain: the peer holds another history
                diverged = count > log.count or (count > 0 and head != log.hash_at(count))
                cells[(row, column)] = MatrixCell(count, max(0, col.count - count), diverged)
    if owners is None:
        owners = _owners(held)
    return PeersSessionsMatrix(tuple(peers), tuple(columns), cells, True, "", dict(owners))


def _owners(held: Mapping[CoValueID, HeldCoValue]) -> dict[CoValueID, CoValueID]:
    out: dict[CoValueID, CoValueID] = {}
    for cid, core in held.items():
        header = getattr(core, "header", None)
        ruleset = getattr(header, "ruleset", None)
        if isinstance(ruleset, OwnedByGroup):
            out[cid] = ruleset.group
    return out


def partial_matrix(
    peers: Iterable[tuple[str, str, str, int]], columns: Iterable[MatrixColumn] = (), note: str = REMOTE_MATRIX_NOTE
) -> PeersSessionsMatrix:
    """Rows without cells: ``(peer id, account, kind, total behind)`` per peer."""
    rows = tuple(MatrixPeer(p, a, k, b) for p, a, k, b in peers)
    return PeersSessionsMatrix(rows, tuple(columns), {}, False, note)


def matrix_from_json(obj: object) -> PeersSessionsMatrix:
    """A matrix as :meth:`PeersSessionsMatrix.to_json` wrote it. Raises
    :class:`InvalidInput` for anything else."""
    if not isinstance(obj, dict):
        raise InvalidInput("not a peers × sessions matrix: not a map")
    try:
        peers = tuple(MatrixPeer(str(p["peer_id"]), str(p["account"]), str(p["kind"]), None) for p in obj["peers"])
        columns = tuple(
            MatrixColumn(CoValueID(str(c["covalue"])), SessionID(str(c["session"])), int(c["count"]))
            for c in obj["sessions"]
        )
        cells = {
            (int(r), int(c)): MatrixCell(int(acked), int(behind), bool(diverged))
            for r, c, acked, behind, diverged in obj["cells"]
        }
        available = bool(obj["available"])
        if not available:
            # only the rows' totals are known
            peers = tuple(
                MatrixPeer(p.peer_id, p.account, p.kind, int(row.get("behind") or 0))
                for p, row in zip(peers, obj["peers"], strict=True)
            )
        owners = {CoValueID(str(k)): CoValueID(str(v)) for k, v in dict(obj.get("owners", {})).items()}
        return PeersSessionsMatrix(peers, columns, cells, available, str(obj.get("note", "")), owners)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not a peers × sessions matrix: {exc}") from exc
