"""Inspector test fixtures: strict Qt, a qasync loop that qtbot drives, leak checks, stores.

- Every Qt warning fails the test (a message handler chained before pytest-qt's).
- ``loop``: a qasync loop registered as running, so ``qtbot.waitUntil`` (which spins Qt's
  loop) also runs asyncio tasks (NOTES-qt: sync tests + ``already_running=True``). At
  teardown, a task still pending or an asyncio timer still scheduled fails the test.
- ``settings``: QSettings on a temporary ini file; the default user-scope settings path is
  redirected too, so nothing touches the real home.
- ``pool``: one worker process for the whole session (spawning one costs ~0.3 s).
- ``demo_store``: the demo scenario built once (read-only use); ``node_target`` opens a
  private copy through a LocalNode.
- Screenshots go to artifacts/screenshots/ (git-ignored); with ``KINTSUGI_DOCS_SCREENSHOTS=1``
  those marked for the docs are also written to docs/screenshots/, which the README shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import shiboken6
from PySide6.QtCore import QEvent, QSettings, QTimer, QtMsgType, qInstallMessageHandler
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult, build_demo
from engine.node.facade import LocalNode
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.loop import new_loop, release_loop
from inspector.recent import RecentTargets
from inspector.targets import NodeTarget, TargetSpec
from inspector.views.main_window import MainWindow
from inspector.workers import WorkerPool
from tests.util import REPO, timeout

T = TypeVar("T")

#: Warnings Qt's offscreen platform prints for things it cannot do; not our bugs.
ALLOWED_QT_WARNINGS = ("This plugin does not support propagateSizeHints()",)
SCREENSHOTS = REPO / "artifacts" / "screenshots"
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"


@pytest.fixture(autouse=True)
def fail_on_qt_warnings() -> Iterator[list[str]]:
    recorded: list[str] = []

    def handler(mode: QtMsgType, context: Any, message: str) -> None:
        serious = mode in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg)
        if serious and not any(allowed in message for allowed in ALLOWED_QT_WARNINGS):
            recorded.append(f"{mode.name}: {message}")
        if previous is not None:
            previous(mode, context, message)

    previous = qInstallMessageHandler(handler)
    yield recorded
    qInstallMessageHandler(previous)
    assert not recorded, f"Qt warnings: {recorded}"


@pytest.fixture(autouse=True)
def widgets_deleted(qapp: QApplication) -> Iterator[None]:
    """Once a test's widgets are closed and handed to ``deleteLater`` (pytest-qt does that
    before fixtures end), delete them at once, not whenever an event loop next gets to it: a
    widget outliving its test, its Python wrapper gone, could be reached by a later test's
    events (a rare segfault in pyqtgraph's ``GraphicsView.paintEvent``)."""
    yield
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


@pytest.fixture(autouse=True)
def settings(tmp_path: Path) -> Iterator[QSettings]:
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield QSettings(str(tmp_path / "inspector.ini"), QSettings.Format.IniFormat)


def pending_timers(loop: asyncio.AbstractEventLoop) -> list[str]:
    """asyncio callbacks still scheduled on a qasync loop (its timer's private table)."""
    timer = getattr(loop, "_timer", None)
    callbacks = getattr(timer, "_SimpleTimer__callbacks", {}) if timer is not None else {}
    return [repr(h) for h in callbacks.values() if not h.cancelled()]


@pytest.fixture
def loop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = new_loop(qapp, already_running=True)
    yield event_loop
    tasks = [t for t in asyncio.all_tasks(event_loop) if not t.done()]
    timers = pending_timers(event_loop)
    for task in tasks:
        task.cancel()
    release_loop(event_loop)
    assert not tasks, f"asyncio tasks leaked: {tasks}"
    assert not timers, f"asyncio timers leaked: {timers}"


def ms(units: float) -> int:
    """``units`` test units in milliseconds (for pytest-qt's ``timeout=``)."""
    return int(timeout(units) * 1000)


def run(qtbot: QtBot, coro: Coroutine[Any, Any, T], units: float = 20) -> T:
    """Run ``coro`` to completion on the test's loop while Qt keeps processing events."""
    task = asyncio.ensure_future(coro)
    qtbot.waitUntil(task.done, timeout=ms(units))
    return task.result()


def wait_for(qtbot: QtBot, condition: Any, units: float = 10) -> None:
    qtbot.waitUntil(condition, timeout=ms(units))


@pytest.fixture(scope="session")
def pool() -> Iterator[WorkerPool]:
    workers = WorkerPool()
    workers.warm_up()
    yield workers
    workers.shutdown_now()


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    """The demo scenario (600 edits), built once. Do not write to it: copy it."""
    return build_demo(tmp_path_factory.mktemp("demo") / "store", edits=600)


@pytest.fixture
def demo_copy(demo_store: DemoResult, tmp_path: Path) -> Path:
    target = tmp_path / "demo-copy"
    shutil.copytree(demo_store.store, target)
    return target


@pytest.fixture
def heap_frozen() -> Iterator[None]:
    """For loop-lag measurements: keep the collector from walking what the *test session*
    has allocated (after a thousand tests, one full collection of that heap alone stalls the
    loop for ~0.1 s: the test runner's cost, not the inspector's). Objects made during the
    test are collected as usual. Request it before the fixtures whose loop it measures."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def monitor(loop: asyncio.AbstractEventLoop, qtbot: QtBot) -> Iterator[LoopLagMonitor]:
    lag = LoopLagMonitor()
    lag.start()
    yield lag
    run(qtbot, lag.stop())


@pytest.fixture
def inspector(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, settings: QSettings, monitor: LoopLagMonitor
) -> Iterator[Inspector]:
    controller = Inspector(pool=pool, recent=RecentTargets(settings), monitor=monitor)
    controller.start()
    yield controller
    run(qtbot, controller.close())
    active = [t.objectName() for t in controller.findChildren(QTimer) if t.isActive()]
    # Delete the controller and its models now, not whenever the garbage collector gets to
    # them: freed by a later collection, a model could still get a posted event while its
    # wrapper was half gone (a rare segfault in an unrelated later test).
    shiboken6.delete(controller)
    assert not active, f"QTimers left running: {active}"


@pytest.fixture
def model_testers(
    request: pytest.FixtureRequest, qtbot: QtBot, inspector: Inspector
) -> Iterator[Callable[[Any], Any]]:
    """``attach(model)``: watch ``model`` with its own pytest-qt ModelTester (a tester keeps
    per-model state) for the rest of the test and through the inspector's close. At teardown
    the inspector is closed and every tester detached before the models go: a tester left
    connected to a model that is being freed crashes the garbage collector later, in
    whichever test happens to run it (seen as a rare segfault)."""
    from pytestqt.modeltest import ModelTester  # needs pytest-qt's Qt set up: not at import

    testers: list[ModelTester] = []

    def attach(model: Any) -> ModelTester:
        tester = ModelTester(request.config)
        tester.check(model, force_py=True)
        testers.append(tester)
        return tester

    yield attach
    run(qtbot, inspector.close())
    for tester in testers:
        with contextlib.suppress(RuntimeError):  # a model Qt has already deleted
            tester._cleanup()


@pytest.fixture
def window(inspector: Inspector, qtbot: QtBot) -> Iterator[MainWindow]:
    main = MainWindow(inspector)
    qtbot.addWidget(main)
    main.resize(1440, 880)
    main.show()
    yield main
    main.close()


@pytest.fixture
def node_target(demo_copy: Path, demo_store: DemoResult, pool: WorkerPool) -> NodeTarget:
    """An unopened live target over a LocalNode (Alice, the demo's admin) on a demo copy."""
    key = AccountKey.load(demo_copy / "keys" / "alice.key")
    node = LocalNode.open(demo_copy, key, instance_id="test-inspector")
    return NodeTarget(TargetSpec("store", str(demo_copy)), pool, node)


def covalue_named(inspector: Inspector, name: str) -> str:
    target = inspector.target
    assert target is not None
    for cid in target.ids():
        summary = target.summary(cid)
        if summary is not None and summary.name == name:
            return cid
    raise AssertionError(f"no CoValue named {name!r}")


def save_screenshot(widget: Any, name: str, *, docs: bool = False) -> Path:
    """Grab ``widget`` into artifacts/screenshots/NAME; ``docs``: also into docs/screenshots/
    when ``KINTSUGI_DOCS_SCREENSHOTS=1`` (regenerating the README's pictures on purpose)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    image = widget.grab()
    assert image.save(str(path), "PNG"), f"could not write {path}"
    if docs and os.environ.get("KINTSUGI_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert image.save(str(DOCS_SCREENSHOTS / name), "PNG")
    return path


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = QImage(str(path))
    assert image.width() >= 800 and image.height() >= 400
