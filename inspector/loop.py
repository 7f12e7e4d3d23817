"""The one module that imports qasync: the asyncio event loop that runs inside Qt's.

The inspector and an embedded engine share one thread and one loop (DESIGN §11): Qt events
and asyncio callbacks interleave on it, so no callback may run long (see
:mod:`inspector.lag`). Everything else in the inspector imports the loop from here.

PySide6 is imported before qasync on purpose: qasync binds to whichever Qt binding is
already imported, and would otherwise pick another one if it were installed.

Measured on this stack: every asyncio callback, ``call_soon`` included, is a Qt timer, and
Qt's glib event dispatcher runs timers only when no posted event (paint, layout) is waiting.
So back-to-back Qt work of 30 ms each delays asyncio by their sum, not by 30 ms: keep UI
work in separate, short turns (see :mod:`inspector.views.chain`, which builds one lane per
turn) rather than relying on each piece being short.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

# isort: off
from PySide6.QtWidgets import QApplication
import qasync  # after PySide6: see the module docstring
# isort: on

T = TypeVar("T")

__all__ = ["new_loop", "release_loop", "run"]


def new_loop(app: QApplication, *, already_running: bool = False) -> asyncio.AbstractEventLoop:
    """A qasync loop over ``app``.

    ``already_running``: for code that runs Qt's loop itself (pytest-qt's ``qtbot.wait*``):
    the loop registers itself as running at once; undo that with :func:`release_loop`.
    """
    loop: asyncio.AbstractEventLoop = qasync.QEventLoop(app, already_running=already_running)
    return loop


def release_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close a loop made with ``already_running=True`` and unregister it.

    Not via ``loop.stop()``: that calls ``QApplication.exit()``, after which Qt timers
    stop firing for the rest of the process (later tests would hang). qasync has no other
    way to leave the "already running" state, so its flag is reset here, in the one module
    that knows qasync.
    """
    asyncio.events._set_running_loop(None)
    app = QApplication.instance()
    if app is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(RuntimeError, TypeError):
                app.aboutToQuit.disconnect(loop._after_run_forever)  # type: ignore[attr-defined]
    loop._QEventLoop__is_running = False  # type: ignore[attr-defined]
    loop.close()
    _kill_qt_timers(loop)


def _kill_qt_timers(loop: asyncio.AbstractEventLoop) -> None:
    """Stop the Qt timers of callbacks still scheduled on a closed loop.

    qasync keeps one Qt timer per pending callback until it fires. Left running, they make
    the loop's timer object warn "Timers cannot be stopped from another thread" when the
    garbage collector happens to free it on another thread (the worker pool's).
    """
    timer = getattr(loop, "_timer", None)
    callbacks = getattr(timer, "_SimpleTimer__callbacks", None)
    if timer is None or callbacks is None:
        return
    for timer_id in list(callbacks):
        timer.killTimer(timer_id)
    callbacks.clear()


def run(main: Coroutine[Any, Any, T], app: QApplication) -> T:
    """Run ``main`` on a qasync loop over ``app`` until it returns; then close the loop.

    Tasks still pending when ``main`` returns are cancelled (asyncio.Runner does it).
    """
    runner = asyncio.Runner(loop_factory=lambda: new_loop(app))
    try:
        return runner.run(main)
    finally:
        loop = runner.get_loop()
        runner.close()
        _kill_qt_timers(loop)
