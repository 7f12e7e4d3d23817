"""Stores on read-only media (issue 12, point 7): ``kintsugi verify``, ``kintsugi inspect``
and the inspector's store target open a store whose directory and files cannot be written —
a real read-only bind mount in the child's own mount namespace (see ``tests/e2e/_media.py``).
Before, SQLite refused ("unable to open database file"): a WAL store read ``mode=ro`` still
needs to create its ``-shm`` file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.crypto import AccountKey
from engine.node.facade import LocalNode
from tests.e2e._media import on_readonly
from tests.util import REPO, timeout

#: What the inspector's store target does on opening, then one CoValue's content.
APP_OPEN = """
import asyncio, json, sys
from inspector.targets import TargetSpec, make_target
from inspector.workers import WorkerPool

async def main():
    pool = WorkerPool()
    target = make_target(TargetSpec("store", sys.argv[1]), pool)
    await target.open()
    ids = sorted(target._summaries)
    content = await target.content(ids[0])
    await target.close()
    await pool.close()
    print(json.dumps({"covalues": len(ids), "content": content is not None}))

asyncio.run(main())
"""


@pytest.fixture
def readonly_store(tmp_path: Path) -> Path:
    """A store with two CoMaps, closed (its -wal merged away, as a copied store would be)."""
    location = tmp_path / "media" / "store"
    node = LocalNode.open(location, AccountKey.generate())
    try:
        for i in range(2):
            covalue = node.create_map(None)
            node.set(covalue.id, "k", f"v{i}")
        node.flush()
    finally:
        node.close()
    assert not (location / "kintsugi.db-shm").exists()
    return location


def run_readonly(location: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = on_readonly(location.parent, [sys.executable, *args])
    env = dict(os.environ, PYTHONPATH=str(REPO), QT_QPA_PLATFORM="offscreen")
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout(60), check=False)


def test_the_media_really_is_readonly(readonly_store: Path) -> None:
    probe = "import sys, pathlib; pathlib.Path(sys.argv[1], 'probe').write_text('x')"
    result = run_readonly(readonly_store, "-c", probe, str(readonly_store))
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr


def test_verify_on_readonly_media(readonly_store: Path) -> None:
    result = run_readonly(readonly_store, "-m", "engine.cli", "verify", str(readonly_store), "--json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    json.loads(result.stdout)


def test_inspect_on_readonly_media(readonly_store: Path) -> None:
    result = run_readonly(readonly_store, "-m", "engine.cli", "inspect", str(readonly_store), "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["covalues"]) == 2


def test_inspector_store_target_on_readonly_media(readonly_store: Path) -> None:
    result = run_readonly(readonly_store, "-c", APP_OPEN, str(readonly_store))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"covalues": 2, "content": True}
