"""The quota of transactions invalid on arrival (issue 12, point 4), over real loopback
WebSockets.

EVE has no role in the group that owns E, yet knows E's id. What she signs verifies, so the
node keeps it (out of content, flagged invalid: a role change that makes it valid may arrive
later), but only up to the node's quota per sending account; past it her chunks get
``error{invalid_quota_exceeded}`` and nothing of them is stored. A writer of the group is
not counted, and neither is a second stranger's quota touched by EVE's.
"""

from __future__ import annotations

from engine.crypto import AccountKey
from engine.errors import InvalidQuotaExceeded
from engine.model.known_state import KnownState
from engine.protocol.limits import MAX_INVALID_TRANSACTIONS_PER_ACCOUNT
from engine.protocol.messages import Content, Error, Known, Load
from engine.sync.strangers import InvalidQuota
from tests.engine.factories import BOB, T0, account, forged, session, signed_log, tx
from tests.engine.net.conftest import RawPeer, run, serving
from tests.engine.net.test_no_oracles import WORLD, holding

EVE, MALLORY = account(9), account(10)
QUOTA = 5


def edits(key: AccountKey, start: int, count: int, n: int = 0) -> Content:
    """``count`` signed edits of ``key``'s session ``n`` in E after ``start``, with E's header
    (a peer that may not read E is answered as if the node lacked it, so it sends that)."""
    doc = WORLD.alive
    txs = [tx(T0 + 100 + i, ["set", f"k{i}", i]) for i in range(start + count)]
    log = signed_log(doc.id, key, txs, [start] if start else [], sid=session(key, n))
    return Content(doc.id, doc.header, {log.session: log.chunk(start)})


def test_default_quota_is_named() -> None:
    assert MAX_INVALID_TRANSACTIONS_PER_ACCOUNT == 10_000
    assert InvalidQuota().limit == MAX_INVALID_TRANSACTIONS_PER_ACCOUNT
    assert InvalidQuotaExceeded().code == "invalid_quota_exceeded"


def test_strangers_writes_are_kept_up_to_the_quota() -> None:
    doc = WORLD.alive.id

    async def scenario() -> None:
        async with serving() as served:
            holding(served.node, WORLD.group, WORLD.alive)
            served.shell.manager.invalid_quota = InvalidQuota(QUOTA)
            async with RawPeer(served.url) as eve:
                await eve.authenticate(EVE)
                await eve.send(edits(EVE, 0, 3))
                replies = await eve.recv_until(lambda m: isinstance(m, Known))
                assert not [m for m in replies if isinstance(m, Error)]
                assert served.node.get(doc).sessions[session(EVE)].count == 3  # kept, flagged invalid
                invalid = served.node.get(doc).invalid_transactions()
                assert sorted(i.index for i in invalid if i.session == session(EVE)) == [0, 1, 2]
                # 3 more would make 6 > 5: refused whole, nothing stored
                await eve.send(edits(EVE, 3, 3))
                replies = await eve.recv_until(lambda m: isinstance(m, Known))
                errors = [m for m in replies if isinstance(m, Error)]
                assert [e.code for e in errors] == ["invalid_quota_exceeded"]
                assert errors[0].id == doc
                assert served.node.get(doc).sessions[session(EVE)].count == 3
                # a new session does not reset it, the same account is counted
                await eve.send(edits(EVE, 0, 3, n=1))
                replies = await eve.recv_until(lambda m: isinstance(m, Known))
                assert [m.code for m in replies if isinstance(m, Error)] == ["invalid_quota_exceeded"]
                assert session(EVE, 1) not in served.node.get(doc).sessions
            async with RawPeer(served.url) as mallory:
                await mallory.authenticate(MALLORY)
                await mallory.send(edits(MALLORY, 0, 2))
                replies = await mallory.recv_until(lambda m: isinstance(m, Known))
                assert not [m for m in replies if isinstance(m, Error)]
            async with RawPeer(served.url) as bob:
                await bob.authenticate(BOB)
                held = served.node.get(doc).sessions[session(BOB)].count
                more = [tx(T0 + 200 + i, ["set", f"b{i}", i]) for i in range(QUOTA + 3)]
                chunk = forged(WORLD.alive, session(BOB), more, BOB, after=held)
                await bob.send(Content(doc, None, {session(BOB): chunk}))
                replies = await bob.recv_until(lambda m: isinstance(m, Known))
                assert not [m for m in replies if isinstance(m, Error)]
                await bob.send(Load(doc, KnownState(doc, False, {})))
                await bob.recv_until(lambda m: isinstance(m, Known) and m.id == doc)
                assert served.node.get(doc).sessions[session(BOB)].count == held + QUOTA + 3
            assert served.shell.manager.invalid_quota.used[EVE.account_id] == 3
            assert served.shell.manager.invalid_quota.used[BOB.account_id] == 0

    run(scenario)
