"""A held acknowledgement never confirms a history the node lost (the cluster commit race).

Two nodes sharing one store commit forked histories of one session within milliseconds: the
second commit is refused (the store holds another history), the batch is retried, and when the
node catches up with the store its memory takes the store's copy. The ``known`` that answered
the refused content was computed before all that and waits in the shell for the commit; once
a commit goes through it must not leave as it was, confirming the history the store refused.
The writer must learn what the node holds instead, and be corrected.

Played out deterministically on one serving node over real loopback WebSockets, with the
other node's commit made through a store object of its own at the worst moment:

- on PostgreSQL (a cluster's store), right after this node read the session's stored head to
  check the peer's content against it, and before its own commit;
- on SQLite (which no other node writes, so nothing is checked), before the content arrives.

The catch-up (what :class:`~engine.net.follow.ClusterFollower` does when the change log names
the CoValue) runs right after the refused commit, from a commit listener.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.messages import Content, Correction, Known, Message
from engine.storage.interface import ChangeFeed, SessionWrite, Store, TailRequest, Tails
from engine.storage.opener import open_store
from tests.engine.factories import BOB, T0, comap_header, session, signed_log, tx
from tests.engine.net.conftest import RawPeer, run, until

#: Transactions of BOB's session that every copy shares (stored before the race).
SHARED = 2
#: The writer's history adds 2 transactions; the other node's adds ``OTHER[case]``.
OURS = 2
OTHER = {"longer": 3, "shorter": 1}


def history(header: Header, tag: str, extra: int) -> SessionLog:
    """BOB's session of the CoMap: the shared prefix, then ``extra`` transactions of ``tag``."""
    txs = [tx(T0 + i, ["set", "shared", i]) for i in range(SHARED)]
    txs += [tx(T0 + SHARED + i, ["set", tag, i]) for i in range(extra)]
    return signed_log(header.covalue_id(), BOB, txs, [SHARED])


class RacingStore:
    """The node's store, except that once :attr:`race` is set, the next time the node reads
    the stored heads of its session the other node commits it right after, through ``other``."""

    def __init__(self, inner: Store, other: Store) -> None:
        self.inner = inner
        self.other = other
        self.race: SessionWrite | None = None

    def read_tails(self, requests: Mapping[CoValueID, TailRequest], *, exclude: SessionID) -> Tails:
        tails: Tails = self.inner.read_tails(requests, exclude=exclude)  # type: ignore[attr-defined]
        if self.race is not None and any(self.race.log.session in r.held for r in requests.values()):
            self.other.write([], [self.race])
            self.race = None
        return tails

    def change_feed(self) -> ChangeFeed:
        return self.inner.change_feed()  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self.other.close()
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def knowns(messages: list[Message]) -> list[Known]:
    return [m for m in messages if isinstance(m, Known)]


@pytest.mark.parametrize("case", sorted(OTHER))
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_held_known_never_confirms_the_history_the_store_refused(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, case: str
) -> None:
    header = comap_header(None, tag="raced")
    doc, sid = header.covalue_id(), session(BOB)
    ours, theirs = history(header, "ours", OURS), history(header, "theirs", OTHER[case])
    assert ours.hash_at(SHARED) == theirs.hash_at(SHARED)
    location = request.getfixturevalue("pg_url") if backend == "postgres" else str(tmp_path / "node")
    race = SessionWrite(theirs, SHARED, theirs.signed_count)

    async def scenario() -> None:
        if backend == "postgres":
            store: Any = RacingStore(open_store(location), open_store(location))
        else:
            store = open_store(location)
        node = LocalNode(AccountKey.generate(), store, background_commits=True)
        node.add_header(header)
        node.apply_content(doc, {sid: ours.chunk(0, SHARED)})
        await node.durable()
        assert node.committed_seq == node.submitted_seq
        shell = SyncShell(node)
        server = NodeServer(shell)
        caught_up: list[bool] = []

        def catch_up_after_a_refused_commit() -> None:
            # What the cluster follower does when the store's change log names the CoValue.
            if node.commit_failures and not caught_up:
                caught_up.append(node.absorb_stored(doc))
                shell.schedule_dispatch()

        node.on_commit(catch_up_after_a_refused_commit)
        try:
            url = await server.start()
            async with RawPeer(url) as bob:
                await bob.authenticate(BOB)
                if backend == "sqlite":
                    # the other node wins: its history is stored before ours is committed
                    store.write([], [race])
                else:
                    # ... stored right after this node checked bob's content against the store
                    store.race = race
                assert node.get(doc).sessions[sid].signed_count == SHARED  # memory is behind

                await bob.send(Content(doc, None, {sid: ours.chunk(SHARED)}))
                got = await bob.recv_until(lambda m: isinstance(m, Known) and m.id == doc, units=10)
                assert caught_up == [True], "the commit of bob's content was not refused"
                assert backend == "sqlite" or store.race is None, "the other node never committed"
                assert node.get(doc).sessions[sid].head() == theirs.head()

                # what bob is told confirms what the node holds, never his refused history
                for known in knowns(got):
                    assert known.known.sessions.get(sid) != ours.head(), "the refused history was acknowledged"
                    assert known.known.sessions.get(sid) == theirs.head()
                corrections = [m for m in got if isinstance(m, Correction)]
                if theirs.signed_count >= ours.signed_count:
                    # the node can see bob's head is not on its chain: it corrects him at once
                    assert [(c.sid, c.head) for c in corrections] == [(sid, theirs.head())]
                else:
                    # bob is ahead of the node's chain: he sees the fork from the node's known
                    # and, as a replica does towards its node, sends his whole session...
                    assert not corrections
                    await bob.send(Content(doc, None, {sid: ours.chunk(0)}))
                    answer = await bob.recv_until(lambda m: isinstance(m, Correction), units=10)
                    # ...and is corrected to the history the store holds
                    correction = answer[-1]
                    assert isinstance(correction, Correction)
                    assert (correction.sid, correction.head) == (sid, theirs.head())
                    assert all(k.known.sessions.get(sid) != ours.head() for k in knowns(answer))

                # nothing else is owed to bob: no acknowledgement is left waiting
                await until(lambda: not shell.held and node.committed_seq == node.submitted_seq)
        finally:
            await server.close()
            shell.close()
            await node.aclose()
        stored = LocalNode.open(location, AccountKey.generate())
        try:
            assert stored.get(doc).sessions[sid].head() == theirs.head()
        finally:
            stored.close()

    run(scenario, units=30)
