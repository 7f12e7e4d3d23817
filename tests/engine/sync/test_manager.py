"""engine.sync.manager without an event loop: replicas in memory, managers wired by hand.

Each test builds two or three :class:`LocalNode` replicas without a store (outside a running
loop a write is signed and announced at once), gives each a :class:`SyncManager`, connects
them with ``add_peer`` and carries what ``drain`` returns to the other side's ``receive``.
Every message crosses the wire codec (one op frame) on the way, as over a socket. The tests
follow the rules of the manager's docstring (1–7) message by message; the seeded simulator
(sim.py) and the socket tests check the same rules at scale.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey, chain_base, chain_extend, signed_message
from engine.ids import CoValueID, SessionID, conflict_session_id, is_delete_session
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, decode_frame, encode_frame
from engine.protocol.limits import DEFAULT_LIMITS
from engine.protocol.messages import (
    Admin,
    AdminResult,
    Content,
    Correction,
    Deleted,
    Error,
    Known,
    KvError,
    KvList,
    Load,
    Message,
)
from engine.sync.events import SyncEvent, SyncEventKind
from engine.sync.manager import PeerKind, SyncManager
from tests.engine._fork import copy_covalue
from tests.engine.factories import T0, account, covalue_id, session, signed_log, snapshot, tx

NODE = "node"
ALICE, BOB, MALLORY, OPERATOR, NODE_KEY = account(1), account(2), account(3), account(4), account(5)

Moved = list[tuple[str, str, Message]]


def over_the_wire(message: Message) -> Message:
    """``message`` as the receiving side decodes it from an op frame."""
    frame = decode_frame(encode_frame(OP, [message]), max_size=DEFAULT_LIMITS.max_frame_size, max_messages=1)
    assert not frame.errors and len(frame.messages) == 1, frame
    return frame.messages[0]


class Mesh:
    """Replicas by name, each with its manager and a fixed clock. A replica names its peers
    by their replica names, so what ``a`` drains for peer ``b`` is received by ``b`` from
    ``a``. Every message that moved is kept in :attr:`transcript`."""

    def __init__(self) -> None:
        self.clock = T0
        self.replicas: dict[str, LocalNode] = {}
        self.managers: dict[str, SyncManager] = {}
        #: what each manager's ``on_event`` received, in order
        self.events: dict[str, list[SyncEvent]] = {}
        #: what each manager's ``on_reply`` received: (peer, reply)
        self.replies: dict[str, list[tuple[str, Message]]] = {}
        self.transcript: Moved = []
        self._rng = random.Random(7)

    def add(self, name: str, key: AccountKey, *, sid: SessionID | None = None) -> LocalNode:
        replica = LocalNode(
            key, clock_ms=lambda: self.clock, session=sid, instance_id=name, random_bytes=self._rng.randbytes
        )
        manager = SyncManager(replica)
        self.events[name], self.replies[name] = [], []
        manager.on_event = self.events[name].append
        manager.on_reply = lambda peer, reply: self.replies[name].append((peer, reply))
        self.replicas[name], self.managers[name] = replica, manager
        return replica

    def connect(self, client: str, server: str, *, admin: bool = False) -> None:
        """``client`` connected to ``server``: a downstream peer there, an upstream one here
        (to which the client sends ``load`` for everything it holds)."""
        self.managers[server].add_peer(client, PeerKind.DOWNSTREAM, self.replicas[client].account_id, admin=admin)
        self.managers[client].add_peer(server, PeerKind.UPSTREAM, self.replicas[server].account_id)

    def disconnect(self, client: str, server: str) -> None:
        self.managers[server].remove_peer(client)
        self.managers[client].remove_peer(server)

    def step(self) -> Moved:
        """One round: everything queued anywhere is delivered; returns what moved."""
        moved: Moved = []
        for name, manager in self.managers.items():
            moved.extend((name, peer, over_the_wire(message)) for peer, message in manager.drain())
        for src, dst, message in moved:
            self.transcript.append((src, dst, message))
            self.managers[dst].receive(src, message)
        return moved

    def settle(self, max_rounds: int = 50) -> Moved:
        """Deliver until nothing moves; everything that moved."""
        start = len(self.transcript)
        for _ in range(max_rounds):
            if not self.step():
                return self.transcript[start:]
        raise AssertionError(f"still moving after {max_rounds} rounds")

    def write(self, name: str, covalue: CoValueID, prefix: str, count: int) -> None:
        """``count`` writes ``prefix/i = i`` by replica ``name``, one clock tick apart."""
        for i in range(count):
            self.clock += 1
            self.replicas[name].set(covalue, f"{prefix}/{i}", i)

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
        for replica in self.replicas.values():
            replica.close()


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    m = Mesh()
    yield m
    m.close()


def shared_doc(mesh: Mesh, *, writes: int = 3) -> tuple[CoValueID, CoValueID]:
    """Alice (replica ``alice``) makes a group with Bob as writer and a CoMap it owns, writes
    ``writes`` keys, and syncs both to the node (replica ``node``). Returns (group, doc)."""
    alice = mesh.add("alice", ALICE)
    mesh.add(NODE, NODE_KEY)
    group = alice.create_group()
    alice.set_role(group.id, BOB.account_id, "writer")
    doc = alice.create_map(group.id)
    mesh.write("alice", doc.id, "a", writes)
    mesh.connect("alice", NODE)
    mesh.settle()
    assert mesh.replicas[NODE].get_map(doc.id) == alice.get_map(doc.id)
    return group.id, doc.id


def alice_sid(mesh: Mesh) -> SessionID:
    """The session Alice's replica writes in."""
    return mesh.replicas["alice"].session


def between(moved: Moved, src: str, dst: str, covalue: CoValueID | None = None) -> list[Message]:
    """The messages ``src`` sent ``dst`` (about ``covalue``, when given), in order."""
    return [m for s, d, m in moved if (s, d) == (src, dst) and (covalue is None or getattr(m, "id", None) == covalue)]


def chunk_parts(chunk: Chunk) -> tuple[int, list[bytes], dict[int, bytes]]:
    """``chunk`` as plain values (a decoded chunk holds its transactions in a tuple)."""
    return chunk.after, list(chunk.txs), dict(chunk.sigs)


def forged(core: CoValueCore, sid: SessionID, txs: list[bytes], signer: AccountKey, after: int = 0) -> Chunk:
    """A chunk of ``sid`` continuing ``core``'s copy at ``after``, on the right chain but
    signed by ``signer`` (not the session's owner)."""
    held = core.sessions[sid].hash_at(after) if sid in core.sessions else chain_base(core.id, sid)
    head = chain_extend(held, txs)[-1]
    end = after + len(txs)
    return Chunk(after, txs, {end: signer.sign(signed_message(core.id, sid, end, head))})


def session_state(core: CoValueCore, sid: SessionID) -> tuple[list[bytes], dict[int, bytes]]:
    """What ``core`` holds of ``sid``: its transactions and checkpoints."""
    log = core.sessions[sid]
    return list(log.txs), dict(log.sigs)


# -- rule 2: load on connect, and the answer --------------------------------------------------


def test_towards_upstream_a_client_loads_everything_it_holds_on_connect(mesh: Mesh) -> None:
    """The client sends ``load{id, known}`` for each CoValue it holds; an upstream lacking
    them answers ``known`` (empty); the client sends content; the upstream acknowledges it
    with ``known`` matching the client's own."""
    alice = mesh.add("alice", ALICE)
    node = mesh.add(NODE, NODE_KEY)
    group = alice.create_group()
    doc = alice.create_map(group.id)
    mesh.write("alice", doc.id, "a", 3)
    ids = sorted([group.id, doc.id])
    mesh.connect("alice", NODE)

    assert mesh.step() == [("alice", NODE, Load(cid, alice.get(cid).known_state())) for cid in ids]
    assert mesh.step() == [(NODE, "alice", Known(cid, KnownState(cid, False, {}))) for cid in ids]
    rest = mesh.settle()
    for cid in ids:
        # (a ``known`` among them answers a ``load`` of the node's own: the CoMap's content
        # named its owner group, which the node then asked for)
        sent = [m for m in between(rest, "alice", NODE, cid) if isinstance(m, Content)]
        assert sent and sent[0].header == alice.get(cid).header
        sessions = {sid: chunk_parts(c) for m in sent for sid, c in m.new.items()}
        assert sessions == {sid: (0, list(log.txs), dict(log.sigs)) for sid, log in alice.get(cid).sessions.items()}
        # the acknowledgement: the node's known state, now the client's
        assert between(rest, NODE, "alice", cid)[-1] == Known(cid, alice.get(cid).known_state())
    assert node.get_map(doc.id) == alice.get_map(doc.id) == {"a/0": 0, "a/1": 1, "a/2": 2}
    assert mesh.step() == []


def test_a_load_is_answered_with_the_missing_content_then_known(mesh: Mesh) -> None:
    """Bob loads a CoValue he lacks: the node answers content (header and every session from
    0), then ``known``. Reconnecting after more writes, his ``load`` says what he holds and
    the content starts there."""
    group, doc = shared_doc(mesh)
    node, bob = mesh.replicas[NODE], mesh.add("bob", BOB)
    mesh.connect("bob", NODE)
    mesh.managers["bob"].load(doc)
    assert mesh.step() == [("bob", NODE, Load(doc, KnownState(doc, False, {})))]
    answer = mesh.step()
    content, known = between(answer, NODE, "bob")
    held = node.get(doc)
    assert isinstance(content, Content) and content.header == held.header
    assert {sid: chunk_parts(c) for sid, c in content.new.items()} == {
        sid: (0, list(log.txs), dict(log.sigs)) for sid, log in held.sessions.items()
    }
    assert known == Known(doc, held.known_state())
    mesh.settle()  # Bob asks for the owner group, which the content named
    assert bob.get_map(doc) == node.get_map(doc) and bob.get_or_none(group) is not None

    mesh.disconnect("bob", NODE)
    mesh.write("alice", doc, "more", 2)
    mesh.connect("bob", NODE)
    loads = between(mesh.step(), "bob", NODE, doc)
    assert loads == [Load(doc, bob.get(doc).known_state())]
    content, known = between(mesh.step(), NODE, "bob", doc)
    assert isinstance(content, Content) and content.header is None
    assert [chunk_parts(c)[:2] for c in content.new.values()] == [(3, list(held.sessions[alice_sid(mesh)].txs[3:]))]
    assert known == Known(doc, held.known_state())
    mesh.settle()
    assert bob.get_map(doc) == node.get_map(doc) == mesh.replicas["alice"].get_map(doc)


def test_a_known_without_header_makes_us_send_everything_again(mesh: Mesh) -> None:
    """Alice has sent her session to the node, which answers ``known{header: false}`` (it
    holds nothing of it, or must answer as if it did not: it took her for no member). She
    sends her session again whole, from 0 and with the header — not nothing, as if the node
    still held what she sent before, and later not only new transactions it cannot place."""
    _group, doc = shared_doc(mesh)
    mesh.settle()
    sid = alice_sid(mesh)
    mesh.managers["alice"].receive(NODE, Known(doc, KnownState(doc, False, {})))
    sent = [m for m in between(mesh.step(), "alice", NODE, doc) if isinstance(m, Content)]
    assert sent and sent[0].header is not None
    assert chunk_parts(sent[0].new[sid])[0] == 0
    assert len(sent[0].new[sid].txs) == mesh.replicas["alice"].get(doc).sessions[sid].count


# -- rule 3: content applies only after it verifies ------------------------------------------


@pytest.mark.parametrize(
    "kind", [SyncEventKind.REJECTED, SyncEventKind.FORK_SUSPECTED], ids=["new-session", "at-our-end"]
)
def test_forged_content_is_refused_and_applies_nothing(mesh: Mesh, kind: SyncEventKind) -> None:
    """Bob sends a session of Alice's signed with his own key, next to an honest session of
    his own. The forgery is refused (``bad_signature`` back to Bob, a ``rejected`` event, or
    ``fork_suspected`` when it starts exactly at our end of the session); the honest one
    applies; the forged transactions are nowhere."""
    _group, doc = shared_doc(mesh)
    node = mesh.replicas[NODE]
    mesh.add("bob", BOB)
    mesh.connect("bob", NODE)
    mesh.managers["bob"].load(doc)
    mesh.settle()
    core = node.get(doc)
    before = snapshot(core)
    evil = [tx(T0 + 50, ["set", "a/0", "evil"])]
    if kind is SyncEventKind.REJECTED:
        target = session(ALICE, 9)
        bad = forged(core, target, evil, BOB)
    else:
        target = alice_sid(mesh)
        bad = forged(core, target, evil, BOB, after=core.sessions[target].signed_count)
    honest = signed_log(doc, BOB, [tx(T0 + 60, ["set", "bob", 1])], [], sid=session(BOB))

    mesh.managers[NODE].receive("bob", over_the_wire(Content(doc, None, {target: bad, session(BOB): honest.chunk()})))
    to_bob = between([(NODE, p, m) for p, m in mesh.managers[NODE].drain()], NODE, "bob")
    (error, known) = to_bob
    assert isinstance(error, Error) and (error.code, error.id) == ("bad_signature", doc)
    assert known == Known(doc, core.known_state())
    assert target not in known.known.sessions or known.known.sessions[target] == before[0].sessions[target]
    assert [(e.kind, e.peer, e.covalue, e.session) for e in mesh.events[NODE]] == [(kind, "bob", doc, target)]
    assert node.get_map(doc) == {"a/0": 0, "a/1": 1, "a/2": 2, "bob": 1}
    assert snapshot(core)[2][alice_sid(mesh)] == before[2][alice_sid(mesh)]
    assert set(core.sessions) == {alice_sid(mesh), session(BOB)}


# -- rules 1 and 4: forks are never merged; corrections flow downstream ------------------------


def forked_tab(mesh: Mesh, *, mine: int, theirs: int) -> tuple[CoValueID, SessionID, LocalNode]:
    """Alice writes 2 keys, synced; a second tab of hers (replica ``tab``, same session, no
    lease) copies them; Alice writes ``mine`` more (synced to the node), the tab ``theirs``
    more while offline. Returns (doc, the shared session, the tab)."""
    _group, doc = shared_doc(mesh, writes=2)
    sid = alice_sid(mesh)
    tab = mesh.add("tab", ALICE, sid=sid)
    copy_covalue(mesh.replicas["alice"], tab, doc)
    mesh.write("alice", doc, "mine", mine)
    mesh.settle()
    mesh.write("tab", doc, "theirs", theirs)
    assert mesh.replicas[NODE].get(doc).sessions[sid].signed_count == 2 + mine
    assert tab.get(doc).sessions[sid].signed_count == 2 + theirs
    return doc, sid, tab


def converged(
    mesh: Mesh, doc: CoValueID, sid: SessionID, node_copy: tuple[Any, ...], *, mine: int, theirs: int
) -> None:
    """After a correction: the node's copy of ``sid`` never changed, the tab moved its tail
    into ``sid!`` and to a new session, and every replica shows every edit."""
    node = mesh.replicas[NODE]
    assert session_state(node.get(doc), sid) == node_copy
    tab = mesh.replicas["tab"]
    assert tab.session != sid
    assert session_state(tab.get(doc), sid) == node_copy
    assert conflict_session_id(sid, 1) in node.get(doc).sessions
    want = {f"a/{i}": i for i in range(2)} | {f"mine/{i}": i for i in range(mine)}
    want |= {f"theirs/{i}": i for i in range(theirs)}
    for name in ("alice", NODE, "tab"):
        assert mesh.replicas[name].get_map(doc) == want, name
        assert mesh.replicas[name].get(doc).known_state() == node.get(doc).known_state(), name
    assert [e.kind for e in mesh.events["tab"]][-1] == SyncEventKind.CORRECTION_APPLIED


def test_a_fork_seen_in_a_known_state_gets_a_correction(mesh: Mesh) -> None:
    """The tab's ``load`` shows a head the node's chain does not have at that count: the
    node sends ``correction`` with its whole history (it cannot tell where it forked) and
    merges nothing."""
    doc, sid, tab = forked_tab(mesh, mine=2, theirs=1)
    node_copy = session_state(mesh.replicas[NODE].get(doc), sid)
    mesh.connect("tab", NODE)
    assert between(mesh.step(), "tab", NODE, doc) == [Load(doc, tab.get(doc).known_state())]
    correction, known = between(mesh.step(), NODE, "tab", doc)
    held = mesh.replicas[NODE].get(doc)
    assert isinstance(correction, Correction) and (correction.sid, correction.fork) == (sid, 0)
    assert (list(correction.txs), correction.head) == (node_copy[0], held.sessions[sid].head())
    assert known == Known(doc, held.known_state())
    assert [(e.kind, e.peer, e.session) for e in mesh.events[NODE]] == [
        (SyncEventKind.FORK_DETECTED, "tab", sid),
        (SyncEventKind.CORRECTION_SENT, "tab", sid),
    ]
    mesh.settle()
    converged(mesh, doc, sid, node_copy, mine=2, theirs=1)


def test_a_fork_seen_in_content_gets_a_correction_from_the_fork(mesh: Mesh) -> None:
    """The tab holds more of the session than the node, so the node sees no fork in its
    ``load``. The tab sees one in the node's ``known`` and, towards its upstream, sends its
    whole copy as content (never a correction); the node finds where it diverges and sends a
    correction from there. Nothing is merged."""
    doc, sid, tab = forked_tab(mesh, mine=2, theirs=3)
    node_copy = session_state(mesh.replicas[NODE].get(doc), sid)
    held = mesh.replicas[NODE].get(doc)
    mesh.connect("tab", NODE)
    mesh.step()  # the tab's loads
    assert between(mesh.step(), NODE, "tab", doc) == [Known(doc, held.known_state())]
    assert [(e.kind, e.session) for e in mesh.events["tab"]] == [(SyncEventKind.FORK_DETECTED, sid)]
    (whole,) = between(mesh.step(), "tab", NODE, doc)
    assert isinstance(whole, Content) and list(whole.new) == [sid]
    assert chunk_parts(whole.new[sid])[:2] == (0, list(tab.get(doc).sessions[sid].txs))
    correction, known = between(mesh.step(), NODE, "tab", doc)
    assert isinstance(correction, Correction) and (correction.sid, correction.fork) == (sid, 2)
    assert list(correction.txs) == node_copy[0][2:] and correction.head == held.sessions[sid].head()
    assert known == Known(doc, held.known_state())
    assert session_state(held, sid) == node_copy
    assert [(e.kind, e.detail) for e in mesh.events[NODE]] == [
        (SyncEventKind.FORK_DETECTED, "content diverges at 2"),
        (SyncEventKind.CORRECTION_SENT, "from 2 to 4"),
    ]
    mesh.settle()
    converged(mesh, doc, sid, node_copy, mine=2, theirs=3)


def test_a_correction_from_a_downstream_peer_is_refused(mesh: Mesh) -> None:
    _group, doc = shared_doc(mesh)
    node = mesh.replicas[NODE]
    before = snapshot(node.get(doc))
    sid = alice_sid(mesh)
    log = node.get(doc).sessions[sid]
    truncated = Correction(doc, sid, 0, tuple(log.txs[:1]), {1: log.sigs[1]}, (1, log.hash_at(1)))
    mesh.managers[NODE].receive("alice", over_the_wire(truncated))
    (reply,) = [m for _p, m in mesh.managers[NODE].drain()]
    assert isinstance(reply, Error) and (reply.code, reply.id) == ("unexpected_correction", doc)
    assert snapshot(node.get(doc)) == before and mesh.events[NODE] == []


# -- rule 5: a deleted CoValue ---------------------------------------------------------------


def test_a_deleted_covalue_answers_deleted_and_refuses_other_sessions(mesh: Mesh) -> None:
    """Bob wrote offline while Alice deleted the CoMap. On reconnecting, his ``load`` is
    answered with ``deleted{tombstone}``; his (validly signed) content is refused with
    ``deleted`` again and nothing of it is kept."""
    _group, doc = shared_doc(mesh)
    node, bob = mesh.replicas[NODE], mesh.add("bob", BOB)
    mesh.connect("bob", NODE)
    mesh.managers["bob"].load(doc)
    mesh.settle()
    mesh.disconnect("bob", NODE)
    mesh.write("bob", doc, "bob", 2)
    bob_sid = bob.session
    bob_chunk = bob.get(doc).sessions[bob_sid].chunk()

    mesh.replicas["alice"].delete_covalue(doc)
    mesh.settle()
    core = node.get(doc)
    assert core.deleted and all(is_delete_session(sid) for sid in core.sessions)
    tombstone = {sid: chunk_parts(core.sessions[sid].chunk()) for sid in core.sessions}

    mesh.connect("bob", NODE)
    assert between(mesh.step(), "bob", NODE, doc) == [Load(doc, bob.get(doc).known_state())]
    deleted, known = between(mesh.step(), NODE, "bob", doc)
    assert isinstance(deleted, Deleted) and {s: chunk_parts(c) for s, c in deleted.tombstone.items()} == tombstone
    assert known == Known(doc, core.known_state()) and set(known.known.sessions) == set(tombstone)
    before = snapshot(core)

    mesh.managers[NODE].receive("bob", over_the_wire(Content(doc, None, {bob_sid: bob_chunk})))
    replies = [m for p, m in mesh.managers[NODE].drain() if p == "bob"]
    assert len(replies) == 1 and isinstance(replies[0], Deleted)
    assert {s: chunk_parts(c) for s, c in replies[0].tombstone.items()} == tombstone
    assert snapshot(core) == before and bob_sid not in core.sessions
    mesh.settle()
    assert bob.get(doc).deleted


# -- rule 6: who may read --------------------------------------------------------------------


def test_a_non_member_load_is_answered_like_an_unknown_id(mesh: Mesh) -> None:
    """Mallory, not in the owner group, loads the CoMap and an id nobody has, first knowing
    nothing, then claiming Alice's head: each answer is ``known`` with nothing, the same for
    both ids; later writes never reach her. An admin peer (not a member either) reads it."""
    _group, doc = shared_doc(mesh)
    node = mesh.replicas[NODE]
    nowhere = covalue_id("nowhere")
    mesh.add("mallory", MALLORY)
    mesh.connect("mallory", NODE)
    head = node.get(doc).sessions[alice_sid(mesh)].head()

    def answers(known_of: Any) -> dict[CoValueID, list[Message]]:
        out = {}
        for cid in (doc, nowhere):
            mesh.managers[NODE].receive("mallory", Load(cid, known_of(cid)))
            out[cid] = [m for p, m in mesh.managers[NODE].drain() if p == "mallory"]
        return out

    for known_of in (
        lambda cid: KnownState(cid, False, {}),
        lambda cid: KnownState(cid, True, {alice_sid(mesh): head}),
    ):
        got = answers(known_of)
        assert got[doc] == [Known(doc, KnownState(doc, False, {}))]
        assert got[nowhere] == [Known(nowhere, KnownState(nowhere, False, {}))]
    mesh.write("alice", doc, "later", 2)
    assert between(mesh.settle(), NODE, "mallory") == []
    assert mesh.events[NODE] == []

    mesh.add("operator", OPERATOR)
    mesh.connect("operator", NODE, admin=True)
    mesh.managers["operator"].load(doc)
    mesh.settle()
    assert mesh.replicas["operator"].get_map(doc) == node.get_map(doc)


# -- rule 7: admin requests ------------------------------------------------------------------


def test_admin_requests_from_a_non_admin_get_typed_refusals(mesh: Mesh) -> None:
    """Bob (a member, not an admin) asks the node's admin ops: each gets exactly one
    ``admin_result`` with its rid, ``ok: false`` and a stable code, and changes nothing;
    ``list`` answers only what he may read. The same requests from an admin succeed."""
    group, doc = shared_doc(mesh)
    node = mesh.replicas[NODE]
    mesh.add("bob", BOB)
    mesh.add("operator", OPERATOR)
    mesh.connect("bob", NODE)
    mesh.connect("operator", NODE, admin=True)
    mesh.settle()
    before = (snapshot(node.get(doc)), list(mesh.managers[NODE].events))
    alice_ns = ALICE.account_id
    requests = [
        Admin(1, "events", {}),
        Admin(2, "peers", {}),
        Admin(3, "kv_slot", {"namespace": alice_ns, "key": "k"}),
        Admin(4, "list", {}),
    ]
    for request in requests:
        mesh.managers["bob"].send_to(NODE, request)
    mesh.managers["bob"].send_to(NODE, KvList(5, alice_ns))
    moved = mesh.settle()
    results = mesh.replies["bob"]
    expected = [(NODE, AdminResult, rid) for rid in (1, 2, 3, 4)] + [(NODE, KvError, 5)]
    assert [(p, type(r), r.rid) for p, r in results] == expected
    codes = [r.result["code"] for _p, r in results[:3] if isinstance(r, AdminResult) and not r.ok]
    assert codes == ["permission_denied", "permission_denied", "kv_access_denied"]
    listed = results[3][1]
    assert isinstance(listed, AdminResult) and listed.ok
    assert listed.result == {"covalues": sorted([group, doc]), "namespaces": [BOB.account_id]}
    assert [m for m in between(moved, NODE, "bob") if isinstance(m, KvError)] == [
        KvError(5, "kv_access_denied", f"{BOB.account_id} may not read namespace {alice_ns!r}")
    ]
    assert (snapshot(node.get(doc)), list(mesh.managers[NODE].events)) == before

    for request in requests[:1] + requests[2:]:
        mesh.managers["operator"].send_to(NODE, request)
    mesh.settle()
    assert [(r.rid, r.ok) for _p, r in mesh.replies["operator"] if isinstance(r, AdminResult)] == [
        (1, True),
        (3, True),
        (4, True),
    ]


# -- the event ring --------------------------------------------------------------------------


def test_events_land_in_the_ring_numbered_without_gaps(mesh: Mesh) -> None:
    """A fork seen in content, its correction and a forgery sent twice give the node four
    events, stamped with its clock, in the order decided; ``on_event`` saw the same. An admin
    reading them three at a time by cursor gets numbers 1..4, no gap, no repeat, each row the
    event itself."""
    doc, _sid, _tab = forked_tab(mesh, mine=2, theirs=3)
    mesh.connect("tab", NODE)
    mesh.settle()
    core = mesh.replicas[NODE].get(doc)
    fake = forged(core, session(ALICE, 9), [tx(T0 + 70)], BOB)
    mesh.managers[NODE].receive("tab", over_the_wire(Content(doc, None, {session(ALICE, 9): fake})))
    mesh.clock += 5
    mesh.managers[NODE].receive("tab", over_the_wire(Content(doc, None, {session(ALICE, 9): fake})))
    mesh.managers[NODE].drain()

    manager = mesh.managers[NODE]
    kinds = [e.kind for e in manager.events]
    assert kinds == [
        SyncEventKind.FORK_DETECTED,
        SyncEventKind.CORRECTION_SENT,
        SyncEventKind.REJECTED,
        SyncEventKind.REJECTED,
    ]
    assert list(manager.events) == mesh.events[NODE] and manager.event_seq == len(kinds)
    assert [e.at_ms for e in manager.events] == [mesh.clock - 5] * 3 + [mesh.clock]

    mesh.add("operator", OPERATOR)
    mesh.connect("operator", NODE, admin=True)
    mesh.settle()
    rows: list[dict[str, Any]] = []
    cursor, rid = 0, 0
    while True:
        rid += 1
        mesh.managers["operator"].send_to(NODE, Admin(rid, "events", {"after": cursor, "limit": 3}))
        mesh.settle()
        _peer, reply = mesh.replies["operator"][-1]
        assert isinstance(reply, AdminResult) and reply.ok and reply.rid == rid
        page = reply.result
        rows += page["events"]
        assert page["epoch"] == manager.epoch and page["last"] == manager.event_seq
        if not page["more"]:
            break
        cursor = page["events"][-1]["seq"]
    assert [row["seq"] for row in rows] == list(range(1, manager.event_seq + 1))
    assert [SyncEvent.from_json(row) for row in rows] == list(manager.events)
