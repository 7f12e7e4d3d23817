"""Shared test helpers: one scalable time unit, bounded waits, child processes.

Every wait in the suite is a multiple of ``KINTSUGI_TEST_UNIT`` seconds (env var, default
1.0); raise it on a slow machine instead of editing timeouts. Polling in ``wait_until`` is a
bounded wait for a condition, not sleep-and-hope.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

UNIT = float(os.environ.get("KINTSUGI_TEST_UNIT", "1.0"))
REPO = Path(__file__).resolve().parent.parent


def timeout(units: float) -> float:
    """``units`` test units, in seconds."""
    return units * UNIT


def wait_until(cond: Callable[[], bool], timeout_units: float, what: str = "condition") -> None:
    """Return as soon as ``cond()`` is true; fail the test after ``timeout_units`` units."""
    deadline = time.monotonic() + timeout(timeout_units)
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout(timeout_units):.1f}s waiting for {what}")
        time.sleep(0.002)


def python_child(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    """Start ``python args...`` with the repository importable; stdout/stderr piped as text."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,  # type: ignore[arg-type]
    )


def run_cli(*args: str, check: bool = True, timeout_units: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the ``kintsugi`` CLI in a real subprocess."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout(timeout_units),
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kintsugi {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


#: The lowest port a test server is given a fixed port from (below the system's ephemeral range).
FIXED_PORT_LOW = 10_000


def free_port() -> int:
    """A free loopback port for a server that must come back on the same port (a node restarted
    after SIGKILL). Taken below the system's ephemeral range, so no client connection's source
    port takes it between this call and the server's bind (a port the system hands out, bound
    and closed, could be)."""
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32_768
    for _attempt in range(100):
        port = random.randint(FIXED_PORT_LOW, max(FIXED_PORT_LOW + 1, low - 1))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")
