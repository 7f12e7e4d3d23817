"""``kintsugi node serve`` on a full disk (issue 12, point 5), for real: a tmpfs filled to the
last byte in the child's own mount namespace (``tests/e2e/_media.py``).

With no key file yet, the node must say plainly that it cannot write its key (no traceback),
and leave no key file behind: a 0-byte ``node.key`` used to block every later start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e._media import LISTING, full_disk_available, on_full_disk
from tests.util import REPO, timeout


@pytest.fixture(autouse=True)
def _a_real_full_disk() -> None:
    """A real full filesystem is the point: without one the test fails (it is never skipped)."""
    if not full_disk_available():
        pytest.fail("these tests mount a small tmpfs in a private mount namespace: they need root and unshare")


def run_on_full_disk(directory: Path, *args: str) -> tuple[int, str, list[tuple[int, str]]]:
    """``python args...`` with ``directory`` a full tmpfs: exit code, stderr, files left."""
    directory.mkdir()
    argv = on_full_disk(directory, "64k", [sys.executable, *args])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout(60), check=False)
    assert LISTING in result.stdout, result.stdout + result.stderr
    files = []
    for line in result.stdout.split(LISTING, 1)[1].strip().splitlines():
        size, name = line.split(" ", 1)
        files.append((int(size), name))
    return result.returncode, result.stderr, files


def test_node_serve_on_a_full_disk_without_key(tmp_path: Path) -> None:
    """A clear one-line reason, a failure exit code, no traceback, no key file left."""
    code, stderr, files = run_on_full_disk(
        tmp_path / "disk",
        *("-m", "engine.cli", "node", "serve", "--store", str(tmp_path / "disk" / "node"), "--port", "0"),
    )
    assert code != 0
    assert "Traceback" not in stderr, stderr
    assert "node.key" in stderr and "No space left on device" in stderr, stderr
    names = [name for _size, name in files]
    assert not any(name.endswith("node.key") or ".node.key." in name for name in names), files


def test_account_new_on_a_full_disk(tmp_path: Path) -> None:
    """``kintsugi account new`` on a full disk: the same clear failure, no key file."""
    code, stderr, files = run_on_full_disk(
        tmp_path / "disk", *("-m", "engine.cli", "account", "new", "--out", str(tmp_path / "disk" / "me.key"))
    )
    assert code != 0
    assert "Traceback" not in stderr, stderr
    assert "No space left on device" in stderr, stderr
    assert [name for _size, name in files if "key" in name] == [], files
