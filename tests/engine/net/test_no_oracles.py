"""No existence or tombstone oracles (issue 12, point 3), over real loopback WebSockets.

Two real nodes hold the same owner group. Node "holds" also has a CoValue E that the attacker
(an account with no role in the group) may not read — alive in one variant, deleted in the
other; node "lacks" never had E. The attacker sends each node the same bytes, for every
message type of the protocol (the test checks that the list covers them all), and the two
nodes' answers must be byte for byte the same: every message received up to a sentinel
(the answer to a ``load`` of a fresh unknown id) is compared by its canonical encoding, in
order. Before, ``content{E, new: {}}`` without a header said ``header: true`` for the node
that held E, ``deleted{E}`` got no reply from it (and ``known{header: false}`` from the
other), and content sent to the deleted E got its tombstone back (delete session, marker and
the deleter's account).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from engine import codec
from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID
from engine.model.header import Header
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, encode_frame
from engine.protocol.messages import (
    MESSAGE_TYPES,
    Admin,
    AdminResult,
    Challenge,
    Content,
    Correction,
    Deleted,
    Done,
    Error,
    Hello,
    Known,
    KvCas,
    KvError,
    KvEvent,
    KvGet,
    KvKeys,
    KvList,
    KvResult,
    KvValue,
    KvWatch,
    Load,
    Message,
    RecoverItem,
    RecoverNext,
    RecoverOpen,
    RecoverPage,
    RecoveryScope,
    Welcome,
)
from tests.engine.factories import (
    ALICE,
    BOB,
    T0,
    account,
    chunks_of,
    covalue_id,
    delete_session,
    make_comap,
    session,
    setup_doc,
    signed_log,
    tx,
    wire,
    write,
)
from tests.engine.net.conftest import RawPeer, run

EVE = account(9)
EVE_SESSION = session(EVE)


@dataclass(frozen=True)
class Target:
    """The CoValue E as the attacker knows it: id, header, and chunks it can send."""

    id: CoValueID
    header: Header
    owner_chunk: Content  # the writers' real history (a replay)
    eve_chunk: Content  # EVE's own signed edit
    eve_tombstone: dict[SessionID, Chunk]  # EVE's own (invalid) delete session


@dataclass(frozen=True)
class World:
    group: CoValueCore
    alive: CoValueCore
    gone: CoValueCore


def build_world() -> World:
    group, alive = setup_doc()
    write(alive, BOB, 3, made_at=T0 + 1)
    gone = make_comap(group, tag="gone")
    wire(group, alive, gone)
    write(gone, BOB, 2, made_at=T0 + 1)
    gone.delete(ALICE, delete_session(ALICE), T0 + 10)
    assert gone.deleted
    return World(group, alive, gone)


def target_of(core: CoValueCore) -> Target:
    eve = signed_log(core.id, EVE, [tx(T0 + 5, ["set", "k", "eve"])], [], sid=EVE_SESSION)
    tomb = signed_log(core.id, EVE, [tx(T0 + 6, ["delete"])], [], sid=delete_session(EVE))
    return Target(
        core.id,
        core.header,
        Content(core.id, core.header, chunks_of(core)),
        Content(core.id, None, {EVE_SESSION: eve.chunk()}),
        {delete_session(EVE): tomb.chunk()},
    )


def holding(node: LocalNode, *cores: CoValueCore) -> None:
    for core in cores:
        node.add_header(core.header)
        node.apply_content(core.id, chunks_of(core))


@contextlib.asynccontextmanager
async def node_with(*cores: CoValueCore) -> AsyncIterator[str]:
    node = LocalNode(AccountKey.generate())
    holding(node, *cores)
    shell = SyncShell(node)
    server = NodeServer(shell)
    try:
        yield await server.start()
    finally:
        await server.close()
        shell.close()
        node.close()


async def answers(url: str, message: bytes) -> list[bytes]:
    """What the node answers EVE to ``message``: the canonical bytes of every message it sends
    up to the answer to a sentinel load of an unknown id (which is left out)."""
    async with RawPeer(url) as peer:
        await peer.authenticate(EVE)
        await peer.send_raw(message)
        sentinel = covalue_id("sentinel")
        await peer.send(Load(sentinel, KnownState(sentinel, False, {})))
        got = await peer.recv_until(lambda m: isinstance(m, Known) and m.id == sentinel)
        return [codec.encode(m.to_obj()) for m in got[:-1]]


#: For each message type, the messages about E that an attacker sends.
def messages_about(e: Target) -> dict[str, list[Message]]:
    fake_head = (1, b"\x01" * 32)
    owner_sid = next(iter(e.owner_chunk.new))
    chunk = e.eve_chunk.new[EVE_SESSION]
    return {
        "load": [
            Load(e.id, KnownState(e.id, False, {})),
            Load(e.id, KnownState(e.id, True, {owner_sid: fake_head})),
        ],
        "known": [Known(e.id, KnownState(e.id, True, {owner_sid: fake_head}))],
        "content": [
            Content(e.id, None, {}),
            Content(e.id, e.header, {}),
            e.eve_chunk,
            Content(e.id, e.header, e.eve_chunk.new),
            e.owner_chunk,
            Content(e.id, e.header, e.eve_tombstone),
        ],
        "done": [Done(e.id)],
        "deleted": [Deleted(e.id, e.eve_tombstone)],
        "correction": [Correction(e.id, EVE_SESSION, 0, tuple(chunk.txs), dict(chunk.sigs), (chunk.end, b"\x02" * 32))],
        "error": [Error("invalid_message", "about E", e.id)],
        "admin": [Admin(1, "list")],
        "kv_list": [KvList(1, EVE.account_id)],
        "kv_keys": [KvKeys(1, EVE.account_id, [])],
        "kv_get": [KvGet(1, EVE.account_id, e.id), KvGet(2, ALICE.account_id, e.id)],
        "kv_cas": [
            KvCas(1, EVE.account_id, e.id, 0, {"present": e.id}),
            KvCas(2, ALICE.account_id, e.id, 0, {"present": 1}),
        ],
        "kv_watch": [KvWatch(1, EVE.account_id, e.id)],
        "kv_value": [KvValue(1, EVE.account_id, e.id, 0, None)],
        "kv_result": [KvResult(1, "conflict", 0, None)],
        "kv_event": [KvEvent(1, EVE.account_id, e.id, 1, {"present": e.id})],
        "kv_error": [KvError(1, "kv_bad_key", e.id)],
        "admin_result": [AdminResult(1, True, {"id": e.id})],
        "recover_open": [
            RecoverOpen(1, b"x" * 16, RecoveryScope(covalues=(e.id,))),
            RecoverOpen(2, b"y" * 16, RecoveryScope(group=e.header.ruleset.group)),  # type: ignore[union-attr]
        ],
        "recover_next": [RecoverNext(b"x" * 16, 1)],
        "recover_page": [RecoverPage(1, b"x" * 16, 0, (RecoverItem(e.id, e.header),), True)],
        "challenge": [Challenge("node", b"n" * 32, 1, "x", ())],
        "hello": [Hello(EVE.account_id, "client", b"s" * 64, "x", ())],
        "welcome": [Welcome(False)],
    }


WORLD = build_world()
#: E alive, and E deleted (its sessions purged: the replay is its tombstone).
VARIANTS: dict[str, CoValueCore] = {"alive": WORLD.alive, "deleted": WORLD.gone}


def test_every_message_type_is_enumerated() -> None:
    e = target_of(WORLD.alive)
    assert set(messages_about(e)) == set(MESSAGE_TYPES)


def cases() -> list[tuple[str, str, int]]:
    e = target_of(WORLD.alive)
    return [(v, t, i) for v in VARIANTS for t, ms in sorted(messages_about(e).items()) for i in range(len(ms))]


@pytest.mark.parametrize(("variant", "kind", "index"), cases())
def test_unreadable_covalue_answers_like_an_unknown_id(variant: str, kind: str, index: int) -> None:
    """The same bytes sent to a node holding E (unreadable to EVE) and to one that never had
    it get byte-identical answers."""
    core = VARIANTS[variant]
    message = messages_about(target_of(core))[kind][index]
    frame = encode_frame(OP, [message])

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        async with node_with(WORLD.group, core) as holds, node_with(WORLD.group) as lacks:
            return await answers(holds, frame), await answers(lacks, frame)

    from_holder, from_stranger = run(scenario)
    assert from_holder == from_stranger, (
        f"{kind} #{index} tells EVE that {variant} E exists:\n"
        f"  node holding it: {[codec.decode(m) for m in from_holder]}\n"
        f"  node without it: {[codec.decode(m) for m in from_stranger]}"
    )
