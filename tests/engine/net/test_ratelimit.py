"""The per-connection rate limit applied to real connections by the shell (the token bucket
itself is tested without an event loop in tests/engine/protocol/test_ratelimit.py)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection

from engine.crypto import AccountKey
from engine.protocol.frames import OP, encode_frame
from engine.protocol.limits import Limits
from engine.protocol.messages import Done, Known
from tests.engine.factories import covalue_id
from tests.engine.net.conftest import RawPeer, act_as_node, fake_node, run, serving, syncing, until

# -- applied to connections ----------------------------------------------------------------


def test_peer_within_the_rate_is_never_limited() -> None:
    """A peer that stays under rate_per_second (with the burst absorbing jitter) keeps its
    connection and has every frame answered."""

    async def scenario() -> None:
        async with serving(Limits(rate_per_second=200, rate_burst=10)) as srv, RawPeer(srv.url) as peer:
            await peer.authenticate(AccountKey.generate())
            for i in range(30):
                answer = await peer.ask(covalue_id(f"paced-{i}"))
                assert isinstance(answer[-1], Known)
                await asyncio.sleep(0.02)
            assert len(srv.peers()) == 1

    run(scenario)


def test_limit_is_per_connection() -> None:
    """One connection spending its burst does not slow another connection of the same
    account."""

    async def scenario() -> None:
        key = AccountKey.generate()
        async with (
            serving(Limits(rate_per_second=1, rate_burst=5)) as srv,
            RawPeer(srv.url) as first,
            RawPeer(srv.url) as second,
        ):
            await first.authenticate(key)
            await second.authenticate(key)
            for i in range(4):
                await first.ask(covalue_id(f"first-{i}"))
            for i in range(4):
                await second.ask(covalue_id(f"second-{i}"))
            assert len(srv.peers()) == 2

    run(scenario)


def test_upstream_node_is_not_rate_limited_by_its_clients() -> None:
    """A client applies no rate limit to the node it connected to (its upstream): a burst of
    frames far over the client's own Limits leaves it connected."""
    burst = 200

    async def scenario() -> None:
        async def script(ws: ServerConnection) -> None:
            await act_as_node(ws)
            for i in range(burst):
                await ws.send(encode_frame(OP, [Done(covalue_id(f"d{i}"))]))
            await ws.wait_closed()

        async with (
            fake_node(script) as url,
            syncing(url, limits=Limits(rate_per_second=1, rate_burst=1)) as replica,
        ):
            await until(lambda: replica.shell.frames_received >= burst, what="all frames to be read")
            assert replica.client.connected.is_set()
            assert replica.client.connections == 1

    run(scenario)
