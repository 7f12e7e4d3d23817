"""Suite-wide settings: Qt offscreen before any Qt import; hypothesis profiles; the throwaway
PostgreSQL server (``postgres``) and a fresh store on it per test (``pg_url``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.pg import PostgresServer

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=5_000, deadline=None)
settings.load_profile(os.environ.get("KINTSUGI_HYPOTHESIS", "ci"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The throwaway PostgreSQL server of this test session (tests/pg.py), started on first
    use and stopped at the end. A test that needs it FAILS (never skips) when it cannot start."""
    from tests.pg import PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL is needed by this test and could not be started: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """The ``postgresql://`` URL of a fresh, empty store (a schema of its own), dropped after
    the test."""
    name = postgres.create_schema()
    try:
        yield postgres.url(schema=name)
    finally:
        postgres.drop_schema(name)
