"""Reaching a PostgreSQL store: the private event loop, the connection, and the one place that
sorts driver errors into typed storage errors.

Why a loop thread: the :class:`~engine.storage.interface.Store` interface is synchronous (the
node calls it from its own thread, which may be running its own asyncio loop), and asyncpg
only speaks asyncio. Each :class:`PgLink` therefore owns a :class:`LoopThread` — a daemon
thread running a private event loop — and one asyncpg connection that lives on that loop.
A synchronous call submits one coroutine to the loop and blocks until it has finished; the
connection is never touched from any other thread. Calling the loop's own thread back into
:meth:`LoopThread.run` would deadlock, and is refused.

A lost connection (the server restarted, a network blip) fails the call that was using it
with :class:`~engine.errors.StorageEnvironmentError`; the next call opens a new connection.

Durability: ``synchronous_commit`` is set per connection: ``on`` unless a caller trades
durability for speed (``synchronous`` other than :data:`DEFAULT_SYNCHRONOUS`, as benchmarks
and test fixtures may), so a COMMIT returns only once the server has flushed it.
Read-only stores set ``default_transaction_read_only``: the server itself refuses writes.

Errors (:func:`pg_errors`): connection failures, authentication, transaction rollbacks
(serialization failures, deadlocks), lack of resources, operator intervention, system and
internal server errors, read-only transactions, and timeouts are
:class:`~engine.errors.StorageEnvironmentError` — a full disk its
:class:`~engine.errors.StorageUnavailable`; a database that does not exist is
:class:`~engine.errors.StoreNotFound`; everything else (syntax, missing tables, constraint
violations, data errors) is :class:`~engine.errors.StorageBugError`. Messages name the
public location (:mod:`.location`: no password, no secret parameter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from engine.errors import (
    KintsugiError,
    StorageBugError,
    StorageEnvironmentError,
    StorageUnavailable,
    StoreNotFound,
    UsageError,
)
from engine.storage.postgres.location import connect_location, public_location, remember

__all__ = [
    "COMMAND_TIMEOUT",
    "CONNECT_TIMEOUT",
    "DEFAULT_SYNCHRONOUS",
    "ConnectParams",
    "LoopThread",
    "PgLink",
    "display_location",
    "pg_errors",
    "translate",
]

T = TypeVar("T")

#: Seconds to wait for a connection to the server before StorageEnvironmentError.
CONNECT_TIMEOUT = 30.0
#: Seconds any one statement may run (waiting for another node's lock included) before
#: StorageEnvironmentError; a write that times out is rolled back whole.
COMMAND_TIMEOUT = 60.0
#: The durability a store gets unless told otherwise (the same name as SQLite's setting):
#: ``FULL`` means ``synchronous_commit = on``; anything else ``off`` (a server crash may lose
#: the last commits, never corrupt the store).
DEFAULT_SYNCHRONOUS = "FULL"
#: ``application_name`` of every connection, so an operator sees them in pg_stat_activity.
APPLICATION_NAME = "kintsugi"

#: SQLSTATE classes that mean the environment failed rather than our SQL: connection
#: exception, invalid authorization, transaction rollback (serialization failure, deadlock),
#: insufficient resources, object not in prerequisite state (lock not available), operator
#: intervention (shutdown, cannot connect now), system error (I/O), internal error.
ENVIRONMENT_CLASSES = frozenset({"08", "28", "40", "53", "55", "57", "58", "XX"})
#: Single SQLSTATEs of the environment outside those classes: read-only transaction,
#: invalid password.
ENVIRONMENT_STATES = frozenset({"25006", "28P01"})
DISK_FULL = "53100"
NO_SUCH_DATABASE = "3D000"


def display_location(location: str) -> str:
    """``location`` as messages and logs show it: its public location (no secrets)."""
    return public_location(location)


def translate(exc: BaseException, what: str) -> KintsugiError:
    """The typed error for a driver (or socket) failure during ``what`` (see the module)."""
    if isinstance(exc, KintsugiError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        detail = f"{what}: {exc} (SQLSTATE {state})"
        if state == DISK_FULL:
            return StorageUnavailable(f"{what}: the database server's disk is full ({exc})")
        if state == NO_SUCH_DATABASE:
            return StoreNotFound(f"{what}: {exc}")
        if state[:2] in ENVIRONMENT_CLASSES or state in ENVIRONMENT_STATES:
            return StorageEnvironmentError(detail)
        return StorageBugError(detail)
    if isinstance(exc, asyncpg.exceptions.ClientConfigurationError):
        return UsageError(f"{what}: {exc}")
    closed = isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)
    if closed or isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError)):
        why = str(exc) or type(exc).__name__
        return StorageEnvironmentError(f"{what}: {why}")
    return StorageBugError(f"{what}: {exc!r}")


@contextmanager
def pg_errors(what: str) -> Iterator[None]:
    """Raise the typed error (:func:`translate`) for any driver failure inside the block."""
    try:
        yield
    except KintsugiError:
        raise
    except Exception as exc:
        raise translate(exc, what) from exc


class LoopThread:
    """A private asyncio event loop running forever on its own daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception).

        Raises :class:`UsageError` when called from the loop's own thread (it would wait for
        itself) or after :meth:`stop`.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise UsageError("a PostgreSQL store was called from its own loop thread")
        if not self._thread.is_alive() or self.loop.is_closed():
            coro.close()
            raise UsageError("the PostgreSQL store is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Schedule ``callback(*args)`` on the loop (from any thread)."""
        self.loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        """Stop the loop (tasks still pending are cancelled) and wait for its thread."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """How a store connects: its public location and the settings every connection gets.

    ``location`` becomes the public location (:mod:`.location`): the secrets of the URL a
    store was opened with stay in this process's memory of them, looked up only to connect.
    Raises :class:`UsageError` for a URL that is not one.
    """

    location: str
    readonly: bool = False
    synchronous: str = DEFAULT_SYNCHRONOUS

    def __post_init__(self) -> None:
        # Given a URL with secrets, keep them in this process's memory and only the public
        # location here. Raises UsageError for a URL that is not one.
        object.__setattr__(self, "location", remember(self.location))

    @property
    def display(self) -> str:
        return display_location(self.location)

    def server_settings(self) -> dict[str, str]:
        settings = {
            "application_name": APPLICATION_NAME,
            "synchronous_commit": "on" if self.synchronous.upper() == DEFAULT_SYNCHRONOUS else "off",
        }
        if self.readonly:
            settings["default_transaction_read_only"] = "on"
        return settings

    def _connect_args(self) -> dict[str, Any]:
        """What every connection is opened with: the URL, its password, timeouts, settings."""
        url, password = connect_location(self.location)
        return {
            "dsn": url,
            "password": password,
            "timeout": CONNECT_TIMEOUT,
            "command_timeout": COMMAND_TIMEOUT,
            "server_settings": self.server_settings(),
        }

    async def connect(self) -> asyncpg.Connection:
        """A new connection (on the running loop); raises typed errors (:func:`translate`)."""
        with pg_errors(f"connect to {self.display}"):
            return await asyncpg.connect(**self._connect_args())

    async def pool(self, size: int) -> asyncpg.Pool:
        """A pool of at most ``size`` connections (one opened now), on the running loop, for
        single statements that leave no session state behind (see :class:`_PlainConnection`);
        raises typed errors (:func:`translate`). Lost connections are replaced on use."""
        with pg_errors(f"connect to {self.display}"):
            return await asyncpg.create_pool(
                **self._connect_args(), min_size=1, max_size=size, connection_class=_PlainConnection
            )


class _PlainConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pooled connection given back without a reset query. By default a pool sends one
    (advisory unlocks, ``CLOSE ALL``, ``UNLISTEN *``, ``RESET ALL``) on every release: a round
    trip as long as the read itself, for connections whose users never change the session.
    An open transaction is still rolled back on release."""

    def get_reset_query(self) -> str:
        return ""

    def _get_reset_query(self) -> str:  # the name before asyncpg 0.30
        return ""


class PgLink:
    """One connection on one private loop: :meth:`call` runs a coroutine function with the
    connection, from any thread but the loop's, and returns its result.

    Opens its connection on creation (raising what :meth:`ConnectParams.connect` raises);
    opens a new one when the last was lost.
    """

    def __init__(self, params: ConnectParams, *, name: str = "kintsugi-postgres") -> None:
        self.params = params
        self._loop = LoopThread(name)
        self._conn: asyncpg.Connection | None = None
        # One call at a time: a connection runs one statement at a time, and a store used
        # from two threads (against its contract) then waits instead of failing inside
        # asyncpg with "another operation is in progress".
        self._busy = threading.Lock()
        try:
            self._loop.run(self._connection())
        except BaseException:
            self._loop.stop()
            raise

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self.params.connect()
        return self._conn

    def call(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        """``await fn(connection)`` on the loop; driver failures leave as typed errors."""

        async def run() -> T:
            conn = await self._connection()
            with pg_errors(f"{what} ({self.params.display})"):
                return await fn(conn)

        with self._busy:
            return self._loop.run(run())

    def close(self) -> None:
        """Close the connection and stop the loop; harmless twice."""
        with self._busy:
            if self._loop.alive:
                try:
                    self._loop.run(self._close())
                finally:
                    self._loop.stop()

    async def _close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            try:
                await asyncio.wait_for(self._conn.close(), CONNECT_TIMEOUT)
            except Exception:  # closing a broken connection: nothing left to save
                self._conn.terminate()
        self._conn = None
