"""Reconnecting with exponential backoff (engine/net/client.py, DESIGN §6): 1 s doubling to a
30 s cap, reset after a successful connection, a warning per failure and an error from the
10th consecutive failure on. The real-socket tests use tiny delays (Backoff(initial, cap))."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field

import pytest

from engine.crypto import AccountKey
from engine.net.client import ESCALATE_AFTER_FAILURES, Backoff, SyncClient
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from tests.engine.net.conftest import run, serving, until

CLIENT_LOG = "engine.net.client"

# -- the policy ------------------------------------------------------------------------------


def test_default_delays_double_from_one_second_to_a_thirty_second_cap() -> None:
    """Default delays are 1, 2, 4, 8, 16, then 30 s for every further failure."""
    backoff = Backoff()
    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 30, 30, 30, 30]
    assert backoff.failures == 9


def test_reset_starts_over() -> None:
    """After reset() (a successful connection) the next delay is the initial one again."""
    backoff = Backoff()
    for _ in range(7):
        backoff.next_delay()
    backoff.reset()
    assert backoff.failures == 0
    assert [backoff.next_delay() for _ in range(3)] == [1, 2, 4]


def test_custom_initial_and_cap() -> None:
    """initial and cap are settings; the doubling is the same."""
    backoff = Backoff(initial=0.25, cap=1.5)
    assert [backoff.next_delay() for _ in range(5)] == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_thousands_of_failures_stay_at_the_cap() -> None:
    """A client failing for days never overflows: the delay stays at the cap."""
    backoff = Backoff()
    for _ in range(100_000):
        delay = backoff.next_delay()
    assert delay == 30


def test_escalation_threshold_is_ten() -> None:
    """The error level starts at the 10th consecutive failure."""
    assert ESCALATE_AFTER_FAILURES == 10


# -- a real client -----------------------------------------------------------------------------


@dataclass(slots=True)
class RecordingBackoff(Backoff):
    """A Backoff that remembers every delay it handed out."""

    delays: list[float] = field(default_factory=list)

    def next_delay(self) -> float:
        delay = Backoff.next_delay(self)
        self.delays.append(delay)
        return delay


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_failures_log_a_warning_each_and_an_error_from_the_tenth_on(caplog: pytest.LogCaptureFixture) -> None:
    """A client pointed at a closed port logs one WARNING per failed attempt for the first
    nine, then ERROR from the 10th consecutive failure on, waiting the backoff's delays."""
    backoff = RecordingBackoff(initial=0.001, cap=0.004)

    async def scenario() -> None:
        node = LocalNode(AccountKey.generate())
        shell = SyncShell(node)
        client = SyncClient(shell, f"ws://127.0.0.1:{closed_port()}", backoff=backoff)
        client.start()
        try:
            await until(lambda: backoff.failures >= 13, what="13 failed attempts")
        finally:
            await client.stop()
            shell.close()
            node.close()
        assert isinstance(client.last_error, OSError)
        assert client.connections == 0

    with caplog.at_level(logging.INFO, logger=CLIENT_LOG):
        run(scenario)
    failures = [r for r in caplog.records if r.name == CLIENT_LOG and "failed" in r.getMessage()]
    assert len(failures) >= 13
    levels = [r.levelno for r in failures]
    assert levels[:9] == [logging.WARNING] * 9
    assert set(levels[9:]) == {logging.ERROR}
    for n, record in enumerate(failures, start=1):
        assert f"(failure {n})" in record.getMessage()
    assert backoff.delays[:5] == [0.001, 0.002, 0.004, 0.004, 0.004]


def test_backoff_resets_after_a_successful_connection(caplog: pytest.LogCaptureFixture) -> None:
    """After failures, a connection that completes its handshake resets the backoff: the
    failure count goes back to zero, the next wait is the initial delay again, and the
    warning/error escalation starts over."""
    backoff = RecordingBackoff(initial=0.001, cap=0.002)

    async def scenario() -> None:
        port = closed_port()
        node = LocalNode(AccountKey.generate())
        shell = SyncShell(node)
        client = SyncClient(shell, f"ws://127.0.0.1:{port}", backoff=backoff)
        client.start()
        try:
            await until(lambda: backoff.failures >= 11, what="11 failed attempts (into the error level)")
            async with serving() as srv:
                await srv.server.close()  # free the port again; the node object stays usable
                url = await srv.server.start(port=port)
                assert url.endswith(f":{port}")
                await until(client.connected.is_set, what="the client to connect once the node is up")
                assert backoff.failures == 0
                assert client.connections == 1
                failed = len(backoff.delays)  # no delay is drawn while connected
            await until(lambda: backoff.failures >= 3, what="failures after the node went away")
            assert backoff.delays[failed] == 0.001, "the first wait after a success is the initial delay"
        finally:
            await client.stop()
            shell.close()
            node.close()

    with caplog.at_level(logging.INFO, logger=CLIENT_LOG):
        run(scenario)
    records = [r for r in caplog.records if r.name == CLIENT_LOG]
    connected = next(i for i, r in enumerate(records) if r.getMessage().startswith("connected to"))
    assert any(r.levelno == logging.ERROR for r in records[:connected])
    after = [r for r in records[connected + 1 :] if "failed" in r.getMessage()]
    assert after and {r.levelno for r in after} == {logging.WARNING}
    assert "(failure 1)" in after[0].getMessage() or "(failure 2)" in after[0].getMessage()
