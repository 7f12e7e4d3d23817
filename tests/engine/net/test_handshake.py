"""The challenge/hello handshake (DESIGN §6) from both sides, and what an authenticated
account may read afterwards (issue 3, "Read access").

Node side: a raw WebSocket peer speaks the handshake by hand. Client side: a real
:class:`SyncClient` against a small hand-written node (:func:`fake_node`).
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from websockets.asyncio.server import ServerConnection

from engine import __version__, codec
from engine.crypto import AccountKey, verify_signature
from engine.errors import UnsupportedVersion
from engine.ids import CoValueID
from engine.model.known_state import KnownState
from engine.net.client import AuthFailed, Backoff, SyncClient
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import BULK, OP, encode_frame
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION, CloseCode, Limits
from engine.protocol.messages import (
    NONCE_SIZE,
    Admin,
    AdminResult,
    Challenge,
    Content,
    Error,
    Hello,
    Known,
    Load,
    Message,
    Welcome,
    hello_message,
)
from tests.engine.factories import covalue_id
from tests.engine.net.conftest import (
    RawPeer,
    act_as_node,
    fake_node,
    node_state,
    probing,
    run,
    serving,
    syncing,
    until,
)
from tests.util import timeout

# -- node side -------------------------------------------------------------------------------


def test_challenge_announces_node_protocol_and_features() -> None:
    """The node opens with challenge{node, nonce, proto, version, features}: its name, a fresh
    32-byte nonce per connection, this build's protocol version, the engine version and its features."""

    async def scenario() -> None:
        async with serving() as srv:
            nonces = set()
            for _ in range(3):
                async with RawPeer(srv.url) as peer:
                    challenge = await peer.read_challenge()
                    assert challenge.node == srv.server.name
                    assert (challenge.proto, challenge.version) == (PROTOCOL_VERSION, __version__)
                    assert challenge.features == FEATURES
                    assert len(challenge.nonce) == NONCE_SIZE
                    nonces.add(challenge.nonce)
            assert len(nonces) == 3

    run(scenario)


def test_welcome_tells_whether_the_account_is_admin() -> None:
    """welcome{admin} is true for accounts named in admins and for the node's own account,
    false for everyone else."""

    async def scenario() -> None:
        node_key, admin, user = AccountKey.generate(), AccountKey.generate(), AccountKey.generate()
        async with serving(admins=[admin.account_id], key=node_key) as srv:
            for key, expected in ((user, False), (admin, True), (node_key, True)):
                async with RawPeer(srv.url) as peer:
                    welcome = await peer.authenticate(key)
                    assert welcome.admin is expected

    run(scenario)


def test_hello_in_a_bulk_frame_is_accepted() -> None:
    """The hello may come as a bulk frame holding just that one message."""

    async def scenario() -> None:
        async with serving() as srv, RawPeer(srv.url) as peer:
            key = AccountKey.generate()
            challenge = await peer.read_challenge()
            sig = key.sign(hello_message(challenge.nonce, challenge.node))
            await peer.send(Hello(key.account_id, "client", sig, "test", ()), kind=BULK)
            assert isinstance(await peer.recv(), Welcome)

    run(scenario)


def empty_known(cid: CoValueID) -> KnownState:
    return KnownState(cid, False, {})


def _other_first_frames(key: AccountKey) -> dict[str, bytes]:
    return {
        "load": encode_frame(OP, [Load(covalue_id("x"), empty_known(covalue_id("x")))]),
        "welcome": encode_frame(OP, [Welcome(True)]),
        "empty-bulk": encode_frame(BULK, []),
        "bad-hello-fields": codec.encode({"v": 1, "k": OP, "msg": {"t": "hello", "account": key.account_id}}),
    }


@pytest.mark.parametrize("first", ["load", "welcome", "empty-bulk", "bad-hello-fields"])
def test_anything_but_a_hello_first_is_auth_failed(first: str) -> None:
    """A first frame that is not one valid hello gets error{auth_failed} and close 4401; the
    peer is never attached to the sync layer."""

    async def scenario() -> None:
        async with serving() as srv, probing(srv.url) as probe:
            before = node_state(srv.node, ignore={probe.map_id})
            attached = len(srv.shell.connections)
            async with RawPeer(srv.url) as peer:
                await peer.read_challenge()
                await peer.send_raw(_other_first_frames(AccountKey.generate())[first])
                code, messages = await peer.expect_close()
                assert code == CloseCode.AUTH_FAILED
                assert [m.code for m in messages if isinstance(m, Error)] == ["auth_failed"]
                assert len(srv.shell.connections) == attached
            await probe.round_trip()
            assert node_state(srv.node, ignore={probe.map_id}) == before

    run(scenario)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\xff\x00", "invalid_cbor"),
        (codec.encode([1, 2]), "malformed_frame"),
        (encode_frame(BULK, [Welcome(True), Welcome(True)]), "malformed_frame"),
    ],
    ids=["garbage", "not-a-map", "two-messages"],
)
def test_undecodable_hello_frame_is_a_protocol_error(data: bytes, code: str) -> None:
    """A first frame that does not decode gets error{code} and close 4400."""

    async def scenario() -> None:
        async with serving() as srv, RawPeer(srv.url) as peer:
            await peer.read_challenge()
            await peer.send_raw(data)
            close, messages = await peer.expect_close()
            assert close == CloseCode.PROTOCOL_ERROR
            assert [m.code for m in messages if isinstance(m, Error)] == [code]

    run(scenario)


def test_hello_in_an_unknown_envelope_version_is_unsupported_version() -> None:
    """A peer speaking a newer protocol (its hello in envelope v=2) gets
    error{unsupported_version} and the documented close code for it, 4426 — not the generic
    4400 — so it can tell a version skew from a broken peer."""

    async def scenario() -> None:
        async with serving() as srv, RawPeer(srv.url) as peer:
            key = AccountKey.generate()
            challenge = await peer.read_challenge()
            sig = key.sign(hello_message(challenge.nonce, challenge.node))
            hello = Hello(key.account_id, "client", sig, "2.0.0", ())
            await peer.send_raw(codec.encode({"v": 2, "k": OP, "msg": hello.to_obj()}))
            close, messages = await peer.expect_close()
            assert [m.code for m in messages if isinstance(m, Error)] == ["unsupported_version"]
            assert close == CloseCode.UNSUPPORTED_VERSION

    run(scenario)


def test_replayed_hello_is_refused() -> None:
    """A hello captured from one connection is useless on another: each challenge has its own
    nonce, so the replayed signature gets auth_failed and 4401."""

    async def scenario() -> None:
        key = AccountKey.generate()
        async with serving() as srv:
            async with RawPeer(srv.url) as first:
                challenge = await first.read_challenge()
                captured = Hello(
                    key.account_id, "client", key.sign(hello_message(challenge.nonce, challenge.node)), "t"
                )
                await first.send(captured)
                assert isinstance(await first.recv(), Welcome)
            async with RawPeer(srv.url) as second:
                await second.read_challenge()
                await second.send(captured)
                close, messages = await second.expect_close()
                assert close == CloseCode.AUTH_FAILED
                assert [m.code for m in messages if isinstance(m, Error)] == ["auth_failed"]

    run(scenario)


# -- client side -------------------------------------------------------------------------------


async def client_against(url: str, node: LocalNode | None = None) -> tuple[SyncClient, SyncShell]:
    shell = SyncShell(node or LocalNode(AccountKey.generate()))
    client = SyncClient(shell, url, backoff=Backoff(initial=0.02, cap=0.05))
    client.start()
    return client, shell


async def stop(client: SyncClient, shell: SyncShell) -> None:
    await client.stop()
    shell.close()
    shell.node.close()


def test_client_signs_the_challenge_of_the_node_it_talks_to() -> None:
    """The client's hello names its account and role and signs this node's nonce and name;
    after welcome it is connected and loads what it holds."""
    seen: list[Hello] = []
    nonces: list[bytes] = []

    async def scenario() -> None:
        node = LocalNode(AccountKey.generate())
        doc = node.create_map(None)
        node.set(doc.id, "k", 1)
        node.flush()

        async def script(ws: ServerConnection) -> None:
            hello = await act_as_node(ws, name="the-node")
            seen.append(hello)
            await ws.recv()  # the client's load
            await ws.wait_closed()

        async with fake_node(script) as url:
            client, shell = await client_against(url, node)
            try:
                await asyncio.wait_for(client.connected.wait(), timeout(5))
                assert client.challenge is not None
                nonces.append(client.challenge.nonce)
                assert client.admin is False
            finally:
                await stop(client, shell)

    run(scenario)
    (hello,) = seen
    assert (hello.role, hello.version, hello.features) == ("client", __version__, FEATURES)
    assert verify_signature(hello.account, hello_message(nonces[0], "the-node"), hello.sig)
    assert not verify_signature(hello.account, hello_message(nonces[0], "other-node"), hello.sig)


def test_client_refuses_a_node_of_another_protocol_version() -> None:
    """A challenge announcing a newer proto makes the client give up that connection with
    unsupported_version before it says hello (and it retries later)."""
    hellos: list[Message] = []

    async def scenario() -> None:
        async def script(ws: ServerConnection) -> None:
            newer = Challenge("future-node", b"\0" * NONCE_SIZE, PROTOCOL_VERSION + 1, "9.0", ())
            await ws.send(encode_frame(OP, [newer]))
            async for data in ws:
                hellos.append(data)

        async with fake_node(script) as url:
            client, shell = await client_against(url)
            try:
                await until(lambda: isinstance(client.last_error, UnsupportedVersion), what="the client to refuse")
                assert not client.connected.is_set()
            finally:
                await stop(client, shell)

    run(scenario)
    assert hellos == []


def test_client_reports_auth_failed_and_retries() -> None:
    """error{auth_failed} in answer to the hello raises AuthFailed in the client (code
    auth_failed), which retries with backoff; it never counts as connected."""
    attempts = itertools.count()

    async def scenario() -> None:
        async def script(ws: ServerConnection) -> None:
            next(attempts)
            await act_as_node(ws, reply=Error("auth_failed", "who are you"))
            await ws.close(CloseCode.AUTH_FAILED)

        async with fake_node(script) as url:
            client, shell = await client_against(url)
            try:
                await until(lambda: client.backoff.failures >= 3, what="three failed attempts")
                assert isinstance(client.last_error, AuthFailed)
                assert client.last_error.code == "auth_failed"
                assert client.connections == 0
            finally:
                await stop(client, shell)

    run(scenario)


def test_client_gives_up_on_a_silent_node_after_the_handshake_timeout() -> None:
    """A node that accepts the WebSocket but never sends its challenge costs the client one
    handshake_timeout, then a retry."""

    async def scenario() -> None:
        async def script(ws: ServerConnection) -> None:
            await ws.wait_closed()

        async with fake_node(script) as url:
            shell = SyncShell(LocalNode(AccountKey.generate()), limits=Limits(handshake_timeout=timeout(0.2)))
            client = SyncClient(shell, url, backoff=Backoff(initial=0.02, cap=0.05))
            client.start()
            try:
                await until(lambda: client.backoff.failures >= 2, units=3, what="two timed-out handshakes")
                assert isinstance(client.last_error, TimeoutError)
            finally:
                await stop(client, shell)

    run(scenario)


# -- read access -------------------------------------------------------------------------------


async def answers_to(peer: RawPeer, covalue: CoValueID, rid: int) -> list[Message]:
    """Everything the node sends after ``load{covalue}`` up to its answer to a following
    ``admin list`` request: the node handles a connection's frames in order, so nothing that
    load caused can come later."""
    await peer.send(Load(covalue, empty_known(covalue)))
    await peer.send(Admin(rid, "list", {}))
    got = await peer.recv_until(lambda m: isinstance(m, AdminResult) and m.rid == rid)
    return got[:-1]


def test_read_access_follows_the_owner_group() -> None:
    """A node serves a group-owned CoValue only to members of the group: a non-member's load
    gets known{header: false} and no content — exactly what an unknown id gets — and the
    CoValue is missing from its listing; once the owner makes it a reader, the same load gets
    the content. An unsafeAllowAll CoValue is served to any authenticated account."""

    async def scenario() -> None:
        owner, stranger = AccountKey.generate(), AccountKey.generate()
        async with serving() as srv, syncing(srv.url, owner) as mine:
            group = mine.node.create_group()
            private = mine.node.create_map(group.id)
            public = mine.node.create_map(None)
            mine.node.set(private.id, "secret", 42)
            mine.node.set(public.id, "hello", "world")
            mine.node.flush()
            wanted = {cid: mine.node.known_state(cid) for cid in (group.id, private.id, public.id)}

            def synced() -> bool:
                return all(
                    srv.node.get_or_none(cid) is not None and srv.node.get(cid).known_state() == known
                    for cid, known in wanted.items()
                )

            await until(synced, what="the owner's CoValues to reach the node")

            async with RawPeer(srv.url) as peer:
                await peer.authenticate(stranger)
                nowhere = covalue_id("does-not-exist")
                as_unknown = await answers_to(peer, nowhere, 1)
                assert as_unknown == [Known(nowhere, empty_known(nowhere))]
                for rid, cid in enumerate((group.id, private.id), start=2):
                    got = await answers_to(peer, cid, rid)
                    assert got == [Known(cid, empty_known(cid))], f"a non-member was told about {cid}: {got}"
                listing = peer.frames[-1].messages[-1]
                assert isinstance(listing, AdminResult)
                assert set(listing.result["covalues"]) == {public.id}

                public_answer = await answers_to(peer, public.id, 10)
                assert any(isinstance(m, Content) and m.header is not None for m in public_answer)
                assert public_answer[-1] == Known(public.id, wanted[public.id])

                mine.node.set_role(group.id, stranger.account_id, "reader")
                mine.node.flush()
                wanted[group.id] = mine.node.known_state(group.id)
                await until(synced, what="the new role to reach the node")
                granted = await answers_to(peer, private.id, 11)
                # the role change alone may already push it (the peer asked for it before)
                contents = [m for m in granted if isinstance(m, Content) and m.id == private.id]
                assert contents and contents[0].header == private.header
                sent = sum(len(c.txs) for m in contents for c in m.new.values())
                assert sent == wanted[private.id].sessions[mine.node.session][0]
                assert granted[-1] == Known(private.id, wanted[private.id])

    run(scenario)


def test_admin_lists_and_reads_everything() -> None:
    """An account named in NodeServer(admins=...) gets every CoValue in its admin list and may
    load private ones; a plain account's list holds only what it may read."""

    async def scenario() -> None:
        owner, admin, plain = AccountKey.generate(), AccountKey.generate(), AccountKey.generate()
        async with serving(admins=[admin.account_id]) as srv, syncing(srv.url, owner) as mine:
            group = mine.node.create_group()
            private = mine.node.create_map(group.id)
            public = mine.node.create_map(None)
            mine.node.set(private.id, "secret", 1)
            mine.node.flush()
            everything = {group.id, private.id, public.id}
            await until(lambda: everything <= set(srv.node.covalue_ids()), what="the CoValues to reach the node")

            async with RawPeer(srv.url) as boss, RawPeer(srv.url) as nobody:
                assert (await boss.authenticate(admin)).admin is True
                assert (await nobody.authenticate(plain)).admin is False
                for peer, expected in ((boss, everything), (nobody, {public.id})):
                    await peer.send(Admin(7, "list", {}))
                    (result,) = [m for m in await peer.recv_until(lambda m: isinstance(m, AdminResult))]
                    assert isinstance(result, AdminResult) and result.ok
                    assert set(result.result["covalues"]) == expected
                got = await answers_to(boss, private.id, 8)
                assert any(isinstance(m, Content) and m.new for m in got)

    run(scenario)
