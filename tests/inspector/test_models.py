"""Qt models over a store target: structure (QAbstractItemModelTester), contents, and the
view → engine direction (selecting reads the engine; toggles change what is shown)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from PySide6.QtCore import QModelIndex, Qt
from pytestqt.modeltest import ModelTester
from pytestqt.qtbot import QtBot

from engine.demo.scenario import DemoResult
from engine.diagnostics.chain_verify import RowState
from engine.diagnostics.covalue_summary import Badge
from engine.ids import SessionKind
from inspector.controller import Inspector
from inspector.models.batch import NewestFirstModel
from inspector.models.chain import SessionChainModel
from inspector.models.content import DELETED_TEXT, ContentModel
from inspector.models.covalues import CoValueListModel
from inspector.models.kv import CasSlotsModel, CasTimelineModel
from inspector.models.roles import Role
from inspector.models.table import TableModel
from inspector.targets import NodeTarget, TargetSpec
from tests.inspector.conftest import ms, run, wait_for

DISPLAY = Qt.ItemDataRole.DisplayRole


def open_store(qtbot: QtBot, inspector: Inspector, demo_store: DemoResult) -> None:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)):
        assert run(qtbot, inspector.open(TargetSpec("store", demo_store.store)))


def cell(model: Any, row: int, column: int, role: int = DISPLAY, parent: QModelIndex | None = None) -> Any:
    return model.index(row, column, parent or QModelIndex()).data(role)


def test_models_pass_the_model_tester(
    qtbot: QtBot, inspector: Inspector, model_testers: Callable[[Any], Any], demo_store: DemoResult
) -> None:
    open_store(qtbot, inspector, demo_store)
    inspector.select_covalue(demo_store.maps["notes"])
    wait_for(qtbot, lambda: inspector.content.rowCount() > 0)
    (namespace,) = inspector.target.kv_namespaces()  # type: ignore[union-attr]
    inspector.select_slot(namespace, "prefs/recent")
    for model in (
        inspector.covalues,
        inspector.navigator,
        inspector.lanes,
        inspector.content,
        inspector.tombstones,
        inspector.kv_tree,
        inspector.cas_slots,
        inspector.cas_timeline,
        inspector.peers,
        inspector.peer_log,
        inspector.sync_events,
    ):
        # One tester per model (pytest-qt's fixture is one tester, so it cannot watch several
        # models at once). They stay attached for the rest of the test, through the live
        # changes below and the reset at close.
        model_testers(model)
    # The lane chains belong to the selected CoValue: selecting another frees them, so their
    # testers are detached first (a tester left on a freed model crashes the collector).
    chain_testers = [model_testers(chain) for chain in inspector.lanes.chains()]
    assert chain_testers
    for tester in chain_testers:
        tester._cleanup()
    inspector.select_covalue(demo_store.maps["todo"])
    wait_for(qtbot, lambda: not inspector.busy)
    inspector.cas_slots.set_show_values(True)


def test_navigator_rows_badges_filter_and_search(qtbot: QtBot, inspector: Inspector, demo_store: DemoResult) -> None:
    open_store(qtbot, inspector, demo_store)
    model = inspector.covalues
    assert model.rowCount() == 4
    names = {cell(model, r, CoValueListModel.NAME) for r in range(4)}
    assert names == {"Demo team", "todo", "notes", "scratch"}
    notes_row = model.row_of(demo_store.maps["notes"])
    assert cell(model, notes_row, CoValueListModel.BADGES) == "conflict"
    assert cell(model, notes_row, 0, Role.BADGES) == {Badge.CONFLICT_SESSION}
    scratch_row = model.row_of(demo_store.deleted[0])
    assert cell(model, scratch_row, CoValueListModel.BADGES) == "deleted"
    assert cell(model, scratch_row, 0, Qt.ItemDataRole.FontRole).italic()
    assert demo_store.maps["notes"] in cell(model, notes_row, 0, Qt.ItemDataRole.ToolTipRole)

    proxy = inspector.navigator
    proxy.set_badge(Badge.DELETED)
    assert proxy.rowCount() == 1 and cell(proxy, 0, 0, Role.ID) == demo_store.deleted[0]
    proxy.set_badge(Badge.FORKED)  # only a sync peer can tell: nothing locally
    assert proxy.rowCount() == 0
    proxy.set_badge(None)
    proxy.set_search("  NOT")  # case-insensitive name search
    assert [cell(proxy, r, CoValueListModel.NAME) for r in range(proxy.rowCount())] == ["notes"]
    proxy.set_search(demo_store.group[:12])  # id search
    assert proxy.rowCount() == 1 and cell(proxy, 0, CoValueListModel.NAME) == "Demo team"
    proxy.set_search("")
    assert proxy.rowCount() == 4


def test_selecting_a_covalue_loads_its_lanes_and_content(
    qtbot: QtBot, inspector: Inspector, demo_store: DemoResult
) -> None:
    open_store(qtbot, inspector, demo_store)
    notes = demo_store.maps["notes"]
    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        inspector.select_covalue(notes)
    lanes = inspector.lanes
    kinds = [cell(lanes, r, 0, Role.KIND) for r in range(lanes.rowCount())]
    # the forked session first, then its conflict session, then the others
    assert kinds[:2] == [SessionKind.ACTIVE, SessionKind.CONFLICT] and len(kinds) == 4
    assert cell(lanes, 1, 0).startswith("conflict") and "!" in cell(lanes, 1, 0)
    conflict = lanes.chain(1)
    assert conflict.rowCount() == 3
    first = conflict.index(0, SessionChainModel.CHANGE).data()
    assert first == 'set tab2-0 = "written in tab 2, kept in a conflict session"'
    wait_for(qtbot, lambda: all(c.verifier is not None and c.verifier.done for c in lanes.chains()))
    assert all(cell(lanes, r, 0, Role.VERIFICATION) == "verified" for r in range(lanes.rowCount()))
    assert conflict.index(2, SessionChainModel.STATE).data(Role.STATE) == RowState.VERIFIED
    assert conflict.index(2, SessionChainModel.CHECKPOINT).data() == "◆"

    content = inspector.content
    assert content.heading().startswith("notes · comap")
    row = content.row_of("tab2-0")
    assert cell(content, row, ContentModel.VALUE) == '"written in tab 2, kept in a conflict session"'
    assert cell(content, row, ContentModel.SESSION).endswith("!")  # won in the conflict session
    assert cell(content, row, ContentModel.TX) == "0" and cell(content, row, ContentModel.MADE_AT)

    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        inspector.select_covalue(demo_store.group)
    assert content.headerData(0, Qt.Orientation.Horizontal) == "Member"
    rows = range(content.rowCount())
    roles = {cell(content, r, ContentModel.KEY): cell(content, r, ContentModel.VALUE) for r in rows}
    assert roles[demo_store.accounts["bob"]] == '"writer"' and roles[demo_store.accounts["alice"]] == '"admin"'

    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        inspector.select_covalue(demo_store.deleted[0])
    assert content.rowCount() == 0 and "deleted by" in content.heading()
    assert [cell(lanes, r, 0, Role.KIND) for r in range(lanes.rowCount())] == [SessionKind.DELETE]
    assert lanes.chain(0).index(0, SessionChainModel.CHANGE).data() == "delete"
    inspector.select_covalue(None)
    assert lanes.rowCount() == 0 and content.rowCount() == 0


def test_deleted_keys_are_rows_marked_deleted(
    qtbot: QtBot, inspector: Inspector, node_target: NodeTarget, demo_store: DemoResult
) -> None:
    node = node_target.node
    assert node is not None
    todo = demo_store.maps["todo"]
    key = next(iter(node.get_map(todo)))
    node.delete_key(todo, key)
    assert run(qtbot, inspector.open(node_target.spec, node_target))
    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        inspector.select_covalue(todo)
    row = inspector.content.row_of(key)
    assert cell(inspector.content, row, ContentModel.VALUE) == DELETED_TEXT
    assert cell(inspector.content, row, ContentModel.VALUE, Qt.ItemDataRole.FontRole).italic()
    assert "deleted" in inspector.content.heading()


def test_tombstones_list_who_deleted_when(qtbot: QtBot, inspector: Inspector, demo_store: DemoResult) -> None:
    open_store(qtbot, inspector, demo_store)
    tombstones = inspector.tombstones
    assert tombstones.rowCount() == 1
    assert cell(tombstones, 0, 0).startswith("scratch")
    assert cell(tombstones, 0, 0, Role.ID) == demo_store.deleted[0]
    assert cell(tombstones, 0, 1).endswith("$") and cell(tombstones, 0, 3) and cell(tombstones, 0, 4) == "valid"
    assert cell(tombstones, 0, 2, Qt.ItemDataRole.ToolTipRole) == demo_store.accounts["alice"]


def test_cas_slots_are_redacted_until_asked_and_the_timeline_shows_lost_races(
    qtbot: QtBot, inspector: Inspector, demo_store: DemoResult
) -> None:
    open_store(qtbot, inspector, demo_store)
    slots = inspector.cas_slots
    row = slots.row_of(demo_store.accounts["alice"], "prefs/recent")
    assert cell(slots, row, CasSlotsModel.VALUE).startswith("‹hidden")
    assert cell(slots, row, CasSlotsModel.STATE) == "present" and cell(slots, row, CasSlotsModel.GENERATION) == "36"
    with qtbot.waitSignal(slots.dataChanged) as changed, qtbot.waitSignal(slots.showValuesChanged):
        slots.set_show_values(True)
    assert changed.args[0].column() == changed.args[1].column() == CasSlotsModel.VALUE
    assert "tab-" in cell(slots, row, CasSlotsModel.VALUE)
    tomb = slots.row_of(demo_store.accounts["alice"], "draft/old")
    assert cell(slots, tomb, CasSlotsModel.STATE) == "tombstone"
    assert cell(slots, tomb, CasSlotsModel.VALUE).startswith("tombstone: by")
    slots.set_show_values(False)
    assert cell(slots, row, CasSlotsModel.VALUE).startswith("‹hidden")

    tree = inspector.kv_tree
    (namespace_row,) = range(tree.rowCount())
    namespace = tree.index(namespace_row, 0)
    keys = [cell(tree, r, 0, Role.KEY, namespace) for r in range(tree.rowCount(namespace))]
    assert "prefs/recent" in keys and tree.key_index(demo_store.accounts["alice"], "prefs/recent").isValid()

    timeline = inspector.cas_timeline
    inspector.select_slot(demo_store.accounts["alice"], "prefs/recent")
    counts = timeline.counts()
    assert counts["lost"] == demo_store.kv_conflicts and counts["stored"] == 36
    lost = [r for r in range(timeline.rowCount()) if cell(timeline, r, CasTimelineModel.OUTCOME) == "lost (conflict)"]
    assert len(lost) == demo_store.kv_conflicts
    record = timeline.record(lost[0])
    assert record is not None and record.generation > record.expected_gen and record.writer.startswith("tab-")
    assert cell(timeline, lost[0], 0, Qt.ItemDataRole.BackgroundRole) is not None
    assert cell(timeline, 0, CasTimelineModel.WRITER).startswith("tab-")
    inspector.select_slot(None, None)
    assert timeline.rowCount() == 0


class ListLog(NewestFirstModel):
    """A newest-first model over a plain list, as the engine's bounded logs behave."""

    HEADERS = ("Entry",)

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def read(self) -> list[str]:
        return list(self.log)

    def data(self, index: Any, role: int = DISPLAY) -> Any:
        return self.entry(index.row()) if index.isValid() and role == DISPLAY else None


def test_a_newest_first_log_prepends_trims_and_resets(request: pytest.FixtureRequest) -> None:
    model = ListLog([])
    tester = ModelTester(request.config)
    tester.check(model, force_py=True)
    signals: list[tuple[str, int, int]] = []
    model.rowsInserted.connect(lambda _p, first, last: signals.append(("inserted", first, last)))
    model.rowsRemoved.connect(lambda _p, first, last: signals.append(("removed", first, last)))
    model.modelReset.connect(lambda: signals.append(("reset", 0, 0)))

    model.log[:] = ["a", "b"]
    model.refresh()
    assert [cell(model, r, 0) for r in range(2)] == ["b", "a"]
    model.log[:] = ["a", "b", "c", "d"]
    model.refresh()
    model.refresh()  # nothing new: no signal
    model.log[:] = ["c", "d", "e"]  # bounded: the oldest dropped off
    model.refresh()
    assert [cell(model, r, 0) for r in range(3)] == ["e", "d", "c"]
    model.log[:] = ["x"]  # not a continuation of what is shown
    model.refresh()
    assert signals == [
        ("inserted", 0, 1),
        ("inserted", 0, 1),
        ("removed", 2, 3),  # one run for "a" and "b"
        ("inserted", 0, 0),
        ("reset", 0, 0),
    ]
    assert model.rowCount() == 1 and cell(model, 0, 0) == "x"
    tester._cleanup()  # detached before the model goes (see conftest's model_testers)


class Pairs(TableModel):
    """A two-column table over a plain list, with help on the first header only."""

    HEADERS = ("Name", "Value")
    HEADER_HELP = ("what it is called",)

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def row_count(self) -> int:
        return len(self.rows)

    def data(self, index: Any, role: int = DISPLAY) -> Any:
        return self.rows[index.row()][index.column()] if index.isValid() and role == DISPLAY else None


def test_a_table_model_has_headers_with_help_and_rows_only_at_the_top(request: pytest.FixtureRequest) -> None:
    model = Pairs([("a", "1"), ("b", "2")])
    tester = ModelTester(request.config)
    tester.check(model, force_py=True)
    horizontal, tooltip = Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole
    assert [model.headerData(c, horizontal) for c in range(model.columnCount())] == ["Name", "Value"]
    assert model.headerData(0, horizontal, tooltip) == "what it is called"
    assert model.headerData(1, horizontal, tooltip) is None  # past the end of HEADER_HELP
    assert model.headerData(2, horizontal) is None and model.headerData(-1, horizontal) is None
    assert model.headerData(0, Qt.Orientation.Vertical) is None
    assert (model.rowCount(), model.columnCount()) == (2, 2)
    top = model.index(0, 0)
    assert (model.rowCount(top), model.columnCount(top)) == (0, 0)

    changed: list[tuple[int, int, int, int]] = []
    model.dataChanged.connect(lambda a, b: changed.append((a.row(), a.column(), b.row(), b.column())))
    model.all_changed()
    model.beginResetModel()
    model.rows = []
    model.endResetModel()
    model.all_changed()  # no rows: no signal
    assert changed == [(0, 0, 1, 1)]
    tester._cleanup()
