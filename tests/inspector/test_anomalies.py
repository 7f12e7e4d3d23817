"""The Anomalies and Peers × sessions views on the embedded demo, live: anomalies ranked with
their counts in the status bar, a click goes to the entry; the matrix shows the peers' lag per
session of the selected CoValue. Exported from the window, the demo's bundle opens offline
with the same anomalies and the matrix it had."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from engine.diagnostics.anomalies import AnomalyKind
from engine.diagnostics.bundle_read import Bundle
from engine.diagnostics.bundle_verify import verify_bundle
from inspector.controller import Inspector
from inspector.models.roles import Role
from inspector.targets import BundleTarget, LiveDemoTarget, TargetSpec
from inspector.views.main_window import MainWindow
from inspector.workers import WorkerPool
from tests.inspector.conftest import ms, run, wait_for


def click(qtbot: QtBot, view: Any, index: Any) -> None:
    rect = view.visualRect(index)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def test_anomalies_and_matrix_of_the_embedded_demo(  # noqa: PLR0917 - fixtures
    qtbot: QtBot,
    inspector: Inspector,
    model_testers: Callable[[Any], None],
    window: MainWindow,
    pool: WorkerPool,
    tmp_path: Path,
) -> None:
    target = LiveDemoTarget(TargetSpec("demo"), pool, edit_interval=0.05)
    model_testers(inspector.anomalies)
    model_testers(inspector.matrix)
    with qtbot.waitSignal(inspector.loaded, timeout=ms(60)):
        assert run(qtbot, inspector.open(target.spec, target), units=60)
    demo = target.demo
    assert demo is not None
    notes = demo.report["maps"]["notes"]

    # -- anomalies: ranked, counted in the status bar, a click goes to the entry --------------
    wait_for(
        qtbot,
        lambda: {AnomalyKind.FORK, AnomalyKind.CAS_CONTENTION} <= {a.kind for a in inspector.anomalies.anomalies()},
    )
    found = inspector.anomalies.anomalies()
    assert [a.severity.rank for a in found] == sorted((a.severity.rank for a in found), reverse=True)
    assert window.anomalies_label.text().startswith("anomalies: ")
    window.tabs.setCurrentWidget(window.anomalies)
    row = next(i for i, a in enumerate(found) if a.kind is AnomalyKind.FORK and a.covalue is not None)
    with qtbot.waitSignal(inspector.selected, timeout=ms(10)) as selected:
        click(qtbot, window.anomalies.table, inspector.anomalies.index(row, 2))
    assert selected.args == [found[row].covalue] and window.tabs.currentWidget() is window.chain
    slot_row = next(i for i, a in enumerate(found) if a.kind is AnomalyKind.CAS_CONTENTION)
    window.tabs.setCurrentWidget(window.anomalies)
    click(qtbot, window.anomalies.table, inspector.anomalies.index(slot_row, 2))
    assert window.tabs.currentWidget() is window.cas

    # -- the matrix: peers × the sessions of the selected CoValue ---------------------------
    window.show_covalue(notes)
    matrix = inspector.matrix
    wait_for(qtbot, lambda: matrix.rowCount() >= 2 and matrix.columnCount() >= 3)
    assert matrix.available and window.matrix.summary.text().count("peers ×") == 1
    cells = [
        matrix.index(r, c).data(Role.RAW) for r in range(matrix.rowCount()) for c in range(1, matrix.columnCount())
    ]
    assert any(cell is not None for cell in cells)  # the live clients follow the notes
    assert matrix.headerData(0, Qt.Orientation.Vertical) is not None

    # -- export the live demo, open the bundle offline --------------------------------------
    out = tmp_path / "demo.zip"
    logging.getLogger("engine.demo.test").warning("a line the node logged for %s", notes)
    job = window.export_bundle(str(out))
    assert job is not None
    with qtbot.waitSignal(job.finished, timeout=ms(60)):
        pass
    assert verify_bundle(out)["ok"]
    with Bundle(out) as bundle:
        assert bundle.manifest["target"]["kind"] == "demo" and bundle.manifest["scope"]["peers"] >= 1
        assert bundle.matrix() is not None and bundle.matrix().available  # type: ignore[union-attr]
        (line,) = [line for line in bundle.logs() if line["logger"] == "engine.demo.test"]
        assert line["message"] == f"a line the node logged for {notes}"  # ids stay readable
        recorded = {a.kind for a in bundle.anomalies()}
    with qtbot.waitSignal(inspector.loaded, timeout=ms(30)):
        window.open_store(str(out))
    assert isinstance(inspector.target, BundleTarget)
    assert {a.kind for a in inspector.anomalies.anomalies()} == recorded >= {AnomalyKind.FORK}
    window.show_covalue(notes)
    wait_for(qtbot, lambda: inspector.matrix.rowCount() >= 2 and inspector.matrix.columnCount() >= 3)
