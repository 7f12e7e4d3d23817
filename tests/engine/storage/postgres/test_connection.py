"""Reaching a PostgreSQL store: driver errors leave as typed storage errors (never an asyncpg
exception), a password never shows in a message, and a lost connection costs one call at
most — the store and its writer open a new one."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from engine.errors import (
    KintsugiError,
    StorageBugError,
    StorageEnvironmentError,
    StorageUnavailable,
    StoreNotFound,
    UsageError,
)
from engine.model.header import UnsafeAllowAll, new_header
from engine.storage.postgres.connection import display_location, translate
from tests.engine.storage.backends import PostgresBackend
from tests.util import timeout, wait_until

T0 = 1_700_000_000_000


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (asyncpg.exceptions.DiskFullError("no space left"), StorageUnavailable),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock"), StorageEnvironmentError),
        (asyncpg.exceptions.SerializationError("retry"), StorageEnvironmentError),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), StorageEnvironmentError),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), StorageEnvironmentError),
        (asyncpg.exceptions.InvalidPasswordError("no"), StorageEnvironmentError),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("ro"), StorageEnvironmentError),
        (asyncpg.exceptions.InvalidCatalogNameError("no db"), StoreNotFound),
        (asyncpg.exceptions.UniqueViolationError("dup"), StorageBugError),
        (asyncpg.exceptions.UndefinedTableError("no table"), StorageBugError),
        (asyncpg.exceptions.PostgresSyntaxError("syntax"), StorageBugError),
        (ConnectionResetError("reset"), StorageEnvironmentError),
        (TimeoutError(), StorageEnvironmentError),
        (asyncpg.exceptions.InterfaceError("connection is closed"), StorageEnvironmentError),
        (asyncpg.exceptions.InterfaceError("another operation is in progress"), StorageBugError),
        (asyncpg.exceptions.ClientConfigurationError("bad sslmode"), UsageError),
    ],
)
def test_driver_errors_are_sorted_into_typed_errors(error: Exception, expected: type[KintsugiError]) -> None:
    typed = translate(error, "doing it")
    assert type(typed) is expected
    assert str(typed).startswith("doing it")


def test_a_password_never_shows() -> None:
    assert display_location("postgresql://kin:s3cret@db.example:5432/kintsugi") == (
        "postgresql://kin@db.example:5432/kintsugi"
    )
    assert display_location("postgresql://kin@/kintsugi?host=/run") == "postgresql://kin@/kintsugi?host=/run"


def test_a_server_side_failure_is_a_typed_error(pg_backend: PostgresBackend) -> None:
    """A table gone under the store: StorageBugError naming the SQLSTATE, not an asyncpg error."""
    db = pg_backend
    store = db.open()
    db.execute("DROP TABLE checkpoints")
    with pytest.raises(StorageBugError) as info:
        store.get_checkpoint("ns", "k")
    assert "42P01" in str(info.value) and not isinstance(info.value, asyncpg.PostgresError)


def terminate_kintsugi_connections(db: PostgresBackend) -> int:
    [(n,)] = db.fetch(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'kintsugi'"
    )
    return int(n)


def test_the_store_and_its_writer_reconnect_after_losing_their_connection(pg_backend: PostgresBackend) -> None:
    """The server ends both connections (as on a restart or a failover): the next call may
    fail, with StorageEnvironmentError only, and the store and writer then work again."""
    db = pg_backend
    store = db.open()
    header = new_header("comap", UnsafeAllowAll(), created_at=T0)

    def works_again(call: object) -> None:
        assert callable(call)
        for attempt in range(2):
            try:
                call()
                return
            except StorageEnvironmentError:
                assert attempt == 0, "the store did not reconnect"

    async def main() -> None:
        writer = store.background_writer()
        writer.start()
        try:
            await writer.write([header])
            assert terminate_kintsugi_connections(db) == 2
            wait_until(lambda: terminate_kintsugi_connections(db) == 0, 10, "the connections to end")
            works_again(lambda: store.put_checkpoint("ns", "k", b"v"))
            for attempt in range(2):
                try:
                    await asyncio.wait_for(writer.write([header]), timeout(10))
                    break
                except StorageEnvironmentError:
                    assert attempt == 0, "the writer did not reconnect"
        finally:
            await writer.close()

    asyncio.run(main())
    assert store.get_checkpoint("ns", "k") == b"v" and store.has(header.covalue_id())
