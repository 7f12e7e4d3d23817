"""The two store implementations behind one test interface, for the parametrized store suite
(``store_factory`` in this folder's conftest): a fresh location of each kind, opening stores
there, plain SQL on the database beside the store (to damage it the way a bad disk or a stray
tool would), and a snapshot of everything stored (to prove a read-only store wrote nothing).

SQL given to :meth:`Backend.execute` and :meth:`Backend.fetch` uses ``?`` placeholders and
identifiers both databases accept (``"end"`` quoted); PostgreSQL gets them as ``$1``, ``$2``, ….
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

from engine.storage import Store, open_store
from engine.storage.postgres.connection import LoopThread
from engine.storage.sqlite.store import store_file
from tests.engine.storage import file_state

#: The implementations every interface test runs against.
KINDS = ["sqlite", "postgres"]


def _numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2``, …"""
    parts = sql.split("?")
    return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, start=1))


class Backend:
    """A fresh location of one kind; every store opened here is closed by :meth:`close_all`."""

    kind = ""

    def __init__(self, location: str) -> None:
        self.location = location
        self._opened: list[Store] = []

    def open(self, *, readonly: bool = False, writer: str | None = None) -> Store:
        store = open_store(self.location, readonly=readonly, writer=writer)
        self._opened.append(store)
        return store

    @contextmanager
    def opened(self, *, readonly: bool = False) -> Iterator[Store]:
        store = open_store(self.location, readonly=readonly)
        try:
            yield store
        finally:
            store.close()

    def close_all(self) -> None:
        for store in self._opened:
            store.close()
        self._opened.clear()

    def execute(self, sql: str, *args: Any) -> None:
        raise NotImplementedError

    def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def state(self) -> object:
        """Everything stored, comparable: equal before and after means nothing was written."""
        raise NotImplementedError


class SQLiteBackend(Backend):
    kind = "sqlite"

    @property
    def file(self) -> Path:
        return store_file(self.location)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.file, isolation_level=None)

    def execute(self, sql: str, *args: Any) -> None:
        conn = self._connect()
        try:
            conn.execute(sql, args)
        finally:
            conn.close()

    def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return [tuple(row) for row in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    def state(self) -> object:
        wal = self.file.with_name(self.file.name + "-wal")
        return file_state(self.file), wal.exists() and wal.stat().st_size


class PostgresBackend(Backend):
    """Plain SQL runs on a loop thread of its own, so it can be used inside a running loop."""

    kind = "postgres"

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self._loop: LoopThread | None = None

    def close_all(self) -> None:
        super().close_all()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def _run(self, sql: str, args: tuple[Any, ...], *, rows: bool) -> list[tuple[Any, ...]]:
        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.location)
            try:
                if rows:
                    return [tuple(r) for r in await conn.fetch(_numbered(sql), *args)]
                await conn.execute(_numbered(sql), *args)
                return []
            finally:
                await conn.close()

        if self._loop is None:
            self._loop = LoopThread("test-sql")
        return self._loop.run(run())

    def execute(self, sql: str, *args: Any) -> None:
        self._run(sql, args, rows=False)

    def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self._run(sql, args, rows=True)

    def state(self) -> object:
        tables = [t for (t,) in self.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return {t: sorted(map(repr, self.fetch(f"SELECT * FROM {t}"))) for t in sorted(tables)}
