"""Hostile integers against a real NodeServer on 127.0.0.1 (issue 12, point 2).

A CBOR bignum of thousands of digits, placed where a decoder quotes a value in its error (the
envelope's ``v``, an unexpected key of a message, an admin ``op``, a header ``type``), used to
escape as Python's integer-string conversion error: close 1011 before the handshake, 1000
after it, a traceback in the log, and no charge to the malformed-frame budget. Now the decoder
refuses the bignum (``error{integer_too_large}``), the frame costs one from the budget, the
budget's end closes with 4400, nothing is logged at error level, and other peers are served.
"""

from __future__ import annotations

import logging
from typing import Any

import cbor2
import pytest

from engine.crypto import AccountKey
from engine.protocol.limits import CloseCode, Limits
from engine.protocol.messages import Error
from tests.engine.net.conftest import RawPeer, errors_in, probing, run, serving
from tests.engine.net.test_hostile import still_served

HUGE = 10**5000
BUDGET = 3

#: Frames that put HUGE where an error message used to quote it.
HOSTILE_FRAMES: dict[str, dict[str, Any]] = {
    "envelope version": {"v": HUGE, "k": "op", "msg": {"t": "done", "id": "co_zx"}},
    "unexpected key": {"v": 1, "k": "op", "msg": {"t": "done", "id": "co_zx", HUGE: 1}},
    "admin op": {"v": 1, "k": "op", "msg": {"t": "admin", "rid": 1, "op": HUGE, "args": {}}},
    "header type": {
        "v": 1,
        "k": "op",
        "msg": {
            "t": "content",
            "id": "co_zx",
            "header": {
                "type": HUGE,
                "ruleset": {"type": "unsafeAllowAll"},
                "meta": None,
                "uniqueness": 1,
                "createdAt": 1,
            },
            "new": {},
        },
    },
}


def hostile(name: str) -> bytes:
    return bytes(cbor2.dumps(HOSTILE_FRAMES[name]))


def no_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, f"logged: {[r.getMessage() for r in bad]}"


@pytest.mark.parametrize("name", sorted(HOSTILE_FRAMES))
def test_hostile_integer_before_the_handshake_is_refused_with_4400(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """A hostile integer in place of the hello: error{integer_too_large}, close 4400."""
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with serving() as served, probing(served.url) as probe, RawPeer(served.url) as peer:
            await peer.read_challenge()
            await peer.send_raw(hostile(name))
            code, got = await peer.expect_close()
            assert code == CloseCode.PROTOCOL_ERROR
            assert errors_in(got) == ["integer_too_large"]
            await probe.round_trip()

    run(scenario)
    no_error_logs(caplog)


def test_hostile_integers_after_the_handshake_cost_the_malformed_budget(caplog: pytest.LogCaptureFixture) -> None:
    """Each hostile frame gets error{integer_too_large} and the connection reads on, until the
    frame over the malformed budget closes it with 4400; another peer is served throughout."""
    caplog.set_level(logging.INFO)
    names = sorted(HOSTILE_FRAMES)

    async def scenario() -> None:
        async with serving(Limits(max_malformed_frames=BUDGET)) as served, probing(served.url) as probe:
            async with RawPeer(served.url) as peer:
                await peer.authenticate(AccountKey.generate())
                for i in range(BUDGET):
                    await peer.send_raw(hostile(names[i % len(names)]))
                    reply = await peer.recv()
                    assert isinstance(reply, Error) and reply.code == "integer_too_large"
                    await still_served(peer)
                    await probe.round_trip()
                await peer.send_raw(hostile(names[BUDGET % len(names)]))
                code, got = await peer.expect_close()
                assert code == CloseCode.PROTOCOL_ERROR
                assert errors_in(got) == ["integer_too_large"]
            await probe.round_trip()

    run(scenario)
    no_error_logs(caplog)
