"""The peers × sessions matrix (engine.diagnostics.matrix): behind-by per peer and session,
forks, CoValues a peer does not follow, a group's columns, the wire form, partial rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pytest

from engine.covalue import CoValueCore
from engine.diagnostics.matrix import (
    REMOTE_MATRIX_NOTE,
    MatrixCell,
    MatrixColumn,
    matrix_from_json,
    matrix_of,
    partial_matrix,
)
from engine.errors import InvalidInput
from engine.ids import CoValueID, SessionID
from engine.model.header import Header, OwnedByGroup
from engine.model.session_log import SessionLog
from tests.engine.diagnostics._build import T0, comap, fill, key, session_of


class Kind(StrEnum):
    DOWN = "downstream"


@dataclass
class Peer:
    account: str
    kind: Kind = Kind.DOWN
    interested: set[CoValueID] = field(default_factory=set)
    acked: dict[CoValueID, dict[SessionID, tuple[int, bytes]]] = field(default_factory=dict)


@dataclass
class Manager:
    peers: dict[str, Peer]


def held_map(tag: str, owner: CoValueID | None = None) -> tuple[CoValueCore, SessionLog, SessionLog]:
    core = comap(tag) if owner is None else CoValueCore(Header("comap", OwnedByGroup(owner), None, tag.encode(), T0))
    a, b = SessionLog(core.id, session_of(key(1), 1)), SessionLog(core.id, session_of(key(2), 2))
    fill(a, key(1), 300)
    fill(b, key(2), 50)
    core.sessions.update({a.session: a, b.session: b})
    return core, a, b


def test_cells_say_how_far_behind_each_peer_is() -> None:
    core, a, b = held_map("doc")
    other, _x, _y = held_map("other")
    forked = SessionLog(core.id, a.session)
    fill(forked, key(1), 120, start=9000)  # another history of a, same length as a's prefix
    manager = Manager(
        {
            "in:1": Peer("acc_zA", interested={core.id}, acked={core.id: {a.session: (300, a.hash_at(300))}}),
            "in:2": Peer("acc_zB", interested={core.id}, acked={core.id: {a.session: (120, forked.hash_at(120))}}),
            "in:3": Peer("acc_zC", interested={other.id}),
        }
    )
    matrix = matrix_of(manager, {core.id: core, other.id: other})
    cols = matrix.columns_of(core.id)
    by_session = {matrix.columns[c].session: c for c in cols}
    assert [p.peer_id for p in matrix.peers] == ["in:1", "in:2", "in:3"]
    assert matrix.cell(0, by_session[a.session]) == MatrixCell(300, 0)
    assert matrix.cell(0, by_session[b.session]) == MatrixCell(0, 50)  # follows, never acknowledged
    assert matrix.cell(1, by_session[a.session]) == MatrixCell(120, 180, diverged=True)
    assert matrix.cell(2, by_session[a.session]) is None  # does not follow this CoValue
    assert matrix.behind(0) == 50 and matrix.behind(2) == 350
    assert matrix.acked_sessions(0, core.id) == {a.session: 300, b.session: 0}
    assert matrix.acked_sessions(2, core.id) is None


def test_a_group_shows_its_own_sessions_and_those_of_what_it_owns() -> None:
    group = comap("group")
    doc, _a, _b = held_map("doc", owner=group.id)
    loose, _c, _d = held_map("loose")
    matrix = matrix_of(Manager({}), {group.id: group, doc.id: doc, loose.id: loose})
    assert matrix.owners == {doc.id: group.id}
    assert {matrix.columns[c].covalue for c in matrix.columns_of(group.id)} == {doc.id}
    assert {matrix.columns[c].covalue for c in matrix.columns_of(loose.id)} == {loose.id}


def test_json_round_trip_and_partial_rows() -> None:
    core, a, _b = held_map("doc")
    manager = Manager(
        {"in:1": Peer("acc_zA", interested={core.id}, acked={core.id: {a.session: (100, a.hash_at(100))}})}
    )
    matrix = matrix_of(manager, {core.id: core})
    again = matrix_from_json(matrix.to_json())
    assert again.to_json() == matrix.to_json() and again.cells == matrix.cells
    partial = partial_matrix([("in:1", "acc_zA", "downstream", 77)], [MatrixColumn(core.id, a.session, 300)])
    assert not partial.available and partial.note == REMOTE_MATRIX_NOTE and partial.behind(0) == 77
    assert matrix_from_json(partial.to_json()).behind(0) == 77
    assert partial.acked_sessions(0, core.id) is None
    with pytest.raises(InvalidInput):
        matrix_from_json({"peers": "nope"})
