"""``kintsugi-inspector [TARGET]``: the desktop inspector.

TARGET is a store file or directory (opened read-only), a ``ws://`` node URL (with
``--key FILE``: connects as an inspector peer; admins see everything), or nothing for the
embedded demo: a live in-process node with the demo's clients (:mod:`inspector.targets.demo`).
The window, the models and any embedded engine share one asyncio loop running inside Qt's
(:mod:`inspector.loop`).

Shutdown: closing the window (or SIGTERM, or ``--quit-after-load``, or the end of
``--screenshot``) only sets an event; the main coroutine then cancels background work,
closes the target (flushing and closing an embedded node) and returns its exit code, and
the loop closes after it. ``--log-json`` writes machine-readable events on stderr, one JSON
object per line: ``opened`` (with the node's name and version), ``version_skew``, ``loaded``
(counts), ``fork`` (a forked session, as first seen), ``peers`` (counts, when they change),
``error``, ``screenshot``, ``lag`` (the loop-lag monitor's totals), ``exit``.

Exit codes: 0 success; 1 the target could not be opened in ``--screenshot`` or
``--quit-after-load`` mode, or the screenshot could not be written; 2 bad usage.

Desktop identity (:func:`set_identity`): the application and display names, the version, the
desktop file name :data:`APP_ID` (so a desktop matches the windows to
``resources/org.kintsugi.inspector.desktop``) and the window icon, read from the icon theme
tree under :data:`RESOURCES`. Run the app through ``python -m inspector`` (or the frozen app),
whose entry dispatches worker and demo-client processes before this parser sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QSize
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from engine import __version__
from engine.diagnostics.covalue_summary import Badge
from engine.errors import UsageError
from inspector.controller import Inspector
from inspector.eventlog import EventLog
from inspector.lag import STALL_THRESHOLD, LoopLagMonitor
from inspector.loop import run
from inspector.recent import RecentTargets, default_settings
from inspector.targets.base import TargetSpec
from inspector.views.main_window import MainWindow

__all__ = ["APP_ID", "RESOURCES", "app_icon", "main", "run_inspector", "set_identity"]

logger = logging.getLogger(__name__)

#: Window size for screenshots and first start.
WINDOW_SIZE = (1440, 880)
#: Longest wait (seconds) for verification and content before a screenshot is taken anyway.
SCREENSHOT_SETTLE_SECONDS = 10.0
#: The application's id: the desktop file's name (``<APP_ID>.desktop``), the icon's and the
#: AppStream component's.
APP_ID = "org.kintsugi.inspector"
#: The desktop resources (icon theme tree, .desktop file, AppStream metainfo): the
#: ``resources`` folder beside the ``inspector`` package. That holds in a checkout, in an
#: installed wheel (package data) and in the frozen app (packaging/kintsugi-inspector.spec).
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
#: The application's names: ``NAME`` (with the organisation, where the settings live) and
#: the display name the platform shows after a window's title.
ORGANIZATION, NAME, DISPLAY_NAME = "Kintsugi", "inspector", "Kintsugi inspector"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kintsugi-inspector",
        description="The Kintsugi inspector: see session chains, conflicts, tombstones and CAS slots "
        "of a store or a node. With no TARGET it opens the embedded demo.",
    )
    parser.add_argument(
        "target", nargs="?", metavar="TARGET", help="store file or directory, or ws:// node URL (default: the demo)"
    )
    parser.add_argument("--key", help="account key file for a ws:// node")
    parser.add_argument("--screenshot", type=Path, metavar="PATH", help="render the window to a PNG once loaded, exit")
    parser.add_argument("--log-json", action="store_true", help="write JSON lines of events on stderr")
    parser.add_argument("--quit-after-load", action="store_true", help="close the window once loaded (tests)")
    parser.add_argument("--version", action="version", version=f"kintsugi-inspector {__version__}")
    return parser


def _close_on_sigterm(window: MainWindow) -> Callable[[], None]:
    """SIGTERM closes the window like the user would; returns a function that undoes it."""
    loop = asyncio.get_running_loop()

    def handler(_signum: int, _frame: object) -> None:
        # Python runs this between bytecodes of the main thread; defer the real work to
        # the loop instead of calling into Qt from wherever the interpreter happened to be.
        loop.call_soon_threadsafe(window.close)

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


async def _settle(inspector: Inspector, seconds: float) -> None:
    """Wait (bounded) until verification and content loading are done, then a little more
    so the last repaints happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while inspector.busy and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)


async def take_screenshot(window: MainWindow, inspector: Inspector, path: Path) -> bool:
    """Select a CoValue with a conflict session (else the first one), wait for its chains,
    and save the window as a PNG. Returns False if the file could not be written."""
    if not window.select_first(Badge.CONFLICT_SESSION) and inspector.target is not None:
        ids = inspector.target.ids()
        if ids:
            window.navigator.select_covalue(ids[0])
    await _settle(inspector, SCREENSHOT_SETTLE_SECONDS)
    path.parent.mkdir(parents=True, exist_ok=True)
    return bool(window.grab().save(str(path), "PNG"))


async def run_inspector(app: QApplication, args: argparse.Namespace, events: EventLog) -> int:
    monitor = LoopLagMonitor()
    monitor.start()
    inspector = Inspector(events=events, recent=RecentTargets(default_settings()), monitor=monitor)
    inspector.start()
    window = MainWindow(inspector)
    started = asyncio.get_running_loop().time()

    def on_sample(lag: float) -> None:
        window.on_lag_sample(lag)
        if lag > STALL_THRESHOLD:
            at = asyncio.get_running_loop().time() - started
            events.emit("stall", ms=round(lag * 1000, 1), at_s=round(at, 2), busy=inspector.busy)

    monitor.on_sample = on_sample
    closed = asyncio.Event()
    window.closing.connect(closed.set)
    restore_sigterm = _close_on_sigterm(window)
    code = 0
    try:
        window.resize(*WINDOW_SIZE)
        window.show()
        opening = inspector.open_later(TargetSpec.parse(args.target, args.key))
        waiting = asyncio.ensure_future(closed.wait())
        await asyncio.wait({opening, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if opening.done() and not opening.cancelled():
            try:
                ok = bool(opening.result())
            except Exception:  # a bug, not a target failure: log it, keep the window alive
                logger.exception("opening the target failed")
                ok = False
            if args.screenshot is not None:
                saved = ok and await take_screenshot(window, inspector, args.screenshot)
                if not ok:
                    window.grab().save(str(args.screenshot), "PNG")  # shows the error banner
                events.emit("screenshot", path=str(args.screenshot), ok=bool(saved))
                code = 0 if saved else 1
                window.close()
            elif args.quit_after_load:
                code = 0 if ok else 1
                window.close()
        await closed.wait()
    finally:
        restore_sigterm()
        monitor.on_sample = None
        await inspector.close()
        await monitor.stop()
        window.hide()
        window.deleteLater()
        events.emit("lag", max_ms=round(monitor.max_lag * 1000, 1), stalls=monitor.stalls, samples=monitor.samples)
    return code


def app_icon(resources: Path = RESOURCES) -> QIcon:
    """The application icon: every PNG size of :data:`APP_ID` in the hicolor icon tree under
    ``resources``. A null icon when there is none (a broken installation; logged)."""
    icon = QIcon()
    for path in sorted((resources / "icons" / "hicolor").glob(f"*x*/apps/{APP_ID}.png")):
        width, _, height = path.parent.parent.name.partition("x")
        if width.isdigit() and height.isdigit():
            icon.addFile(str(path), QSize(int(width), int(height)))
    if icon.isNull():
        logger.warning("no application icon under %s", resources)
    return icon


def set_identity(app: QApplication) -> None:
    """Give ``app`` the inspector's names, version, desktop file name and window icon."""
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(NAME)
    app.setApplicationDisplayName(DISPLAY_NAME)
    app.setApplicationVersion(__version__)
    QApplication.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        TargetSpec.parse(args.target, args.key)  # keeps a PostgreSQL URL's password from here on
    except UsageError as exc:  # a malformed PostgreSQL URL (the message names no part of it)
        build_parser().error(str(exc))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    events = EventLog(sys.stderr if args.log_json else None)
    app = QApplication.instance() or QApplication([sys.argv[0]])
    assert isinstance(app, QApplication)
    set_identity(app)
    # Closing the last window must not stop the loop under the main coroutine (NOTES-qt).
    app.setQuitOnLastWindowClosed(False)
    try:
        code = run(run_inspector(app, args, events), app)
    except KeyboardInterrupt:
        code = 130
    events.emit("exit", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())
