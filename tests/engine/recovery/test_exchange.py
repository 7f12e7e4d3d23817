"""engine.recovery.exchange: the REPLACE exchange, both sides, with no event loop (DESIGN §7.2).

The four review bugs of the design we learn from are named tests here:
(1) the members-only gate is consulted; (2) the exchange keeps its own cursor namespace;
(3) a retry never reuses a half-served snapshot; (4) REPLACE clears what it replaces (see
the node's apply tests for the rebuild of derived state).
"""

from __future__ import annotations

import os

import pytest

from engine.covalue import CoValueCore
from engine.errors import RecoveryAborted, RecoveryError
from engine.ids import AccountID, CoValueID
from engine.model.session_log import Chunk
from engine.protocol.messages import Error, decode_message
from engine.protocol.messages.recovery import RecoverNext, RecoverOpen, RecoverPage, RecoveryScope
from engine.recovery.exchange import RecoveryFetch, RecoveryResponder, owned_ids
from tests.engine.factories import T0, account, make_comap, make_group, set_role, wire, write

ALICE, BOB, EVE, ADMIN = account(1), account(2), account(3), account(4)
NOW = T0 + 10_000


class Host:
    """A replica in memory: what the responder reads."""

    def __init__(self, *cores: CoValueCore) -> None:
        self.cores = {c.id: c for c in cores}
        wire(*cores)

    def get_or_none(self, covalue: CoValueID) -> CoValueCore | None:
        return self.cores.get(covalue)

    def can_read(self, account: AccountID, covalue: CoValueID) -> bool:
        core = self.cores[covalue]
        group = core.owner_group() if core.type != "group" else core
        return group is not None and group.group().roles.get(account) in ("admin", "writer", "reader")

    def covalues_owned_by(self, group: CoValueID) -> list[CoValueID]:
        return owned_ids(self.cores.values(), group)


def world(n: int = 50) -> tuple[Host, CoValueCore, CoValueCore]:
    group = make_group(ALICE)
    set_role(group, ALICE, BOB.account_id, "writer", made_at=T0)
    doc = make_comap(group)
    wire(group, doc)
    write(doc, BOB, n, made_at=T0 + 1, batch=10)
    return Host(group, doc), group, doc


def xid() -> bytes:
    return os.urandom(16)


def run(responder: RecoveryResponder, fetch: RecoveryFetch, who=BOB, admin=False, peer="p1"):
    """Drive one exchange to its end through encoded messages, like the wire would."""
    answer = responder.open(peer, who.account_id, admin, _wire(fetch.open_message()), NOW)
    while True:
        request = fetch.receive(_wire(answer))
        if request is None:
            return fetch.result()
        answer = responder.next(peer, _wire(request), NOW)


def _wire(message):
    from engine import codec

    return decode_message(codec.decode(codec.encode(message.to_obj())))  # every field validated again


def scope_of(*ids: CoValueID) -> RecoveryScope:
    return RecoveryScope(covalues=ids)


def test_a_member_fetches_the_whole_covalue_over_many_small_pages() -> None:
    host, _group, doc = world(200)
    responder = RecoveryResponder(host, page_budget=2_000)
    fetch = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid())
    (got,) = run(responder, fetch)
    assert fetch.pages > 5
    assert got.header == doc.header
    assert {s: log.head() for s, log in got.sessions.items()} == {s: log.head() for s, log in doc.sessions.items()}


def test_a_group_scope_brings_the_group_and_what_it_owns() -> None:
    host, group, doc = world(5)
    got = run(
        RecoveryResponder(host, page_budget=1 << 20), RecoveryFetch(RecoveryScope(group=group.id), rid=1, xid=xid())
    )
    assert [g.id for g in got] == [group.id, doc.id]


def test_review_bug_1_a_non_member_gets_exactly_the_answer_for_an_unknown_id() -> None:
    host, _group, doc = world(5)
    unknown = make_comap(make_group(EVE), tag="elsewhere").id
    responder = RecoveryResponder(host, page_budget=1 << 20)
    fixed = bytes(16)
    a = responder.open("p1", EVE.account_id, False, RecoverOpen(7, fixed, scope_of(doc.id)), NOW)
    responder._seen.clear()  # the same xid twice only to compare the bytes of the answers
    b = responder.open("p2", EVE.account_id, False, RecoverOpen(7, fixed, scope_of(unknown)), NOW)
    from engine import codec

    strip = lambda m: codec.encode({**m.to_obj(), "items": [{**i, "id": ""} for i in m.to_obj()["items"]]})  # noqa: E731
    assert isinstance(a, RecoverPage) and isinstance(b, RecoverPage)
    assert strip(a) == strip(b)
    assert a.items[0].header is None and a.items[0].sessions == {}


def test_admins_are_served_without_membership() -> None:
    host, _group, doc = world(5)
    (got,) = run(
        RecoveryResponder(host, page_budget=1 << 20),
        RecoveryFetch(scope_of(doc.id), rid=1, xid=xid()),
        who=ADMIN,
        admin=True,
    )
    assert got.header is not None


def test_review_bug_2_the_exchange_cursor_lives_in_its_own_namespace() -> None:
    """Nothing of the exchange is kept in, or read from, the incremental sync state: the
    responder holds its cursor by (peer, xid), and two exchanges of one peer do not share it."""
    host, _group, doc = world(100)
    responder = RecoveryResponder(host, page_budget=1_500)
    one, two = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid()), RecoveryFetch(scope_of(doc.id), rid=2, xid=xid())
    first_one = responder.open("p1", BOB.account_id, False, one.open_message(), NOW)
    first_two = responder.open("p1", BOB.account_id, False, two.open_message(), NOW)
    assert isinstance(first_one, RecoverPage) and isinstance(first_two, RecoverPage)
    assert first_one.items == first_two.items  # both start at the beginning
    assert responder.open_count("p1") == 2


def test_review_bug_3_a_retry_after_a_partial_fetch_gets_a_fresh_snapshot() -> None:
    host, _group, doc = world(100)
    responder = RecoveryResponder(host, page_budget=1_500)
    first = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid())
    page = responder.open("p1", BOB.account_id, False, first.open_message(), NOW)
    first.receive(page)  # ... and then the connection dies
    responder.drop_peer("p1")
    write(doc, BOB, 20, made_at=T0 + 500, batch=10)  # the peer's copy moves on meanwhile
    # the same xid is refused, so a half-served snapshot can never be resumed
    again = responder.open("p1", BOB.account_id, False, first.open_message(), NOW)
    assert isinstance(again, Error) and again.code == "exchange_reused"
    retry = RecoveryFetch(scope_of(doc.id), rid=2, xid=xid())
    (got,) = run(responder, retry)
    assert got.sessions[next(iter(doc.sessions))].count == 120  # the fresh state, not the old one


def test_a_session_that_changes_under_an_exchange_ends_it() -> None:
    host, _group, doc = world(100)
    responder = RecoveryResponder(host, page_budget=1_500)
    fetch = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid())
    fetch.receive(responder.open("p1", BOB.account_id, False, fetch.open_message(), NOW))
    sid = next(iter(doc.sessions))
    doc.sessions[sid].txs[5] = b"changed"  # stands for a replace or a purge
    doc.sessions[sid].hashes[-1] = b"\0" * 32
    answer = responder.next("p1", RecoverNext(fetch.xid, 1), NOW)
    assert isinstance(answer, Error) and answer.code == "snapshot_changed"
    with pytest.raises(RecoveryAborted):
        fetch.receive(answer)


def test_exchanges_expire_and_pages_come_in_order() -> None:
    host, _group, doc = world(100)
    responder = RecoveryResponder(host, page_budget=1_500, timeout_ms=1_000)
    fetch = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid())
    fetch.receive(responder.open("p1", BOB.account_id, False, fetch.open_message(), NOW))
    skipped = responder.next("p1", RecoverNext(fetch.xid, 2), NOW)
    assert isinstance(skipped, Error) and skipped.code == "unknown_exchange"
    other = RecoveryFetch(scope_of(doc.id), rid=2, xid=xid())
    other.receive(responder.open("p1", BOB.account_id, False, other.open_message(), NOW))
    late = responder.next("p1", RecoverNext(other.xid, 1), NOW + 5_000)
    assert isinstance(late, Error) and late.code == "unknown_exchange"


def test_nothing_is_handed_out_before_the_last_page_or_when_a_piece_does_not_verify() -> None:
    host, _group, doc = world(100)
    responder = RecoveryResponder(host, page_budget=1_500)
    fetch = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid())
    fetch.receive(responder.open("p1", BOB.account_id, False, fetch.open_message(), NOW))
    with pytest.raises(RecoveryAborted):
        fetch.result()
    # a page whose transactions were changed on the way never verifies
    forged = RecoveryFetch(scope_of(doc.id), rid=1, xid=xid())
    page = responder.open("p2", BOB.account_id, False, forged.open_message(), NOW)
    assert isinstance(page, RecoverPage)
    item = page.items[0]
    sid, chunk = next(iter(item.sessions.items()))
    bad = type(item)(item.id, item.header, item.deleted, {sid: Chunk(chunk.after, [b"x", *chunk.txs[1:]], chunk.sigs)})
    nxt = forged.receive(RecoverPage(page.rid, page.xid, page.page, (bad,), page.last))
    while nxt is not None:
        nxt = forged.receive(responder.next("p2", nxt, NOW))
    with pytest.raises(RecoveryError):
        forged.result()
