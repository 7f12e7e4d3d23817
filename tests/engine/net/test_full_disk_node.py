"""A serving node whose disk fills (issue 12, point 5), over real loopback WebSockets and a
real SQLite store: SQLite's ``PRAGMA max_page_count`` on the writer thread's connection makes
every commit fail with SQLITE_FULL, as on a full filesystem.

What must hold: the writer whose acknowledgement waits for the failed commit is told
(``error{storage_unavailable, id}``, once), a further write is refused with that error and not
applied, a reader is served all along, and once space returns the held acknowledgement leaves
and writes are taken again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.crypto import AccountKey, chain_extend, signed_message
from engine.errors import StorageUnavailable
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.messages import Content, Error, Known, Load
from engine.storage.interface import StoreWriter
from engine.storage.sqlite.queue import AsyncStore
from tests.engine.factories import BOB, T0, session, tx
from tests.engine.net.conftest import RawPeer, run, until
from tests.engine.net.test_no_oracles import WORLD, holding


def fill(conn: sqlite3.Connection) -> None:
    """Cap the file at the pages it has now: the next write that needs a page fails."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")


def free(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA max_page_count = 1073741823")


async def make_room(writer: StoreWriter) -> None:
    """Lift the cap. Its operation may share a commit group with a retried write queued
    before it, which fails the whole group while the cap holds: submit it until it runs."""
    assert isinstance(writer, AsyncStore)
    for _ in range(100):
        try:
            await writer.submit(free)
            return
        except StorageUnavailable:
            continue
    raise AssertionError("the cap could not be lifted")


class Bob:
    """BOB's session of E as he extends it: each call signs his next edits (values big
    enough that storing them needs new pages)."""

    def __init__(self) -> None:
        log = WORLD.alive.sessions[session(BOB)]
        self.count, self.head = log.count, log.hash_at(log.count)

    def edits(self, count: int) -> Content:
        doc, sid = WORLD.alive.id, session(BOB)
        txs = [tx(T0 + 300 + self.count + i, ["set", f"big{self.count + i}", "x" * 3000]) for i in range(count)]
        head = chain_extend(self.head, txs)[-1]
        end = self.count + count
        chunk = Chunk(self.count, txs, {end: BOB.sign(signed_message(doc, sid, end, head))})
        self.count, self.head = end, head
        return Content(doc, None, {sid: chunk})

    @staticmethod
    def after(other: Bob) -> Bob:
        """A copy of ``other`` as it is now (its edits may be refused: ``other`` stays put)."""
        copy = Bob()
        copy.count, copy.head = other.count, other.head
        return copy


def test_writers_are_told_readers_are_served_and_writes_resume(tmp_path: Path) -> None:
    doc = WORLD.alive.id

    async def scenario() -> None:
        node = LocalNode.open(tmp_path / "node", AccountKey.generate(), background_commits=True)
        holding(node, WORLD.group, WORLD.alive)
        await node.durable()
        shell = SyncShell(node)
        server = NodeServer(shell)
        writer = node._commits._writer
        assert isinstance(writer, AsyncStore)
        try:
            url = await server.start()
            async with RawPeer(url) as bob, RawPeer(url) as reader:
                await bob.authenticate(BOB)
                await reader.authenticate(BOB)
                writes = Bob()
                assert node.get(doc).sessions[session(BOB)].count == writes.count
                await writer.submit(fill)

                # the write that meets the full disk: applied in memory, its `known` held,
                # and its writer told why
                await bob.send(writes.edits(8))
                replies = await bob.recv_until(lambda m: isinstance(m, Error | Known))
                assert [(m.code, m.id) for m in replies if isinstance(m, Error)] == [("storage_unavailable", doc)]
                assert not [m for m in replies if isinstance(m, Known)]
                assert node.storage_unavailable is not None

                # a further write is refused at once and not applied
                count = node.get(doc).sessions[session(BOB)].count
                assert count == writes.count
                await bob.send(Bob.after(writes).edits(2))
                refused = await bob.recv_until(lambda m: isinstance(m, Error))
                assert [(m.code, m.id) for m in refused if isinstance(m, Error)] == [("storage_unavailable", doc)]
                assert node.get(doc).sessions[session(BOB)].count == count

                # a reader is served meanwhile: the content it lacks arrives (the node's
                # `known`, which would claim what is not on disk yet, waits like every other)
                await reader.send(Load(doc, KnownState(doc, False, {})))
                answer = await reader.recv_until(lambda m: isinstance(m, Content))
                assert not [m for m in answer if isinstance(m, Error)]
                served = [m for m in answer if isinstance(m, Content)][-1]
                assert served.new[session(BOB)].end == count

                # space returns: the retry commits, the held acknowledgement leaves
                await make_room(writer)
                acked = await bob.recv_until(lambda m: isinstance(m, Known), units=10)
                known = [m for m in acked if isinstance(m, Known)][-1]
                assert known.known.sessions[session(BOB)][0] == count
                await until(lambda: node.storage_unavailable is None, what="the store takes writes again")
                await bob.send(writes.edits(2))
                # (the node may first tell bob what it holds, for the write it refused)
                again = await bob.recv_until(
                    lambda m: isinstance(m, Known) and m.known.sessions[session(BOB)][0] == count + 2
                )
                assert not [m for m in again if isinstance(m, Error)]
                assert node.get(doc).sessions[session(BOB)].count == count + 2
        finally:
            await server.close()
            shell.close()
            await node.aclose()

    run(scenario, units=30)
