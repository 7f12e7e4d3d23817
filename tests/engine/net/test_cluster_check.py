"""Content from a peer is judged against the database, however far the node's follower is
(engine/net/shell.py ``_check_against_store``, engine/net/follow.py ``current``).

Another node commits a longer history of BOB's session; then BOB sends the node his own
continuation, forked from it. Three moments, one outcome:

- ``behind``: the node's follower is not current (it never caught up): the shell reads the
  session from the database, off the loop, before judging BOB's content;
- ``caught_up``: the follower took the other node's commit in already: memory forks;
- ``at_once``: BOB sends right after the other commit, the follower current or about to be
  woken: whichever path runs (the read, memory, or the refused commit and catch-up).

Each way BOB is corrected to the database's history at once, is never told the node holds
his, and the database keeps the other node's history.
"""

from __future__ import annotations

import pytest

from engine.crypto import AccountKey
from engine.model.header import Header
from engine.net.follow import ClusterFollower
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.messages import Content, Correction, Known
from engine.storage.interface import ChangeLogStore, SessionWrite
from engine.storage.opener import open_store
from tests.engine.factories import BOB, comap_header, session
from tests.engine.net.conftest import RawPeer, run, until
from tests.engine.net.test_held_ack_race import OURS, SHARED, history

MOMENTS = ("behind", "caught_up", "at_once")


@pytest.mark.parametrize("moment", MOMENTS)
def test_content_forking_from_the_database_is_corrected_whatever_the_follower_knows(pg_url: str, moment: str) -> None:
    header: Header = comap_header(None, tag=f"checked-{moment}")
    doc, sid = header.covalue_id(), session(BOB)
    ours, theirs = history(header, "ours", OURS), history(header, "theirs", OURS + 1)

    async def scenario() -> None:
        store = open_store(pg_url)
        other = open_store(pg_url)
        assert isinstance(store, ChangeLogStore)
        node = LocalNode(AccountKey.generate(), store, background_commits=True)
        node.add_header(header)
        node.apply_content(doc, {sid: ours.chunk(0, SHARED)})
        await node.durable()
        shell = SyncShell(node)
        server = NodeServer(shell)
        follower = ClusterFollower(shell, store.change_feed())
        if moment == "behind":
            shell.follower = follower  # attached, never started: not current
        else:
            await follower.start()
            await until(lambda: follower.current, what="the follower is current")
        try:
            url = await server.start()
            async with RawPeer(url) as bob:
                await bob.authenticate(BOB)
                other.write([], [SessionWrite(theirs, SHARED, theirs.signed_count)])
                if moment == "caught_up":
                    await until(lambda: node.get(doc).sessions[sid].head() == theirs.head(), units=10)
                elif moment == "behind":
                    assert node.get(doc).sessions[sid].signed_count == SHARED  # memory is behind
                await bob.send(Content(doc, None, {sid: ours.chunk(SHARED)}))
                got = await bob.recv_until(lambda m: isinstance(m, Correction), units=10)
                correction = got[-1]
                assert isinstance(correction, Correction)
                assert (correction.sid, correction.head) == (sid, theirs.head())
                for known in (m for m in got if isinstance(m, Known) and m.id == doc):
                    assert known.known.sessions.get(sid) != ours.head(), "BOB's history was acknowledged"
                assert node.get(doc).sessions[sid].head() == theirs.head()
                await until(lambda: not shell.held and node.committed_seq == node.submitted_seq, units=10)
        finally:
            await server.close()
            if moment != "behind":
                await follower.stop()
            else:
                follower.feed.close()
            shell.close()
            await node.aclose()
            other.close()
        stored = open_store(pg_url)
        try:
            assert stored.load_session(doc, sid).head() == theirs.head()
        finally:
            stored.close()

    run(scenario, units=30)
