"""Causal group authority, as properties (docs/protocol.md, "Group authority").

A generated history: four accounts, each with its own replica of one group holding some prefix
of every session. Steps sync a session prefix from one replica to another, let an account
write an honest role change through ``add_local`` (refused unless its replica sees it as
admin), or let an account forge a role change in a second session: any changes, any madeAt,
and any claim about what it had seen among what it holds. Then:

- every replica computes the same roles and the same invalid set from the same held
  transactions, whatever order, chunking and duplication delivered them;
- no valid transaction's author is revoked in, or concurrently with, its causal past (the
  causal past recomputed here from the claims, independently of the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from engine.content.authority import seen_meta
from engine.covalue import CoValueCore
from engine.errors import PermissionDenied
from engine.ids import AccountID, SessionID, session_account
from engine.model.session_log import SessionLog
from engine.model.transaction import decode_transaction, encode_transaction
from tests.engine.factories import T0, account, make_group, session

KEYS = [account(20 + i) for i in range(4)]
#: admin twice, so that more accounts come to hold power and lose it
ROLES = ("admin", "admin", "writer", "reader", "revoked")
Ref = tuple[SessionID, int]


@dataclass
class World:
    group: CoValueCore
    #: every session as written, signed after each transaction (any prefix can be sent)
    truth: dict[SessionID, SessionLog] = field(default_factory=dict)
    #: per account: how much of each session its replica holds
    held: list[dict[SessionID, int]] = field(default_factory=lambda: [{} for _ in KEYS])

    def view(self, who: int) -> CoValueCore:
        core = CoValueCore(self.group.header)
        core.apply_content({sid: self.truth[sid].chunk(0, n) for sid, n in self.held[who].items() if n})
        return core

    def append(self, who: int, sid: SessionID, data: bytes) -> None:
        log = self.truth.setdefault(sid, SessionLog(self.group.id, sid))
        log.append_pending(data)
        log.sign(KEYS[who])
        self.held[who][sid] = log.count


def changes_of(draw: st.DrawFn) -> list[list[object]]:
    picks = draw(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(ROLES)), min_size=1, max_size=3))
    return [["role", KEYS[k].account_id, role] for k, role in picks]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    world = World(make_group(KEYS[0]))
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["sync", "sync", "write", "write", "forge"]))
        who = draw(st.integers(0, 3))
        made_at = T0 + draw(st.integers(-1000, 1000))
        if kind == "sync" and world.truth:
            # a full pull from another replica, or one session of it (gaps: waiting claims)
            src = draw(st.integers(0, 3))
            sids = sorted(world.held[src]) if draw(st.booleans()) else [draw(st.sampled_from(sorted(world.truth)))]
            for sid in sids:
                n = world.held[src].get(sid, 0)
                world.held[who][sid] = max(world.held[who].get(sid, 0), n)
        elif kind == "write":
            # mostly an account that its own replica sees as admin, so power moves around
            views = [world.view(k) for k in range(len(KEYS))]
            admins = [k for k, v in enumerate(views) if v.group().roles.get(KEYS[k].account_id) == "admin"]
            if admins and draw(st.integers(0, 4)):
                who = draw(st.sampled_from(admins))
            sid = session(KEYS[who])
            core = views[who]
            try:
                core.add_local(sid, changes_of(draw), made_at)
            except PermissionDenied:
                continue
            world.append(who, sid, core.sessions[sid].txs[-1])
        elif kind == "forge":
            sid = session(KEYS[who], 1)
            claim = {}
            everything = draw(st.booleans())  # all it holds, or any part of it
            for seen_sid, n in sorted(world.held[who].items()):
                if n and seen_sid != sid and (everything or draw(st.booleans())):
                    claim[seen_sid] = n if everything else draw(st.integers(1, n))
            world.append(who, sid, encode_transaction(made_at, changes_of(draw), seen_meta(claim)))
    return world


def outcome(core: CoValueCore) -> tuple[object, ...]:
    state = core.group()
    return state.members(), state.times, sorted((i.session, i.index, i.reason) for i in state.invalid)


@given(world=worlds(), data=st.data())
def test_replicas_compute_the_same_roles_whatever_the_delivery(world: World, data: st.DataObject) -> None:
    """Delivering the same transactions in any order, in any prefixes, with duplicates, gives
    the roles and invalid set of a one-shot delivery, at every step and at the end."""
    reference = CoValueCore(world.group.header)
    reference.apply_content({sid: log.chunk() for sid, log in world.truth.items()})
    sids = sorted(world.truth)
    if not sids:
        return
    replica = CoValueCore(world.group.header)
    held: dict[SessionID, int] = {}
    plan = data.draw(st.lists(st.tuples(st.sampled_from(sids), st.floats(0, 1)), max_size=30))
    for sid, fraction in plan:
        end = round(fraction * world.truth[sid].count)
        if end:
            replica.apply_content({sid: world.truth[sid].chunk(0, end)})  # may be a duplicate
            held[sid] = max(held.get(sid, 0), end)
        one_shot = CoValueCore(world.group.header)
        one_shot.apply_content({s: world.truth[s].chunk(0, n) for s, n in held.items()})
        assert outcome(replica) == outcome(one_shot)
    for sid in data.draw(st.permutations(sids)):
        replica.apply_content({sid: world.truth[sid].chunk()})
    assert outcome(replica) == outcome(reference)


@given(world=worlds())
def test_no_valid_change_by_an_author_revoked_in_or_concurrently_with_its_past(world: World) -> None:
    """For every valid group transaction T by author a: a is the initial admin or a valid
    grant of admin to a is in T's causal past; every valid revocation of a in that past is
    followed by a grant not in its own past; and no valid revocation of a is concurrent with
    T. Forged transactions claim any madeAt, so this holds whatever madeAt says."""
    core = CoValueCore(world.group.header)
    core.apply_content({sid: log.chunk() for sid, log in world.truth.items()})
    state = core.group()
    invalid = {(i.session, i.index) for i in state.invalid}
    txs = {(sid, i): decode_transaction(data) for sid, log in world.truth.items() for i, data in enumerate(log.txs)}
    valid = [ref for ref in txs if ref not in invalid]
    pasts: dict[Ref, frozenset[Ref]] = {}

    def past(ref: Ref) -> frozenset[Ref]:
        if ref not in pasts:
            sid, index = ref
            deps = [(sid, index - 1)] if index else []
            deps += [(SessionID(s), n - 1) for s, n in (txs[ref].meta or {"seen": {}})["seen"].items()]
            pasts[ref] = frozenset().union(*({dep} | past(dep) for dep in deps))
        return pasts[ref]

    def final_role(ref: Ref, acc: AccountID) -> str | None:
        roles = {a: r for _, a, r in txs[ref].changes}
        return roles.get(acc)

    initial = KEYS[0].account_id
    for ref in valid:
        author = session_account(ref[0])
        grants = [g for g in valid if g in past(ref) and final_role(g, author) == "admin"]
        revokes = [r for r in valid if final_role(r, author) not in (None, "admin")]
        assert author == initial or grants, f"{ref}: author never made admin in its past"
        for r in revokes:
            if r == ref:
                continue  # revoking oneself takes effect after, not in, the same transaction
            if r in past(ref):
                assert any(g not in past(r) and g != r for g in grants), f"{ref}: author revoked by {r} in its past"
            else:
                assert ref in past(r), f"{ref}: concurrent with the revocation {r} of its author"


@given(
    made_at=st.integers(0, 2**63 - 1),
    claimed=st.integers(0, 3),
    duplicate_claims=st.booleans(),
    first=st.booleans(),
)
def test_backdated_takeover_never_counts_whatever_it_claims(
    made_at: int, claimed: int, duplicate_claims: bool, first: bool
) -> None:
    """BOB makes EVE admin, EVE makes CAROL writer, BOB revokes EVE. EVE's takeover (revoke
    BOB, make EVE and DAVE admin) with any madeAt, claiming to have seen any prefix of BOB's
    session (and her own), delivered before or after BOB's sessions, never takes effect."""
    bob, eve, carol, dave = KEYS
    source = make_group(bob)
    source.add_local(session(bob), [["role", eve.account_id, "admin"]], T0)
    source.sign_pending(bob)
    source.add_local(session(eve), [["role", carol.account_id, "writer"]], T0 + 1)
    source.sign_pending(eve)
    source.add_local(session(bob), [["role", eve.account_id, "revoked"]], T0 + 2)
    source.sign_pending(bob)
    claim: dict[SessionID, int] = {session(bob): claimed} if claimed else {}
    if duplicate_claims:
        claim[session(eve)] = 1
    takeover = encode_transaction(
        made_at,
        [["role", bob.account_id, "revoked"], ["role", eve.account_id, "admin"], ["role", dave.account_id, "admin"]],
        seen_meta(claim),
    )
    forged = SessionLog(source.id, session(eve, 9))
    forged.append_pending(takeover)
    forged.sign(eve)
    replica = CoValueCore(source.header)
    honest = {sid: log.chunk() for sid, log in source.sessions.items()}
    for part in [{forged.session: forged.chunk()}, honest] if first else [honest, {forged.session: forged.chunk()}]:
        replica.apply_content(part)
    roles = replica.group().roles
    assert (roles[bob.account_id], roles[eve.account_id]) == ("admin", "revoked")
    assert dave.account_id not in roles
    assert roles[carol.account_id] == "writer"  # the revocation had seen EVE's grant
