"""Bundles in the app (offscreen): File → Open bundle shows what the live store shows (the
same CoValues, sessions, badges, tombstones, CAS slots as tokens, anomalies), raw content
gives session rows that verify, and File → Export bundle writes a bundle with a progress
dialog whose Cancel leaves no file."""

from __future__ import annotations

import asyncio
import zipfile
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton
from pytestqt.qtbot import QtBot

from engine.cli.audit import check_store
from engine.demo.scenario import DemoResult
from engine.diagnostics.bundle import BundleInputs, export_bundle
from engine.diagnostics.bundle_verify import verify_bundle
from engine.diagnostics.redact import Redaction, RedactionPolicy, Tokenizer
from engine.storage import open_store
from inspector.controller import Inspector
from inspector.targets import BundleTarget, StoreTarget, TargetSpec, make_target
from inspector.targets.node import NodeTarget
from inspector.views.connect import ConnectDialog
from inspector.views.export import ExportJob, bundle_inputs
from inspector.views.main_window import MainWindow
from inspector.workers import WorkerPool
from tests.engine.diagnostics._build import stored
from tests.inspector.conftest import run, wait_for

SALT = bytes(range(32))


def make_bundle(store: Path | str, out: Path, *, content: bool = False) -> Path:
    src = open_store(store, readonly=True)
    try:
        redaction = Redaction(RedactionPolicy(include_content=content), Tokenizer(SALT))
        result = export_bundle(BundleInputs("store", src.location, store=src), out, redaction)
    finally:
        src.close()
    assert result is not None
    return result.path


def test_a_zip_is_a_bundle_target(tmp_path: Path, pool: WorkerPool) -> None:
    spec = TargetSpec.parse(str(tmp_path / "incident.zip"))
    assert spec.kind == "bundle" and spec.label.endswith("incident.zip")
    assert TargetSpec.from_json(spec.to_json()) == spec
    assert isinstance(make_target(spec, pool), BundleTarget)


def test_open_bundle_shows_what_the_store_shows(  # noqa: PLR0917 - fixtures
    qtbot: QtBot, window: MainWindow, inspector: Inspector, demo_store: DemoResult, tmp_path: Path, pool: WorkerPool
) -> None:
    path = make_bundle(demo_store.store, tmp_path / "demo.zip")
    live = StoreTarget(TargetSpec("store", demo_store.store), pool)
    run(qtbot, live.open())
    run(qtbot, live.analyse(lambda _ids: None), units=60)
    try:
        assert window.open_bundle_action.isEnabled()
        with qtbot.waitSignal(inspector.loaded, timeout=20_000):
            window.open_store(str(path))
        target = inspector.target
        assert isinstance(target, BundleTarget) and not target.live
        assert target.ids() == live.ids()
        for cid in live.ids():
            mine, theirs = target.summary(cid), live.summary(cid)
            assert mine is not None and theirs is not None
            assert [(s.id, s.count, s.kind, s.corrupt) for s in mine.sessions] == [
                (s.id, s.count, s.kind, s.corrupt) for s in theirs.sessions
            ]
            assert mine.badges == theirs.badges and mine.tombstones == theirs.tombstones
            assert mine.name is None or mine.name.startswith("tok_")
        assert target.stats() == live.stats()
        (namespace,) = target.kv_namespaces()
        tok = Tokenizer(SALT)
        assert sorted(r.key for r in target.kv_slots(namespace)) == sorted(
            tok.token(r.key) for r in live.kv_slots(namespace)
        )
        hot = tok.token("prefs/recent")
        assert sum(r.outcome == "conflict" for r in target.kv_history(namespace, hot)) == demo_store.kv_conflicts

        notes = demo_store.maps["notes"]
        window.show_covalue(notes)
        wait_for(qtbot, lambda: inspector.content.covalue == notes)
        assert inspector.content.rowCount() > 0
        assert all(str(k).startswith("tok_") for k in inspector.content.snapshot.entries)  # type: ignore[union-attr]
        assert inspector.lanes.rowCount() == len(target.summary(notes).sessions)  # type: ignore[union-attr]
        assert inspector.lanes.chain(0).rowCount() == 0  # no raw content: lanes without rows

        kinds = {str(a.kind) for a in inspector.anomalies.anomalies()}
        assert kinds == {"fork", "cas_contention"}
        assert "2 low" in window.anomalies_label.text()
        assert not window.export_bundle_action.isEnabled()
        assert window.matrix.summary.text().startswith("a store file has no peers")
        assert inspector.tombstones.rowCount() == 1
    finally:
        run(qtbot, live.close())


def test_raw_content_rows_verify_in_the_window(
    qtbot: QtBot, window: MainWindow, inspector: Inspector, tmp_path: Path
) -> None:
    store, core, _log = stored(tmp_path / "store", 2500)
    store.close()
    path = make_bundle(tmp_path / "store", tmp_path / "content.zip", content=True)
    with qtbot.waitSignal(inspector.loaded, timeout=20_000):
        window.open_store(str(path))
    window.show_covalue(core.id)
    wait_for(qtbot, lambda: inspector.lanes.rowCount() == 1)
    chain = inspector.lanes.chain(0)
    assert chain.rowCount() == 2500
    wait_for(qtbot, lambda: chain.verification_text().startswith("verified"), units=30)


@pytest.fixture
def big_store(tmp_path: Path) -> Path:
    store, _core, _log = stored(tmp_path / "big", 40_000, every=1000)
    store.close()
    return tmp_path / "big"


def test_export_from_the_window_and_cancel(
    qtbot: QtBot, window: MainWindow, inspector: Inspector, big_store: Path, tmp_path: Path
) -> None:
    assert not window.export_bundle_action.isEnabled()  # nothing open yet
    with qtbot.waitSignal(inspector.loaded, timeout=20_000):
        window.open_store(str(big_store))
    assert window.export_bundle_action.isEnabled()

    out = tmp_path / "exports" / "big.zip"
    out.parent.mkdir()
    job = window.export_bundle(str(out))
    assert job is not None and window.export_dialog is not None
    with qtbot.waitSignal(job.finished, timeout=30_000) as finished:
        pass
    assert finished.args == [str(out)] and verify_bundle(out)["ok"]
    assert not window.export_dialog.isVisible()

    cancelled_out = tmp_path / "exports" / "cancelled.zip"
    job = window.export_bundle(str(cancelled_out))
    assert job is not None and window.export_dialog is not None
    cancel = window.export_dialog.findChild(QPushButton)
    assert cancel is not None and cancel.text() == "Cancel"
    with qtbot.waitSignal(job.cancelled, timeout=30_000):
        qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    wait_for(qtbot, lambda: not inspector.busy)
    assert sorted(p.name for p in out.parent.iterdir()) == ["big.zip"]


def test_a_zip_that_is_not_a_bundle_shows_a_clear_error(
    qtbot: QtBot, window: MainWindow, inspector: Inspector, tmp_path: Path
) -> None:
    """Opening a .zip that is not a bundle (no manifest) puts the invalid_bundle code and
    a plain sentence in the window's banner; nothing opens."""
    plain = tmp_path / "photos.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("cat.txt", "not a bundle")
    with qtbot.waitSignal(inspector.failed, timeout=20_000) as failed:
        window.open_store(str(plain))
    code, message = failed.args
    assert code == "invalid_bundle" and "not a Kintsugi diagnostic bundle" in message and "Traceback" not in message
    assert window.banner.isVisible() and "invalid_bundle" in window.banner_text.text()
    assert inspector.target is None


def test_the_connect_dialog_opens_a_zip_as_a_bundle(qtbot: QtBot, tmp_path: Path) -> None:
    """A path ending in .zip in the connect dialog is a bundle target, as on the command
    line; any other path a store; a recent bundle fills the path back in."""
    dialog = ConnectDialog(None)
    qtbot.addWidget(dialog)
    dialog.store.setChecked(True)
    dialog.store_path.setText(str(tmp_path / "incident.ZIP"))
    with qtbot.waitSignal(dialog.chosen, timeout=5_000) as chosen:
        dialog.accept()
    (spec,) = chosen.args
    assert spec == TargetSpec("bundle", str(tmp_path / "incident.ZIP"))
    assert spec == TargetSpec.parse(str(tmp_path / "incident.ZIP"))
    again = ConnectDialog(None, spec)
    qtbot.addWidget(again)
    assert again.store.isChecked() and again.store_path.text() == spec.location
    again.store_path.setText(str(tmp_path / "store"))
    assert again.spec() == TargetSpec("store", str(tmp_path / "store"))


def test_file_export_of_a_live_node_is_recorded_in_its_audit_log(
    qtbot: QtBot, loop: asyncio.AbstractEventLoop, node_target: NodeTarget, tmp_path: Path
) -> None:
    """File → Export bundle of a live node (its own writable store): once written, the
    export is an `export` record in the node's audit log, signed by the node's key, and the
    job says so; the chain verifies (`kintsugi audit verify`'s check)."""
    run(qtbot, node_target.open())
    node = node_target.node
    assert node is not None and node.store is not None
    try:
        before = len(node.store.audit_log())
        inputs = bundle_inputs(node_target)
        assert inputs is not None and inputs.record is not None
        job = ExportJob(inputs, tmp_path / "live.zip")
        with qtbot.waitSignal(job.recorded, timeout=20_000) as recorded:
            run(qtbot, job.run())
        assert recorded.args == [True, node.store.location] and job.audit is not None
        report = check_store(node.store)
        assert report["ok"] and report["records"] == before + 1 and report["head"] == job.audit["head"]
        record = node.store.audit_log()[-1].to_json()
        assert record["action"] == "export" and record["actor"] == node.account_id
        assert record["details"]["bundle"] == "live.zip" and verify_bundle(tmp_path / "live.zip")["ok"]
    finally:
        run(qtbot, node_target.close())


def test_a_read_only_store_export_is_not_recorded(
    tmp_path: Path, pool: WorkerPool, qtbot: QtBot, loop: asyncio.AbstractEventLoop
) -> None:
    """A store opened read-only in the app has no operator key: its export records nothing."""
    store, _core, _log = stored(tmp_path / "store", 20)
    store.close()
    target = make_target(TargetSpec("store", str(tmp_path / "store")), pool)
    run(qtbot, target.open())
    try:
        inputs = bundle_inputs(target)
        assert inputs is not None and inputs.record is None
    finally:
        run(qtbot, target.close())
