"""``store_factory``: every test that takes it runs once per store implementation (SQLite in
``tmp_path``, PostgreSQL in a fresh database of the session's throwaway server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.storage.backends import KINDS, Backend, PostgresBackend, SQLiteBackend


@pytest.fixture(params=KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend: Backend
    if request.param == "sqlite":
        backend = SQLiteBackend(str(tmp_path / "store"))
    else:
        backend = PostgresBackend(request.getfixturevalue("pg_url"))
    try:
        yield backend
    finally:
        backend.close_all()


@pytest.fixture
def pg_backend(pg_url: str) -> Iterator[PostgresBackend]:
    """A fresh PostgreSQL database only, for the PostgreSQL-specific tests."""
    backend = PostgresBackend(pg_url)
    try:
        yield backend
    finally:
        backend.close_all()
