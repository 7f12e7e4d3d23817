"""Background commits: a LocalNode opened with ``background_commits=True`` commits its batches
on a writer thread, so the asyncio loop it shares keeps running while SQLite syncs.

The store is made slow for real: another connection holds SQLite's write lock, so the
writer thread waits exactly as it would behind a slow disk or another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ids import CoValueID, SessionID
from engine.node.facade import ChangeEvent, LocalNode
from engine.node.loading import load_core
from engine.storage.sqlite import connection as sqlite_connection
from engine.storage.sqlite.store import SQLiteStore, store_file
from tests.engine._fork import expected_keys, key_from_seed, make_fork, write_keys
from tests.util import UNIT

KEY = key_from_seed(30)


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Hold the store's write lock (BEGIN IMMEDIATE) from another connection."""
    conn = sqlite3.connect(store_file(path), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def stored_map(path: Path, covalue: CoValueID) -> dict[str, object] | None:
    """The CoValue's content as a fresh read-only handle sees it (committed data only)."""
    peek = SQLiteStore(path, readonly=True)
    try:
        core = load_core(peek, covalue)
        return None if core is None else core.comap().items()
    finally:
        peek.close()


async def wait_for(condition: object, what: str, units: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + units * UNIT
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def test_the_loop_runs_while_a_commit_waits_and_subscribers_hear_after_it(tmp_path: Path) -> None:
    async def story() -> None:
        node = LocalNode.open(tmp_path, KEY, background_commits=True)
        doc = node.create_map(None)  # readable without its group, as stored_map reads it
        await node.durable()
        events: list[ChangeEvent] = []
        node.subscribe(events.append, doc.id)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.get_running_loop().create_task(ticker())
        with write_lock(tmp_path):
            node.set(doc.id, "title", "buy milk")
            await wait_for(lambda: node.submitted_seq > node.committed_seq, "the batch to be handed over")
            before = ticks
            await wait_for(lambda: ticks > before + 20, "the loop to keep running while the commit waits")
            assert node.commits_in_flight == 1
            assert events == [], "nobody hears of a change before it is on disk"
            assert stored_map(tmp_path, doc.id) == {}
            assert node.get_map(doc.id) == {"title": "buy milk"}, "memory has it at once"
        await asyncio.wait_for(node.durable(), 10 * UNIT)
        assert events == [ChangeEvent(doc.id, "local")]
        assert stored_map(tmp_path, doc.id) == {"title": "buy milk"}
        task.cancel()
        await node.aclose()

    asyncio.run(story())


def test_a_failed_commit_is_retried_and_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer gives up on a lock held past the busy timeout; the batch is retried."""
    monkeypatch.setattr(sqlite_connection, "BUSY_TIMEOUT_MS", int(100 * UNIT))

    async def story() -> None:
        node = LocalNode.open(tmp_path, KEY, background_commits=True)
        doc = node.create_map(None)  # readable without its group, as stored_map reads it
        await node.durable()
        events: list[ChangeEvent] = []
        node.subscribe(events.append, doc.id)
        durable = node.committed_seq
        with write_lock(tmp_path):
            write_keys(node, doc.id, "k", 50)
            await wait_for(lambda: node.commit_failures >= 1, "the commit to fail")
            assert events == []
            assert node.committed_seq == durable, "a failed batch is not on disk: nothing may acknowledge it"
            write_keys(node, doc.id, "k", 50, start=50)  # later batches queue behind the failure
        await wait_for(
            lambda: stored_map(tmp_path, doc.id) == expected_keys("k", 100), "the retried batches to commit", 20
        )
        await wait_for(lambda: node.committed_seq == node.submitted_seq, "the retry to make everything durable")
        assert events and all(e == ChangeEvent(doc.id, "local") for e in events)
        await node.aclose()
        reopened = LocalNode.open(tmp_path, KEY)
        try:
            assert reopened.get_map(doc.id) == expected_keys("k", 100)
            assert not reopened.get(doc.id).corrupt
        finally:
            reopened.close()

    asyncio.run(story())


def test_close_without_a_loop_commits_what_is_queued(tmp_path: Path) -> None:
    async def write() -> LocalNode:
        node = LocalNode.open(tmp_path, KEY, background_commits=True)
        doc = node.create_map(None)
        write_keys(node, doc.id, "k", 30)
        node.flush()
        node.doc = doc.id  # type: ignore[attr-defined]
        return node

    node = asyncio.run(write())  # the loop ends with the batch possibly still queued
    doc: CoValueID = node.doc  # type: ignore[attr-defined]
    node.close()
    assert stored_map(tmp_path, doc) == expected_keys("k", 30)


@pytest.mark.parametrize("seed", range(6))
def test_replaces_and_tombstones_commit_after_the_appends_queued_before_them(tmp_path: Path, seed: int) -> None:
    """Seeded mixes of writes, forks repaired by replace, and deletes, with the store slowed
    by a held lock at random moments: what a reopened store holds equals what memory held."""
    print(f"seed {seed}")
    rng = random.Random(seed)

    async def story() -> dict[CoValueID, dict[SessionID, int]]:
        node = LocalNode.open(tmp_path, KEY, background_commits=True)
        group = node.create_group()
        docs = [node.create_map(group.id).id for _ in range(3)]
        for step in range(25):
            action = rng.choice(["write", "write", "write", "fork", "delete", "pause"])
            cid = rng.choice(docs)
            core = node.get(cid)
            if core.deleted:
                continue
            if action == "write":
                write_keys(node, cid, f"s{step}", rng.randint(1, 30))
            elif action == "fork":
                fork = make_fork(node, cid, common=rng.randint(1, 5), mine=rng.randint(1, 5), theirs=rng.randint(1, 5))
                node.replace_session(cid, fork.session, fork.authoritative())
            elif action == "delete" and rng.random() < 0.3:
                node.delete_covalue(cid)
            elif action == "pause":
                with write_lock(tmp_path):
                    write_keys(node, cid, f"p{step}", 5)
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0)
        await node.durable()
        assert node.commit_failures == 0, "no queued commit ran into a replace or a tombstone"
        expected = {cid: {sid: log.signed_count for sid, log in node.get(cid).sessions.items()} for cid in docs}
        await node.aclose()
        return expected

    expected = asyncio.run(story())
    reopened = LocalNode.open(tmp_path, KEY)
    try:
        for cid, sessions in expected.items():
            core = reopened.get(cid)
            assert not core.corrupt, (seed, cid, core.corrupt)
            assert {sid: log.signed_count for sid, log in core.sessions.items()} == sessions, seed
    finally:
        reopened.close()
