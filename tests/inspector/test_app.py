"""End to end: ``kintsugi-inspector`` as a real subprocess (offscreen), read through its
``--log-json`` lines on stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.demo.scenario import DemoResult
from tests.inspector.conftest import SCREENSHOTS
from tests.util import REPO, python_child, run_cli, timeout, wait_until

PNG = b"\x89PNG\r\n\x1a\n"


class App:
    """A running inspector whose stderr is collected line by line on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = python_child(["-m", "inspector.app", *args, "--log-json"])
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    out.append(record)
        return out

    def wait_event(self, name: str, units: float = 60) -> dict[str, Any]:
        wait_until(lambda: bool(self.events(name)) or self.proc.poll() is not None, units, f"{name} event")
        if not self.events(name) and self.proc.poll() is not None:
            self._reader.join(timeout(10))  # the process ended: read what it wrote last
        events = self.events(name)
        assert events, f"no {name} event; stderr:\n" + "\n".join(self.lines)
        return events[-1]

    def finish(self, units: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout(units))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self._reader.join(timeout(10))
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        return code

    def stderr_text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(autouse=True)
def child_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offscreen, and settings (recent targets) under a temporary config home."""
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config"


def test_screenshot_of_a_store_then_exit(demo_store: DemoResult) -> None:
    shot = SCREENSHOTS / "app-store.png"
    shot.unlink(missing_ok=True)
    app = App(demo_store.store, "--screenshot", str(shot))
    loaded = app.wait_event("loaded")
    assert loaded["covalues"] == 4 and loaded["conflict_sessions"] >= 1 and loaded["deleted"] >= 1
    assert loaded["corrupt"] == 0
    assert app.finish() == 0, app.stderr_text()
    assert app.events("exit") == [{"event": "exit", "code": 0}]
    assert app.events("screenshot")[0]["ok"] is True
    assert shot.read_bytes()[:8] == PNG
    assert "Traceback" not in app.stderr_text()


def test_the_embedded_demo_closes_cleanly_on_sigterm(child_env: Path) -> None:
    app = App()
    loaded = app.wait_event("loaded")
    # the live demo: group, todo, notes, telemetry, the deleted scratch, and the damaged ledger and
    # stale release to recover; two forks recovered
    assert loaded["covalues"] == 7 and loaded["conflict_sessions"] >= 2 and loaded["deleted"] == 1
    assert loaded["forked"] >= 1 and app.events("fork")
    app.proc.send_signal(signal.SIGTERM)
    assert app.finish() == 0, app.stderr_text()
    assert app.events("exit") == [{"event": "exit", "code": 0}]
    lag = app.events("lag")[0]
    assert lag["samples"] > 0
    print(f"\ninspector on the embedded demo: max loop lag {lag['max_ms']} ms over {lag['samples']} samples")
    assert "Traceback" not in app.stderr_text() and "Task was destroyed" not in app.stderr_text()
    # the recent target was remembered in the settings under the temporary config home
    settings = child_env / "Kintsugi" / "inspector.conf"
    assert settings.exists() and "demo" in settings.read_text()


def test_quit_after_load_and_failures_without_tracebacks(tmp_path: Path, demo_store: DemoResult) -> None:
    app = App(demo_store.store, "--quit-after-load")
    app.wait_event("loaded")
    assert app.finish() == 0, app.stderr_text()
    assert app.events("exit") == [{"event": "exit", "code": 0}]

    missing = App(str(tmp_path / "nothing"), "--quit-after-load")
    error = missing.wait_event("error")
    assert error["code"] == "store_not_found" and "There is no Kintsugi store there" in error["detail"]
    assert missing.finish() == 1
    assert missing.events("exit") == [{"event": "exit", "code": 1}]
    assert "Traceback" not in missing.stderr_text()


def test_a_real_node_with_the_demo_story_end_to_end(tmp_path: Path) -> None:
    """``kintsugi node serve`` and ``kintsugi demo --headless --connect`` as real processes,
    then ``kintsugi-inspector ws://… --key admin.key`` as one: it loads every CoValue the
    node holds (forks recovered into conflict sessions, a tombstone), exits cleanly, and the
    node stops cleanly on SIGTERM."""
    key = tmp_path / "admin.key"
    admin = json.loads(run_cli("account", "new", "--out", str(key), "--json").stdout)["account"]
    ready = tmp_path / "node.ready"
    store = tmp_path / "node-store"
    node = python_child(
        ["-m", "engine.cli", "node", "serve", "--store", str(store), "--admin", admin, "--ready-file", str(ready)]
    )
    node_code: int | None = None
    try:
        wait_until(lambda: ready.exists() or node.poll() is not None, 15, "the node's ready file")
        assert ready.exists(), "the node exited before it was ready"
        url = ready.read_text().strip()
        demo = run_cli("demo", "--headless", "--connect", url, "--json", timeout_units=120)
        story = json.loads(demo.stdout)
        assert story["deleted"] and len(story["conflict_sessions"]) >= 2

        app = App(url, "--key", str(key), "--quit-after-load")
        try:
            loaded = app.wait_event("loaded")
            assert loaded["covalues"] >= 4 and loaded["conflict_sessions"] >= 2 and loaded["deleted"] >= 1
            assert loaded["corrupt"] == 0
            opened = app.events("opened")[0]
            assert opened["kind"] == "node" and opened["node"]["admin"] is True
            assert opened["node"]["version"] == "0.1.0"
            assert app.wait_event("peers")["connected"] >= 1  # the node's peers, read as its admin
        except BaseException:
            app.proc.kill()  # never leave the inspector running behind a failed assertion
            app.finish()
            raise
        assert app.finish() == 0, app.stderr_text()
        assert app.events("exit") == [{"event": "exit", "code": 0}]
        assert "Traceback" not in app.stderr_text() and "Task was destroyed" not in app.stderr_text()
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
        try:
            node_code = node.wait(timeout(10))
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        _out, node_err = node.communicate()
    assert node_code == 0, node_err
    assert not ready.exists()  # the node removes its ready file when it stops cleanly


def test_python_m_inspector_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inspector", "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen"),
        timeout=timeout(60),
        check=False,
    )
    assert result.returncode == 0 and "usage: kintsugi-inspector" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr
