"""File modes of SQLite stores (issue 12, point 6): a store holds every user's data in clear,
so a new store directory is 0700 and its database, ``-wal`` and ``-shm`` files are 0600; an
existing store with looser modes opens as it is, with one warning naming each loose path.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.crypto import AccountKey
from engine.node.facade import LocalNode
from engine.storage import make_store_directory, open_store
from engine.storage.sqlite.connection import STORE_DIR_MODE, STORE_FILE, STORE_FILE_MODE, loose_modes

LOGGER = "engine.storage.sqlite.connection"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest usual umask, so the modes checked come from the code, not the umask."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_store_directory_and_files_are_private(tmp_path: Path, open_umask: None) -> None:
    """Directory 0700; database, -wal and -shm 0600 (checked while the store is open, when
    SQLite has made its -wal and -shm)."""
    location = tmp_path / "deep" / "store"
    node = LocalNode.open(location, AccountKey.generate())
    try:
        covalue = node.create_map(None)
        node.set(covalue.id, "k", "v")
        node.flush()
        files = {p.name: mode(p) for p in location.iterdir()}
        assert mode(location) == STORE_DIR_MODE == 0o700
        for name in (STORE_FILE, STORE_FILE + "-wal", STORE_FILE + "-shm"):
            assert files.get(name) == STORE_FILE_MODE == 0o600, files
    finally:
        node.close()
    assert loose_modes(location / STORE_FILE) == []


def test_store_given_as_a_file_leaves_its_directory_alone(tmp_path: Path, open_umask: None) -> None:
    """A store named by its file lives in a directory that is not its own: that directory
    keeps its mode and is not warned about; the file is still 0600."""
    tmp_path.chmod(0o755)
    store = open_store(tmp_path / "app.db")
    store.close()
    assert mode(tmp_path) == 0o755
    assert mode(tmp_path / "app.db") == 0o600
    assert loose_modes(tmp_path / "app.db", own_dir=False) == []


def test_loose_existing_store_opens_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store made 0755/0644 (as older versions did) opens, read-write and read-only; each
    open logs one warning naming the loose paths and their modes; nothing is changed."""
    location = tmp_path / "store"
    open_store(location).close()
    location.chmod(0o755)
    (location / STORE_FILE).chmod(0o644)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for readonly in (False, True):
        caplog.clear()
        open_store(location, readonly=readonly).close()
        warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert len(warnings) == 1, warnings
        assert f"{location} (0755)" in warnings[0]
        assert f"{location / STORE_FILE} (0644)" in warnings[0]
    assert mode(location) == 0o755
    assert mode(location / STORE_FILE) == 0o644


def test_private_store_opens_without_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    open_store(tmp_path / "store").close()
    open_store(tmp_path / "store", readonly=True).close()
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_directory_made_before_the_store_is_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """make_store_directory (for files kept beside a store, such as a node's key) creates the
    directory as the store would: 0700, so the store opened there later warns of nothing."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    made = make_store_directory(tmp_path / "node")
    assert made == tmp_path / "node"
    assert mode(made) == 0o700
    open_store(tmp_path / "node").close()
    assert [r for r in caplog.records if r.name == LOGGER] == []
    assert make_store_directory("postgresql://db/x") is None
