"""The change log of a cluster (engine/storage/postgres/feed.py) and a node following it
(engine/net/follow.py), on the throwaway PostgreSQL server: a commit is recorded and notified
(ids only) in its own transaction; a node catches up from its cursor whether or not the
notification arrives (its listening connection killed with ``pg_terminate_backend``); and
content that forks from what the database holds is a fork even when the node's memory is
behind."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable

import asyncpg

from engine.covalue import CoValueCore, OutcomeStatus
from engine.ids import CoValueID, new_session_id
from engine.model.header import UnsafeAllowAll, new_header
from engine.net.follow import ClusterFollower
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.storage import open_store
from engine.storage.interface import ChangeLogStore, SessionWrite
from engine.storage.postgres.feed import (
    CHANNEL,
    LISTEN_APPLICATION_NAME,
    MAX_NOTIFY_PAYLOAD,
    SLOT_CHANGE_PREFIX,
    record_changes,
)
from tests.engine._fork import key_from_seed
from tests.util import timeout

T0 = 1_700_000_000_000
ALICE = key_from_seed(21)
BOB = key_from_seed(22)


def test_a_commit_is_recorded_and_notified_with_ids_only(pg_url: str) -> None:
    writer, reader = open_store(pg_url, writer="a"), open_store(pg_url, writer="b")
    assert isinstance(writer, ChangeLogStore) and isinstance(reader, ChangeLogStore)
    feed = reader.change_feed()
    woken = threading.Event()
    payloads: list[str] = []

    async def listen() -> asyncpg.Connection:
        conn = await asyncpg.connect(pg_url.split("&options", maxsplit=1)[0])
        await conn.add_listener(CHANNEL, lambda *args: payloads.append(args[-1]))
        return conn

    loop = asyncio.new_event_loop()
    spy = loop.run_until_complete(listen())
    try:
        start = feed.newest()
        announced: list[tuple[str, ...] | None] = []

        def wake(ids: tuple[str, ...] | None) -> None:
            announced.append(ids)
            if ids is None or any(not c.startswith(SLOT_CHANGE_PREFIX) for c in ids):
                woken.set()  # (a CoValue's commit, not only the writer's lease slot)

        feed.start(wake)
        node = LocalNode(ALICE, writer)
        comap = node.create_map(None)
        node.set(comap.id, "k", "secret value")
        assert woken.wait(timeout(10)), "no notification after a commit"
        page = feed.read(start).result(timeout(10))
        # the wake-up names what was committed (the writer's lease slot aside)
        assert announced and all(ids is not None for ids in announced)
        assert {c for ids in announced for c in ids or () if not c.startswith(SLOT_CHANGE_PREFIX)} == {comap.id}
        assert page.covalues == (comap.id,) and page.cursor == page.newest > start and not page.gap
        # The writer's own feed leaves its own changes out.
        own = writer.change_feed()
        try:
            assert own.read(start).result(timeout(10)).covalues == ()
        finally:
            own.close()
        loop.run_until_complete(asyncio.sleep(0.05))  # deliver the spy's queued notifications
        assert payloads and all("secret" not in p for p in payloads)
        # (the writer's session lease, a CAS slot, is recorded too: under its own name)
        named = {c for p in payloads for c in json.loads(p)["ids"]}
        assert {c for c in named if not c.startswith(SLOT_CHANGE_PREFIX)} == {comap.id}
    finally:
        loop.run_until_complete(spy.close())
        loop.close()
        feed.close()
        reader.close()
        writer.close()


def test_a_notification_payload_never_exceeds_its_limit(pg_url: str) -> None:
    """The server builds the payload: ids that do not fit are left to the change rows."""
    store = open_store(pg_url)  # makes the change log's tables
    store.close()
    base, _, schema = pg_url.partition("&options=-csearch_path%3D")
    many = [f"co_z{i:040d}" for i in range(1000)]

    async def notified(ids: list[str]) -> dict[str, object]:
        got: asyncio.Queue[str] = asyncio.Queue()
        conn = await asyncpg.connect(base, server_settings={"search_path": schema})
        try:
            await conn.add_listener(CHANNEL, lambda *args: got.put_nowait(args[-1]))
            async with conn.transaction():
                seq = await record_changes(conn, ids, "node-a")
            payload = await asyncio.wait_for(got.get(), timeout(10))
            assert len(payload.encode()) <= MAX_NOTIFY_PAYLOAD
            decoded: dict[str, object] = json.loads(payload)
            assert decoded["seq"] == seq
            return decoded
        finally:
            await conn.close()

    cut = asyncio.run(notified(many))
    kept = cut["ids"]
    assert isinstance(kept, list) and cut["more"] is True and kept == many[: len(kept)] and len(kept) > 100
    assert asyncio.run(notified(many[:3])) | {"seq": 0} == {
        "seq": 0,
        "origin": "node-a",
        "ids": many[:3],
        "more": False,
    }


def run_async(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), timeout(60)))


async def wait_for(cond: Callable[[], bool], units: float, what: str) -> float:
    """Seconds until ``cond()``; fails after ``units``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():
        if loop.time() - start > timeout(units):
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return loop.time() - start


class Following:
    """Node B on its own store, following the change log, holding ``covalue`` in memory."""

    def __init__(self, pg_url: str, covalue: CoValueID, poll_interval: float) -> None:
        self.node = LocalNode(BOB, open_store(pg_url, writer="b"), background_commits=True)
        self.shell = SyncShell(self.node)
        store = self.node.store
        assert isinstance(store, ChangeLogStore)
        self.follower = ClusterFollower(self.shell, store.change_feed(), poll_interval=poll_interval)
        self.node.get(covalue)

    def keys(self, covalue: CoValueID) -> int:
        return len(self.node.get_map(covalue))

    async def close(self) -> None:
        await self.follower.stop()
        self.shell.close()
        await self.node.aclose()


def test_a_node_is_woken_by_a_notification(pg_url: str) -> None:
    """With polling practically off, only the notification can bring the write in."""
    alice = LocalNode(ALICE, open_store(pg_url, writer="a"))
    comap = alice.create_map(None)

    async def story() -> None:
        b = Following(pg_url, comap.id, poll_interval=3600)
        events: list[str] = []
        b.node.subscribe(lambda e: events.append(e.kind))
        try:
            await b.follower.start()
            for i in range(5):
                await asyncio.to_thread(alice.set, comap.id, f"k{i}", i)
                await wait_for(lambda i=i: b.keys(comap.id) == i + 1, 10, f"write {i} on node B")
            assert "remote" in events and b.follower.lag == 0
        finally:
            await b.close()

    try:
        run_async(story)
    finally:
        alice.close()


def test_a_lost_notification_only_delays(pg_url: str) -> None:
    """Node B's listening connection is killed by the server (pg_terminate_backend), then A
    writes: B catches up from its cursor at the next poll, and listens again."""
    alice = LocalNode(ALICE, open_store(pg_url, writer="a"))
    comap = alice.create_map(None)
    admin = open_store(pg_url, writer="admin")

    async def terminate_listener() -> int:
        async def kill(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = $1 AND pid = $2",
                    LISTEN_APPLICATION_NAME,
                    pid,
                )
            )

        pid = b.follower.feed.listener_pid  # type: ignore[attr-defined]
        return await asyncio.to_thread(admin._call, kill, "terminate")  # type: ignore[attr-defined]

    b = Following(pg_url, comap.id, poll_interval=0.3)

    async def story() -> None:
        try:
            await b.follower.start()
            assert await terminate_listener() == 1
            await asyncio.to_thread(alice.set, comap.id, "after", 1)
            await wait_for(lambda: b.keys(comap.id) == 1, 10, "the write on node B after its LISTEN was killed")
            await wait_for(lambda: b.follower.feed.listens >= 2, 10, "listening again")  # type: ignore[attr-defined]
            await asyncio.to_thread(alice.set, comap.id, "later", 2)
            await wait_for(lambda: b.keys(comap.id) == 2, 10, "the next write")
        finally:
            await b.close()

    try:
        run_async(story)
    finally:
        alice.close()
        admin.close()


def test_content_that_forks_from_the_database_is_a_fork_even_if_memory_is_behind(pg_url: str) -> None:
    """B loaded the CoValue when session S had 2 transactions; A then stored 2 more of S. A
    peer sends B another continuation of S from 2: judged against memory alone it would
    extend S; against the database it forks at 2, and B keeps the database's copy."""
    header = new_header("comap", UnsafeAllowAll(), created_at=T0)
    sid = new_session_id(ALICE.account_id)
    first = CoValueCore(header)
    for i in range(2):
        first.add_local(sid, [["set", f"k{i}", i]], T0 + i)
    first.sign_pending(ALICE)
    a_store = open_store(pg_url, writer="a")
    b = LocalNode(BOB, open_store(pg_url, writer="b"))
    try:
        a_store.write([header], [SessionWrite.pending_of(first.sessions[sid], 0)])
        core_b = b.get(header.covalue_id())
        assert core_b.sessions[sid].signed_count == 2
        stored_copy, forked = CoValueCore(header), CoValueCore(header)
        stored_copy.apply_content({sid: first.sessions[sid].chunk(0)})
        forked.apply_content({sid: first.sessions[sid].chunk(0)})
        for i in range(2, 4):
            stored_copy.add_local(sid, [["set", f"k{i}", "stored"]], T0 + i)
            forked.add_local(sid, [["set", f"k{i}", "forked"]], T0 + i)
        stored_copy.sign_pending(ALICE)
        forked.sign_pending(ALICE)
        a_store.write([], [SessionWrite.pending_of(stored_copy.sessions[sid], 2)])
        report = b.apply_content(header.covalue_id(), {sid: forked.sessions[sid].chunk(2)})
        (outcome,) = report.outcomes
        assert outcome.status is OutcomeStatus.FORK and outcome.fork_index == 2
        assert b.get(header.covalue_id()).sessions[sid].head() == stored_copy.sessions[sid].head()
        assert b.get_map(header.covalue_id())["k3"] == "stored"
    finally:
        b.close()
        a_store.close()
