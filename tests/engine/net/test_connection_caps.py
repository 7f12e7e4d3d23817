"""The node's connection caps over real loopback WebSockets (issue 12, point 8).

Besides the per-account cap (4409 after the handshake), a node bounds what strangers can open
before authenticating: ``max_connections`` in all (one more: ``error{node_full}``, close 1013)
and ``max_connections_per_address`` from one IP address (one more:
``error{too_many_connections}``, close 4409). Connections still in their handshake count, a
closed connection frees its place, and the refusals do not disturb the peers already served.
Distinct addresses are distinct loopback addresses (127.0.0.2, 127.0.0.3, ...).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from engine.crypto import AccountKey
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.limits import CLOSE_TRY_AGAIN_LATER, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS, CloseCode
from tests.engine.net.conftest import RawPeer, errors_in, run, until
from tests.engine.net.test_hostile import still_served


@contextlib.asynccontextmanager
async def capped(total: int, per_address: int) -> AsyncIterator[tuple[NodeServer, str]]:
    node = LocalNode(AccountKey.generate())
    shell = SyncShell(node)
    server = NodeServer(shell, max_connections=total, max_connections_per_address=per_address)
    try:
        yield server, await server.start()
    finally:
        await server.close()
        shell.close()
        node.close()


def peer_from(url: str, host: int) -> RawPeer:
    """A raw peer connecting from 127.0.0.<host>."""
    return RawPeer(url, local_addr=(f"127.0.0.{host}", 0))


async def expect_refused(peer: RawPeer, code: int, error: str) -> None:
    got_code, got = await peer.expect_close()
    assert got_code == code
    assert errors_in(got) == [error]


def test_defaults_are_named() -> None:
    assert MAX_CONNECTIONS == 1000
    assert MAX_CONNECTIONS_PER_ADDRESS == 256
    assert CLOSE_TRY_AGAIN_LATER == 1013


def test_per_address_cap_refuses_with_4409_and_spares_other_addresses(caplog: pytest.LogCaptureFixture) -> None:
    """Two connections from 127.0.0.2 fill its cap (one still in its handshake); a third from
    there gets too_many_connections and 4409, while 127.0.0.3 is welcomed; closing one frees
    its place. The refusal is logged once."""
    caplog.set_level(logging.WARNING, logger="engine.net.server")

    async def scenario() -> None:
        async with capped(total=100, per_address=2) as (server, url):
            async with peer_from(url, 2) as first, peer_from(url, 2) as second:
                await first.authenticate(AccountKey.generate())
                await second.read_challenge()  # in its handshake: counts all the same
                for _ in range(2):
                    async with peer_from(url, 2) as third:
                        await expect_refused(third, CloseCode.TOO_MANY_CONNECTIONS, "too_many_connections")
                async with peer_from(url, 3) as other:
                    await other.authenticate(AccountKey.generate())
                    await still_served(other)
                await still_served(first)
                await second.close()
                await until(lambda: server.open_connections == 1, what="the closed connection to be freed")
                async with peer_from(url, 2) as again:
                    await again.authenticate(AccountKey.generate())
            assert server.refused["too_many_connections"] == 2

    run(scenario)
    lines = [r.getMessage() for r in caplog.records if "too_many_connections" in r.getMessage()]
    assert len(lines) == 1, lines


def test_global_cap_refuses_with_1013_whatever_the_address() -> None:
    """Three connections from three addresses fill a node capped at three; a fourth, from a
    fourth address, gets node_full and 1013; the three are still served."""

    async def scenario() -> None:
        async with capped(total=3, per_address=10) as (server, url):
            async with peer_from(url, 2) as a, peer_from(url, 3) as b, peer_from(url, 4) as c:
                for peer in (a, b, c):
                    await peer.authenticate(AccountKey.generate())
                async with peer_from(url, 5) as d:
                    await expect_refused(d, CLOSE_TRY_AGAIN_LATER, "node_full")
                for peer in (a, b, c):
                    await still_served(peer)
            await until(lambda: server.open_connections == 0, what="every connection to be freed")
            async with peer_from(url, 5) as e:
                await e.authenticate(AccountKey.generate())

    run(scenario)
