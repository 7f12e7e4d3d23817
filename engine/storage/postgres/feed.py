"""The change log of a cluster: how nodes sharing one PostgreSQL database learn what the others
wrote (DESIGN §9).

Every transaction that changes CoValue rows also, as its last statements, takes the next
number of the one-row counter ``kintsugi_change_seq``, inserts one row per changed CoValue id
into ``kintsugi_changes (seq, covalue, origin)`` and calls ``pg_notify`` on :data:`CHANNEL`
with the number and the ids (never content), all committed or rolled back together. The
counter row stays locked until the transaction ends, so change numbers are taken in commit
order: a reader that sees number ``n`` sees every number below it too. The counter is bumped
last, after the rows the transaction decides on are locked, so its lock is held only for the
commit itself and is always the last lock taken (no deadlock through it).

A node keeps a cursor (the last number it caught up to) and, woken by a notification or every
:data:`POLL_INTERVAL` seconds, reads the changes after it, :data:`CATCH_UP_PAGE` at a time
(:class:`PostgresChangeFeed`). A notification is only a hint: a lost one (the listening
connection dropped, the server restarted) costs at most the poll interval, never data. Rows are
kept for the last :data:`CHANGES_KEEP` numbers; a node whose cursor fell behind that learns so
(:attr:`ChangePage.gap`) and refreshes everything it holds instead.

``origin`` names the store instance that wrote (:attr:`PostgresStore.origin`), so a node skips
its own changes. The tables are created, if missing, with the schema (under its lock) and are
not part of the schema version, like the node registry (:mod:`.registry`): they hold no store
data — dropping them loses a few wake-ups, nothing of any CoValue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping

import asyncpg

from engine.ids import CoValueID, SessionID
from engine.storage.interface import ChangePage, TailRequest, Tails
from engine.storage.postgres.connection import ConnectParams, LoopThread, pg_errors
from engine.storage.postgres.tails import read_tails

__all__ = [
    "CATCH_UP_PAGE",
    "CHANGES_KEEP",
    "CHANGES_TABLE",
    "CHANGE_LOG_SCHEMA",
    "CHANNEL",
    "COUNTER_TABLE",
    "LISTEN_APPLICATION_NAME",
    "LISTEN_RETRY",
    "MAX_NOTIFY_PAYLOAD",
    "POLL_INTERVAL",
    "READ_CONNECTIONS",
    "SLOT_CHANGE_PREFIX",
    "PostgresChangeFeed",
    "ensure_change_log",
    "notify_ids",
    "parse_slot_change",
    "record_changes",
    "slot_change",
]

logger = logging.getLogger(__name__)

#: The notification channel the writers notify and the nodes listen on.
CHANNEL = "kintsugi_changes"
#: The change rows, one per changed CoValue per committing transaction.
CHANGES_TABLE = "kintsugi_changes"
#: A change row names a CAS slot instead of a CoValue when it starts so (:func:`slot_change`).
SLOT_CHANGE_PREFIX = "kv:"
#: The one-row counter whose lock orders change numbers by commit.
COUNTER_TABLE = "kintsugi_change_seq"
#: Bytes of a notification payload at most (the server refuses 8,000 and more): the ids that do
#: not fit are left out (``"more": true``), the readers find them in the change rows.
MAX_NOTIFY_PAYLOAD = 7_000
#: Change rows a node reads per query while catching up.
CATCH_UP_PAGE = 1_000
#: Seconds between two catch-ups when no notification arrives: the most a lost notification
#: delays a node.
POLL_INTERVAL = 1.0
#: Change numbers kept: older rows are deleted by the writers (every :data:`PRUNE_EVERY`
#: numbers); a node whose cursor is older refreshes everything it holds.
CHANGES_KEEP = 100_000
#: Every this many change numbers the writer that takes it prunes old rows.
PRUNE_EVERY = 1_000
#: Connections a node's feed reads with at most (catching up, and the checks of content from
#: peers against the store, which run side by side for different peers).
READ_CONNECTIONS = 4
#: Seconds between attempts to listen again after the listening connection was lost.
LISTEN_RETRY = 0.5
#: ``application_name`` of the listening connection, so an operator (or a test) finds it in
#: ``pg_stat_activity``.
LISTEN_APPLICATION_NAME = "kintsugi-listen"

CHANGE_LOG_SCHEMA: tuple[str, ...] = (
    f"CREATE TABLE IF NOT EXISTS {COUNTER_TABLE} ("
    "one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "seq bigint NOT NULL)",
    f"INSERT INTO {COUNTER_TABLE} (one, seq) VALUES (true, 0) ON CONFLICT (one) DO NOTHING",
    f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} ("
    "seq bigint NOT NULL, "
    'covalue text COLLATE "C" NOT NULL, '
    "origin text NOT NULL, "
    "PRIMARY KEY (seq, covalue))",
)


async def ensure_change_log(conn: asyncpg.Connection, lock: int) -> None:
    """Create the change log's tables if missing, holding the advisory lock ``lock`` (the
    schema's), so nodes starting together create them once."""
    if await conn.fetchval("SELECT to_regclass($1)", CHANGES_TABLE) is not None:
        return
    await conn.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        async with conn.transaction():
            for statement in CHANGE_LOG_SCHEMA:
                await conn.execute(statement)
    finally:
        with contextlib.suppress(Exception):  # a lost connection released it already
            await conn.execute("SELECT pg_advisory_unlock($1)", lock)


def notify_ids(ids: list[str], origin: str) -> tuple[list[str], bool]:
    """The ids that fit one notification's payload (:data:`MAX_NOTIFY_PAYLOAD`), and whether
    some were left out (the readers find them in the change rows)."""
    kept: list[str] = []
    # the server's JSON spaces its keys a little more than Python's: a margin for that
    size = len(json.dumps({"seq": 2**63, "origin": origin, "ids": [], "more": True})) + 32
    for cid in ids:
        size += len(json.dumps(cid)) + 2
        if size > MAX_NOTIFY_PAYLOAD:
            return kept, True
        kept.append(cid)
    return kept, False


# The counter taken, the rows inserted and the notification sent, in one round trip; the
# payload is ``{"seq", "origin", "ids", "more"}`` (see notify_ids).
_RECORD = (
    f"WITH s AS (UPDATE {COUNTER_TABLE} SET seq = seq + 1 RETURNING seq), "
    f"i AS (INSERT INTO {CHANGES_TABLE} (seq, covalue, origin) SELECT s.seq, unnest($1::text[]), $2 FROM s) "
    "SELECT s.seq, pg_notify($3, json_build_object('seq', s.seq, 'origin', $2::text, 'ids', $4::text[], "
    "'more', $5::boolean)::text) FROM s"
)


async def record_changes(conn: asyncpg.Connection, covalues: Iterable[str], origin: str) -> int | None:
    """Record that this transaction changed ``covalues`` and notify the listeners; returns the
    change number (None when nothing changed). Call it last in the transaction (see the
    module docstring: the counter's lock is held until the end)."""
    ids = sorted(set(covalues))
    if not ids:
        return None
    kept, more = notify_ids(ids, origin)
    row = await conn.fetchrow(_RECORD, ids, origin, CHANNEL, kept, more)
    assert row is not None
    seq = int(row[0])
    if seq % PRUNE_EVERY == 0:
        await conn.execute(f"DELETE FROM {CHANGES_TABLE} WHERE seq <= $1", seq - CHANGES_KEEP)
    return seq


# The counter, the oldest row kept and the rows of one page, in one statement: one snapshot,
# one round trip (the counter row is NULL-joined when the page is empty).
_READ = (
    f"SELECT n.seq, (SELECT min(seq) FROM {CHANGES_TABLE}), c.seq, c.covalue, c.origin "
    f"FROM (SELECT coalesce((SELECT seq FROM {COUNTER_TABLE}), 0) AS seq) n "
    f"LEFT JOIN {CHANGES_TABLE} c ON c.seq > $1 AND c.seq <= least(n.seq, $1 + $2) "
    "ORDER BY c.seq, c.covalue"
)


async def read_changes(conn: asyncpg.Connection, cursor: int, origin: str, limit: int = CATCH_UP_PAGE) -> ChangePage:
    """The changes after ``cursor`` made by other origins than ``origin``, at most ``limit``
    change numbers' worth (see :class:`~engine.storage.interface.ChangePage`)."""
    rows = await conn.fetch(_READ, cursor, limit)
    newest = int(rows[0][0])
    oldest = rows[0][1]
    found = [(row[2], row[3], row[4]) for row in rows if row[2] is not None]
    # Pruned rows: numbers between the cursor and the oldest row kept may have been lost.
    first_kept = newest + 1 if oldest is None else int(oldest)
    gap = cursor < newest - CHANGES_KEEP and cursor + 1 < first_kept
    until = min(newest, cursor + limit)
    others = [str(c) for _s, c, o in found if o != origin]
    ids = sorted({CoValueID(c) for c in others if not c.startswith(SLOT_CHANGE_PREFIX)})
    slots = dict.fromkeys(parsed for c in others if (parsed := parse_slot_change(c)) is not None)
    return ChangePage(cursor=until, newest=newest, covalues=tuple(ids), gap=bool(gap), slots=tuple(slots))


def slot_change(namespace: str, key: str) -> str:
    """The change-log name of a CAS slot: :data:`SLOT_CHANGE_PREFIX` and ``[namespace, key]``
    as JSON (any namespace or key reads back whole; no CoValue id starts so)."""
    return SLOT_CHANGE_PREFIX + json.dumps([namespace, key], ensure_ascii=False)


def parse_slot_change(name: str) -> tuple[str, str] | None:
    """The ``(namespace, key)`` a change-log name of :func:`slot_change` names (None: not one)."""
    if not name.startswith(SLOT_CHANGE_PREFIX):
        return None
    try:
        namespace, key = json.loads(name[len(SLOT_CHANGE_PREFIX) :])
    except (ValueError, TypeError):
        return None
    return (namespace, key) if isinstance(namespace, str) and isinstance(key, str) else None


class PostgresChangeFeed:
    """One node's view of the change log: a connection that LISTENs on :data:`CHANNEL` and
    a pool of at most :data:`READ_CONNECTIONS` that read, on a private loop thread
    (:class:`LoopThread`).

    :meth:`start` listens; ``wake`` is then called (on the feed's thread: hand it over to your
    own loop) after each notification of another origin and after listening again once the
    listening connection was lost. :meth:`read` reads a page of changes after a cursor, and
    :meth:`read_tails` what the store holds of sessions beyond a node's memory
    (:mod:`.tails`); both return a future, so an asyncio caller awaits it with
    :func:`asyncio.wrap_future` while its own loop goes on.
    """

    def __init__(self, params: ConnectParams, origin: str) -> None:
        self._params = params
        self.origin = origin
        self._loop = LoopThread("kintsugi-postgres-feed")
        self._listener: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._wake: Callable[[tuple[str, ...] | None], None] | None = None
        self._closing = False
        self._relisten: asyncio.Task[None] | None = None
        #: times the listening connection was (re)established
        self.listens = 0

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (the listening connection is up)."""
        conn = self._listener
        return conn is not None and not conn.is_closed() and not self._closing

    @property
    def listener_pid(self) -> int | None:
        """The server process id of the listening connection (None while not listening)."""
        conn = self._listener
        return None if conn is None or conn.is_closed() else int(conn.get_server_pid())

    def start(self, wake: Callable[[tuple[str, ...] | None], None]) -> None:
        """Listen for notifications; raises the typed errors of connecting."""
        self._wake = wake
        self._loop.run(self._listen())

    def newest(self) -> int:
        """The newest change number in the database (a new node's cursor starts there)."""
        return self._loop.run(self._newest())

    def read(self, cursor: int) -> concurrent.futures.Future[ChangePage]:
        """A page of the changes after ``cursor`` by other origins (typed errors on failure)."""
        return asyncio.run_coroutine_threadsafe(self._read(cursor), self._loop.loop)

    def read_tails(
        self, requests: Mapping[CoValueID, TailRequest], *, exclude: SessionID
    ) -> concurrent.futures.Future[Tails]:
        """See :meth:`ChangeFeed.read_tails <engine.storage.interface.ChangeFeed.read_tails>`."""
        return asyncio.run_coroutine_threadsafe(self._read_tails(dict(requests), exclude), self._loop.loop)

    def close(self) -> None:
        """Stop listening and close both connections; harmless twice."""
        if self._closing:
            return
        self._closing = True
        if self._loop.alive:
            with contextlib.suppress(Exception):
                self._loop.run(self._close())
            self._loop.stop()

    # -- on the feed's loop ----------------------------------------------------------------

    async def _reading(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await self._params.pool(READ_CONNECTIONS)
        return self._pool

    async def _newest(self) -> int:
        pool = await self._reading()
        with pg_errors(f"read the change counter ({self._params.display})"):
            async with pool.acquire() as conn:
                return int(await conn.fetchval(f"SELECT seq FROM {COUNTER_TABLE}") or 0)

    async def _read(self, cursor: int) -> ChangePage:
        pool = await self._reading()
        with pg_errors(f"read changes ({self._params.display})"):
            async with pool.acquire() as conn:
                return await read_changes(conn, cursor, self.origin)

    async def _read_tails(self, requests: dict[CoValueID, TailRequest], exclude: SessionID) -> Tails:
        pool = await self._reading()
        with pg_errors(f"read sessions ({self._params.display})"):
            async with pool.acquire() as conn:
                return await read_tails(conn, requests, exclude)

    async def _listen(self) -> None:
        conn = await self._params.connect()
        with pg_errors(f"listen for changes ({self._params.display})"):
            await conn.execute(f"SET application_name = '{LISTEN_APPLICATION_NAME}'")
            await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(self._lost)
        self._listener = conn
        self.listens += 1

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        # The reader skips this store's own changes anyway: a notification of them is not
        # worth a read. The ids go with the wake-up (None when some were left out, or the
        # payload cannot be read: then the change log says).
        if self._wake is None or self._closing:
            return
        ids: tuple[str, ...] | None = None
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            decoded = json.loads(payload)
            if decoded.get("origin") == self.origin:
                return
            listed = decoded.get("ids")
            if not decoded.get("more") and isinstance(listed, list) and all(isinstance(i, str) for i in listed):
                ids = tuple(listed)
        self._wake(ids)

    def _lost(self, _conn: object) -> None:
        if self._closing or self._relisten is not None:
            return
        logger.warning("the change notification connection was lost; listening again (catching up meanwhile)")
        self._listener = None
        self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        try:
            while not self._closing:
                try:
                    await self._listen()
                except Exception as exc:
                    logger.warning("could not listen for changes (%s); retrying in %.1f s", exc, LISTEN_RETRY)
                    await asyncio.sleep(LISTEN_RETRY)
                    continue
                if self._wake is not None:
                    self._wake(None)  # whatever was notified meanwhile: catch up now
                return
        finally:
            self._relisten = None

    async def _close(self) -> None:
        if self._relisten is not None:
            self._relisten.cancel()
        conn = self._listener
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()
        if self._pool is not None:
            # Read-only connections: nothing to save, and a read cut off by the follower's
            # stop would hold a graceful close until the server answered it.
            self._pool.terminate()
        self._listener = self._pool = None
