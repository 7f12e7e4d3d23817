"""The connection state is always in the status bar: progress while connecting, ``live``, and,
when the node dies (SIGKILL of a real ``kintsugi node serve``), ``lost since HH:MM:SS ·
reconnecting (attempt N, next try in S s)`` with the views marked stale, within the ping
timeout; the same node started again on the same port and store makes it ``live`` again."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.protocol.limits import Limits
from inspector.controller import Inspector
from inspector.targets import RemoteTarget, TargetSpec
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import run, wait_for
from tests.util import free_port, python_child, timeout

#: The inspector's small connection limits here: a node that stops answering counts as lost
#: after PING_INTERVAL + PING_TIMEOUT seconds at the latest (a killed one at once: its socket
#: is closed by the kernel).
PING_INTERVAL = 0.5
PING_TIMEOUT = 1.0
LOST = re.compile(r"^lost since \d\d:\d\d:\d\d · reconnecting \(attempt \d+, (next try in \d+ s|trying now)\)$")


class Node:
    """``kintsugi node serve`` on one store and port, started and killed by the test."""

    def __init__(self, store: Path, port: int, admin: str) -> None:
        self.store, self.port, self.admin = store, port, admin
        self.ready = store.parent / "node.ready"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, qtbot: QtBot) -> None:
        self.ready.unlink(missing_ok=True)
        self.proc = python_child(
            [
                *("-m", "engine.cli", "node", "serve", "--store", str(self.store), "--host", "127.0.0.1"),
                *("--port", str(self.port), "--admin", self.admin, "--ready-file", str(self.ready)),
                *("--ping-interval", str(PING_INTERVAL), "--ping-timeout", str(PING_TIMEOUT)),
            ],
            stdin=subprocess.DEVNULL,
        )
        proc = self.proc
        wait_for(qtbot, lambda: self.ready.exists() or proc.poll() is not None, units=20)
        assert self.ready.exists(), f"the node exited: {proc.communicate()[1][-2000:]}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.communicate(timeout=timeout(10))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.communicate(timeout=timeout(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


@pytest.fixture
def operator(tmp_path: Path) -> tuple[AccountKey, Path]:
    key = AccountKey.generate()
    path = tmp_path / "operator.key"
    key.save(path)
    return key, path


@pytest.fixture
def node(tmp_path: Path, operator: tuple[AccountKey, Path]) -> Iterator[Node]:
    """Request it before ``inspector``: it is stopped after the inspector closed."""
    served = Node(tmp_path / "store", free_port(), operator[0].account_id)
    yield served
    served.stop()


def test_lost_reconnecting_and_live_again(
    node: Node, qtbot: QtBot, inspector: Inspector, window: MainWindow, operator: tuple[AccountKey, Path]
) -> None:
    node.start(qtbot)
    status = window.status
    seen: list[tuple[str, bool]] = []
    inspector.connecting.connect(lambda _label: seen.append((status.label.text(), status.progress.isVisibleTo(window))))
    spec = TargetSpec("node", node.url, str(operator[1]))
    target = RemoteTarget(spec, inspector.pool, limits=Limits(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT))
    assert run(qtbot, inspector.open(spec, target), units=30)
    assert seen == [(f"connecting: {node.url}…", True)]  # with a busy progress bar
    wait_for(qtbot, lambda: status.label.text() == "live")
    assert not status.progress.isVisibleTo(window) and not status.banner.isVisibleTo(window)
    assert window.tabs.property("stale") is not True

    killed = time.monotonic()
    node.kill()
    wait_for(qtbot, lambda: bool(LOST.match(status.label.text())), units=PING_INTERVAL + PING_TIMEOUT + 2)
    said = time.monotonic() - killed
    assert said < PING_INTERVAL + PING_TIMEOUT + timeout(1), said
    assert status.banner.isVisibleTo(window) and "Stale" in status.banner_text.text()
    assert window.tabs.property("stale") is True and status.banner.property("stale") is True
    assert status.state is not None and status.state.stale
    lost_text = status.label.text()
    lost_since = lost_text.split(" · ")[0]
    # The attempts go on, counted, and "lost since" keeps the time it was lost.
    wait_for(qtbot, lambda: int(re.findall(r"attempt (\d+)", status.label.text())[0]) >= 2, units=10)
    assert status.label.text().startswith(lost_since)

    node.start(qtbot)  # the same store, on the same port
    wait_for(qtbot, lambda: status.label.text() == "live", units=20)
    assert not status.banner.isVisibleTo(window) and window.tabs.property("stale") is False
    assert target.connected
    window.close()
