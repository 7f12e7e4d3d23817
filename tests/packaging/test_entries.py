"""The entries of the distribution: ``python -m inspector``, ``python -m engine`` (the
``kintsugi`` command) and the private first argument that runs one demo client, which the
live demo uses to start its clients the same way from a checkout and from a frozen app."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from engine import __version__
from engine.demo import live
from tests.util import REPO, timeout


def python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout(60), check=False, cwd=REPO
    )


def test_python_dash_m_inspector_is_the_inspector() -> None:
    result = python("-m", "inspector", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kintsugi-inspector {__version__}"


def test_python_dash_m_engine_is_the_kintsugi_command() -> None:
    result = python("-m", "engine", "--version")
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout
    assert python("-m", "engine", "no-such-command").returncode == 2


@pytest.mark.parametrize("entry", ["engine", "inspector"])
def test_the_private_argument_runs_a_demo_client_and_nothing_else(entry: str) -> None:
    """Both entries hand it to the demo client's own parser (which rejects these arguments
    with exit code 2), and the inspector's does so without importing Qt."""
    code = (
        "import sys\n"
        f"from {entry}.__main__ import main\n"
        "try:\n"
        f"    code = main([{live.DEMO_CHILD_ARG!r}, 'write-then-hang'])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "print(code, 'PySide6' in sys.modules)\n"
    )
    result = python("-c", code)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert "usage: kintsugi" not in result.stderr and "kintsugi-inspector" not in result.stderr


class Started(Exception):
    """Raised by the fake Popen with the command it was given."""


def fake_popen(command: list[str], **_kwargs: Any) -> None:
    raise Started(command)


def test_demo_clients_start_through_the_private_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live.subprocess, "Popen", fake_popen)
    with pytest.raises(Started) as started:
        live._child(["reuse-session", "x"])
    assert started.value.args[0] == [sys.executable, "-m", "engine", live.DEMO_CHILD_ARG, "reuse-session", "x"]
    # frozen (PyInstaller sets sys.frozen): the app itself, which dispatches the argument
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    with pytest.raises(Started) as started:
        live._child(["reuse-session", "x"])
    assert started.value.args[0] == [sys.executable, live.DEMO_CHILD_ARG, "reuse-session", "x"]
