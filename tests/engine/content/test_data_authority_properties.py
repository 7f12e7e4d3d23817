"""Causal authority over data writes, as properties (docs/protocol.md, "Group authority").

A generated history: four accounts, each with its own replica of one group and of one CoMap
the group owns, holding some prefix of every session. Steps sync prefixes from one replica to
another; let an account change a role through ``add_local`` (a demotion records what its
replica holds of the demoted account's writes, as the node API does); let an account write
honestly through ``add_local``; or let an account forge a write in a fresh session: any
madeAt, and any claim (or none) about what it had seen of the group among what it holds.
Then:

- every replica computes the same CoMap content and invalid set from the same held
  transactions, whatever order, chunking and duplication delivered them, and whether the
  group arrived before or after the data;
- no valid write's author is revoked in, or concurrently with, its causal past (recomputed
  here from the claims, independently of the engine): a revocation either is in the write's
  past and followed there by a new grant, or had seen the write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from engine.content.writes import CLAIM_KEY
from engine.covalue import CoValueCore
from engine.errors import PermissionDenied
from engine.ids import SessionID, session_account
from engine.model.session_log import SessionLog
from engine.model.transaction import Transaction, decode_transaction, encode_transaction
from engine.node.revocations import held_writes
from tests.engine.factories import T0, account, make_comap, make_group, session

KEYS = [account(30 + i) for i in range(4)]
ROLES = ("admin", "writer", "writer", "reader", "revoked")
WRITE = ("admin", "writer")
Ref = tuple[SessionID, int]


@dataclass
class World:
    group: CoValueCore
    doc: CoValueCore
    #: every session of the group and of the doc as written, signed after each transaction
    truth: dict[str, dict[SessionID, SessionLog]] = field(default_factory=lambda: {"group": {}, "doc": {}})
    #: per account and CoValue: how much of each session its replica holds
    held: list[dict[str, dict[SessionID, int]]] = field(
        default_factory=lambda: [{"group": {}, "doc": {}} for _ in KEYS]
    )
    forged: int = 0

    def views(self, who: int) -> tuple[CoValueCore, CoValueCore]:
        group = CoValueCore(self.group.header)
        doc = CoValueCore(self.doc.header)
        doc.resolve = {group.id: group}.get
        for core, name in ((group, "group"), (doc, "doc")):
            held = self.held[who][name]
            core.apply_content({sid: self.truth[name][sid].chunk(0, n) for sid, n in held.items() if n})
        return group, doc

    def append(self, who: int, name: str, sid: SessionID, data: bytes) -> None:
        core = self.group if name == "group" else self.doc
        log = self.truth[name].setdefault(sid, SessionLog(core.id, sid))
        log.append_pending(data)
        log.sign(KEYS[who])
        self.held[who][name][sid] = log.count


@st.composite
def worlds(draw: st.DrawFn) -> World:
    group = make_group(KEYS[0])
    world = World(group, make_comap(group))
    for _ in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["sync", "sync", "role", "write", "write", "forge"]))
        who = draw(st.integers(0, 3))
        made_at = T0 + draw(st.integers(-1000, 1000))
        if kind == "sync":
            src = draw(st.integers(0, 3))
            for name in ("group", "doc"):
                if draw(st.booleans()):
                    for sid, n in world.held[src][name].items():
                        mine = world.held[who][name]
                        mine[sid] = max(mine.get(sid, 0), n)
        elif kind == "role":
            admins = [k for k in range(4) if world.views(k)[0].group().roles.get(KEYS[k].account_id) == "admin"]
            if admins and draw(st.integers(0, 4)):
                who = draw(st.sampled_from(admins))
            group_view, doc_view = world.views(who)
            target, role = KEYS[draw(st.integers(0, 3))].account_id, draw(st.sampled_from(ROLES))
            kept = held_writes([group_view, doc_view], None, group.id, target) if role != "admin" else None
            sid = session(KEYS[who])
            try:
                group_view.add_local(sid, [["role", target, role]], made_at, kept)
            except PermissionDenied:
                continue
            world.append(who, "group", sid, group_view.sessions[sid].txs[-1])
        elif kind == "write":
            _, doc_view = world.views(who)
            sid = session(KEYS[who])
            try:
                doc_view.add_local(sid, [["set", f"k{draw(st.integers(0, 3))}", who]], made_at)
            except PermissionDenied:
                continue
            world.append(who, "doc", sid, doc_view.sessions[sid].txs[-1])
        else:
            world.forged += 1
            sid = session(KEYS[who], world.forged)
            claim = None
            if draw(st.booleans()):
                claim = {}
                for seen_sid, n in sorted(world.held[who]["group"].items()):
                    if draw(st.booleans()):
                        claim[seen_sid] = draw(st.integers(1, n))
            meta = {CLAIM_KEY: claim} if claim is not None else None
            world.append(who, "doc", sid, encode_transaction(made_at, [["set", "k0", f"forged{who}"]], meta))
    return world


def outcome(doc: CoValueCore) -> tuple[object, ...]:
    state = doc.comap()
    return state.items(), sorted((i.session, i.index, i.reason) for i in state.invalid)


def full(world: World) -> tuple[CoValueCore, CoValueCore]:
    group = CoValueCore(world.group.header)
    group.apply_content({sid: log.chunk() for sid, log in world.truth["group"].items()})
    doc = CoValueCore(world.doc.header)
    doc.resolve = {group.id: group}.get
    doc.apply_content({sid: log.chunk() for sid, log in world.truth["doc"].items()})
    return group, doc


@given(world=worlds(), data=st.data())
def test_replicas_compute_the_same_content_whatever_the_delivery(world: World, data: st.DataObject) -> None:
    """Data and group delivered in any order, in any prefixes, with duplicates, give the
    content and invalid set of a one-shot delivery."""
    _, reference = full(world)
    group = CoValueCore(world.group.header)
    doc = CoValueCore(world.doc.header)
    doc.resolve = {group.id: group}.get
    parts = [("group", sid) for sid in world.truth["group"]] + [("doc", sid) for sid in world.truth["doc"]]
    if not parts:
        return
    plan = data.draw(st.lists(st.tuples(st.sampled_from(parts), st.floats(0, 1)), max_size=30))
    for (name, sid), fraction in plan:
        log = world.truth[name][sid]
        end = round(fraction * log.count)
        if end:
            (group if name == "group" else doc).apply_content({sid: log.chunk(0, end)})
            outcome(doc)  # an incremental view in between, as a live replica keeps one
    for name, sid in data.draw(st.permutations(parts)):
        (group if name == "group" else doc).apply_content({sid: world.truth[name][sid].chunk()})
    assert outcome(doc) == outcome(reference)


@given(world=worlds())
def test_no_valid_write_by_an_author_revoked_in_or_concurrently_with_its_past(world: World) -> None:
    """For every valid write W by author a: with a claim, a holds a write role in W's causal
    past (the initial admin, or a valid grant there); every valid revocation of a (a role
    without write power) is either in W's past and followed there by a grant it had not seen,
    or recorded W as seen. madeAt plays no part, so forged madeAt cannot help."""
    group, doc = full(world)
    invalid_group = {(i.session, i.index) for i in group.group().invalid}
    invalid_doc = {(i.session, i.index) for i in doc.comap().invalid}
    gtx: dict[Ref, Transaction] = {
        (sid, i): decode_transaction(data)
        for sid, log in world.truth["group"].items()
        for i, data in enumerate(log.txs)
    }
    valid_group = [ref for ref in gtx if ref not in invalid_group]
    pasts: dict[Ref, frozenset[Ref]] = {}

    def past(ref: Ref) -> frozenset[Ref]:
        if ref not in pasts:
            sid, index = ref
            deps = [(sid, index - 1)] if index else []
            deps += [(SessionID(s), n - 1) for s, n in (gtx[ref].meta or {"seen": {}})["seen"].items()]
            pasts[ref] = frozenset().union(*({dep} | past(dep) for dep in deps))
        return pasts[ref]

    def gives(ref: Ref, acc: str) -> str | None:
        return {a: r for _, a, r in gtx[ref].changes}.get(acc)

    initial = KEYS[0].account_id
    for sid, log in world.truth["doc"].items():
        claimed: set[Ref] = set()
        any_claim = False
        for i, data in enumerate(log.txs):
            meta = decode_transaction(data).meta
            if meta is not None and meta[CLAIM_KEY]:  # an empty claim claims nothing
                any_claim = True
                for s, n in meta[CLAIM_KEY].items():
                    claimed |= {(SessionID(s), n - 1)} | past((SessionID(s), n - 1))
            if (sid, i) in invalid_doc:
                continue
            author = session_account(sid)
            grants = [g for g in valid_group if g in claimed and gives(g, author) in WRITE]
            if any_claim:
                assert author == initial or grants, f"{sid} #{i}: author never a writer in its past"
            for r in valid_group:
                role = gives(r, author)
                if role is None or role in WRITE:
                    continue
                if r in claimed:
                    assert any(g not in past(r) and g != r for g in grants), f"{sid} #{i}: revoked by {r} in its past"
                else:
                    kept = (gtx[r].meta or {}).get("kept", {}).get(doc.id, {}).get(sid, 0)
                    assert i < kept, f"{sid} #{i}: concurrent with the revocation {r} of its author"
