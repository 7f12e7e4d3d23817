"""The throwaway PostgreSQL server of the tests: :class:`bench.pgserver.PostgresServer` (which
the ``cluster`` benchmark starts too), started once per test session by the ``postgres``
fixture (tests/conftest.py) and stopped at the end.

- Its waits scale with the test unit (:data:`SERVER_UNITS` units each, tests/util.py).
- Each test gets a store of its own in a few milliseconds: a fresh schema in the shared
  database :data:`DATABASE`, named in the store's URL by ``options=-csearch_path=…``, dropped
  after the test. :meth:`PostgresServer.create_database` makes a whole database where a test
  needs one (a few hundred milliseconds). Statements go through asyncpg here (the tests may
  import it), not through a ``psql`` process as in the benchmark: that keeps a schema a few
  milliseconds.

When the server cannot be started, :class:`PostgresUnavailable` says why and what to install;
the fixture turns that into a failure of every test that needs it (never a skip).
"""

from __future__ import annotations

import asyncio

import asyncpg

from bench import pgserver
from bench.pgserver import (
    DATABASE,
    DEBIAN_PREFIX,
    SERVER_SETTINGS,
    SUPERUSER,
    PostgresUnavailable,
    find_server_programs,
)
from tests.util import timeout

__all__ = [
    "DATABASE",
    "DEBIAN_PREFIX",
    "SERVER_SETTINGS",
    "SUPERUSER",
    "PostgresServer",
    "PostgresUnavailable",
    "find_server_programs",
]

#: Units ``initdb``, ``pg_ctl start``, ``pg_ctl stop`` and each statement may each take.
SERVER_UNITS = 60


class PostgresServer(pgserver.PostgresServer):
    """One throwaway server (:class:`bench.pgserver.PostgresServer`) with waits in test units
    and its own statements sent through asyncpg."""

    def __init__(self) -> None:
        super().__init__(step_timeout=timeout(SERVER_UNITS))

    def _admin(self, statement: str, database: str = "postgres") -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.url(database), timeout=self.step_timeout)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        try:
            asyncio.run(run())
        except (OSError, asyncpg.PostgresError) as exc:
            raise PostgresUnavailable(f"{statement}: {exc}") from exc
