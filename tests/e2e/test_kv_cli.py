"""``kintsugi kv get|cas|watch`` against real ``kintsugi node serve`` processes (CAS slots
over the network, docs/protocol.md "CAS slots").

The documented shapes with and without ``--json``; the exit codes (0 done, 1 refused or
unreachable, 2 usage, 3 a lost ``cas``), clear messages and never a traceback; ``watch``
printing one line per change made by another process, then stopping cleanly on SIGTERM or
SIGINT, and ending with exit 1 when its node goes away. The node is always a real process;
the command is a real subprocess where its process matters (exit codes, signals, stdout of
a long-running watch), and runs in this process otherwise (``main``), which costs no
interpreter start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from engine.cli.main import main
from engine.crypto import AccountKey
from engine.ids import AccountID
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present, Slot, Tombstone
from engine.net.kv_client import RemoteKV
from tests.e2e.conftest import Account, NodeProcess, Proc, Processes
from tests.util import run_cli, timeout, wait_until

#: Units a watch may take to start, and to exit after a signal.
WATCH_UNITS = 15


class Kv:
    """Runs ``kintsugi kv …`` in this process (``main``) and checks what every run must
    show: the exit code expected, one JSON document with ``--json``, no traceback."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def run(self, *args: str, expect: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        try:
            code = main(["kv", *args])
        finally:  # main configures logging for a process: give this one its own back
            root.handlers[:] = handlers
            root.setLevel(level)
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err, err
        assert code == expect, f"exit {code}, not {expect}:\n{out}\n{err}"
        return out, err

    def json(self, *args: str, expect: int = 0) -> dict[str, Any]:
        out, _err = self.run(*args, "--json", "--timeout", str(timeout(10)), expect=expect)
        data: dict[str, Any] = json.loads(out)
        return data


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Kv:
    return Kv(capsys)


def subprocess_kv(*args: str, expect: int = 0) -> tuple[str, str]:
    """``kintsugi kv ARGS`` as a real process: (stdout, stderr), the exit code ``expect``."""
    result = run_cli("kv", *args, "--timeout", str(timeout(20)), check=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == expect, f"exit {result.returncode}, not {expect}:\n{result.stdout}\n{result.stderr}"
    return result.stdout, result.stderr


def watch(processes: Processes, label: str, url: str, prefix: str, key: Path, *extra: str) -> Proc:
    """A started ``kintsugi kv watch … --json``, once it says on stderr that it watches."""
    proc = processes.spawn(label, ["-m", "engine.cli", "kv", "watch", url, prefix, "--key", str(key), "--json", *extra])
    try:
        wait_until(lambda: "watching" in proc.stderr or proc.proc.poll() is not None, WATCH_UNITS, f"{label} to start")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{proc.describe()}") from None
    assert proc.proc.poll() is None, proc.describe()
    return proc


def test_get_and_cas_print_the_slot_and_exit_with_the_documented_codes(
    node: NodeProcess, accounts: Any, cli: Kv
) -> None:
    alice: Account = accounts("alice")
    key = str(alice.key)
    absent = cli.json("get", node.url, "lists/todo", "--key", key)
    assert absent == {"namespace": alice.id, "key": "lists/todo", "generation": 0, "state": "absent"}

    out, _err = subprocess_kv(
        "cas", node.url, "lists/todo", "--expect", "0", "--value", '{"items": ["milk"]}', "--key", key, "--json"
    )
    assert json.loads(out) == {
        "namespace": alice.id,
        "key": "lists/todo",
        "generation": 1,
        "state": "present",
        "value": {"items": ["milk"]},
        "status": "stored",
    }
    out, _err = subprocess_kv(
        "cas", node.url, "lists/todo", "--expect", "0", "--value", '"mine"', "--key", key, expect=3
    )
    assert out.strip() == 'conflict: expected gen 0, the slot is at lists/todo  gen 1  present  {"items": ["milk"]}'
    lost = cli.json("cas", node.url, "lists/todo", "--expect", "0", "--value", '"mine"', "--key", key, expect=3)
    assert (lost["status"], lost["generation"], lost["expected"], lost["value"]) == (
        "conflict",
        1,
        0,
        {"items": ["milk"]},
    )
    deleted = cli.json("cas", node.url, "lists/todo", "--expect", "1", "--delete", "--key", key)
    assert (deleted["status"], deleted["generation"], deleted["state"]) == ("stored", 2, "tombstone")
    assert deleted["deleted_by"] == alice.id
    assert cli.json("get", node.url, "lists/todo", "--key", key)["deleted_at"] == deleted["deleted_at"]

    out, _err = cli.run("get", node.url, "lists/todo", "--key", key)
    assert out.startswith("lists/todo  gen 2  tombstone  (deleted at ")
    out, _err = cli.run("cas", node.url, "lists/todo", "--expect", "2", "--value", "[1, 2]", "--key", key)
    assert out.strip() == "stored: lists/todo  gen 3  present  [1, 2]"
    # a key may hold "://": it is a key, not a URL
    assert cli.json("get", node.url, "ws://not-a-url", "--key", key)["state"] == "absent"


def test_refusals_by_the_node_are_clear_messages_with_exit_1(
    node: NodeProcess, accounts: Any, admin: Account, cli: Kv
) -> None:
    alice, bob = accounts("alice"), accounts("bob")
    cli.json("cas", node.url, "secret", "--expect", "0", "--value", '"alice only"', "--key", str(alice.key))

    # another account's slot: refused for Bob, readable by the node's admin
    _out, err = subprocess_kv("get", node.url, "secret", "--namespace", alice.id, "--key", str(bob.key), expect=1)
    assert err.splitlines()[-1] == f"kintsugi: {bob.id} may not read namespace {alice.id!r} [kv_access_denied]"
    refused = cli.json("get", node.url, "secret", "--namespace", alice.id, "--key", str(bob.key), expect=1)
    assert refused["error"] == {"code": "kv_access_denied", "detail": f"{bob.id} may not read namespace {alice.id!r}"}
    watched = cli.json("watch", node.url, "", "--namespace", alice.id, "--key", str(bob.key), expect=1)
    assert watched["error"]["code"] == "kv_access_denied"
    as_admin = cli.json("get", node.url, "secret", "--namespace", alice.id, "--key", str(admin.key))
    assert (as_admin["namespace"], as_admin["value"]) == (alice.id, "alice only")
    # checked before connecting, by the node's own rules
    big = json.dumps("x" * MAX_SLOT_VALUE_SIZE)
    too_big = cli.json("cas", node.url, "big", "--expect", "0", "--value", big, "--key", str(bob.key), expect=1)
    assert too_big["error"]["code"] == "kv_value_too_large"
    assert cli.json("get", node.url, "k" * 1025, "--key", str(bob.key), expect=1)["error"]["code"] == "kv_bad_key"
    assert cli.json("get", node.url, "big", "--key", str(bob.key))["state"] == "absent"


def test_bad_input_is_a_clear_message_with_a_documented_exit_code(cli: Kv, tmp_path: Path) -> None:
    """A bad URL, ``--value`` or ``--expect`` is usage (exit 2); an unreadable key file is
    ``key_file`` and a port nothing listens on ``connection_refused`` (exit 1)."""
    key = tmp_path / "bob.key"
    AccountKey.generate().save(key)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once closed
    k = str(key)
    usage = [
        ("cas", url, "k", "--expect", "0", "--value", "{not json", "--key", k),
        ("cas", url, "k", "--expect", "-1", "--value", "1", "--key", k),
        ("cas", url, "k", "--expect", "0", "--key", k),
        ("cas", url, "k", "--expect", "0", "--value", "1", "--delete", "--key", k),
        ("get", "http://127.0.0.1:1", "k", "--key", k),
        ("get", "ws://127.0.0.1:99999", "k", "--key", k),
        ("get", "ws://", "k", "--key", k),
        ("watch", "not-a-url", "p", "--key", k),
        ("get", url, "k"),
    ]
    for args in usage:
        assert cli.json(*args, expect=2)["error"]["code"] == "usage", args
    _out, err = cli.run("cas", url, "k", "--expect", "0", "--value", "{not json", "--key", k, expect=2)
    assert err.startswith("kintsugi: --value is not JSON")
    _out, err = subprocess_kv("get", "http://127.0.0.1:1", "k", "--key", k, expect=2)
    assert "is not a node URL" in err

    assert cli.json("get", url, "k", "--key", str(tmp_path / "nope.key"), expect=1)["error"]["code"] == "key_file"
    loose = tmp_path / "loose.key"
    loose.write_bytes(key.read_bytes())
    os.chmod(loose, 0o644)
    assert cli.json("get", url, "k", "--key", str(loose), expect=1)["error"]["code"] == "key_file"
    _out, err = cli.run("get", url, "k", "--key", k, expect=1)
    last = err.splitlines()[-1]
    assert last.startswith("kintsugi: nothing accepts connections at") and last.endswith("[connection_refused]")


def write(url: str, key: Path, *changes: tuple[str, int, Slot]) -> list[str]:
    """CAS each ``(key, expected generation, slot)`` through the client library (this test
    process); the outcomes."""

    async def run() -> list[str]:
        async with await RemoteKV.open(url, AccountKey.load(key), timeout=timeout(20)) as remote:
            return [type(await remote.cas(k, gen, slot)).__name__ for k, gen, slot in changes]

    return asyncio.run(asyncio.wait_for(run(), timeout(30)))


def test_watch_prints_each_change_by_other_processes_and_stops_cleanly(processes: Processes) -> None:
    """One line per change under the prefix, in order, none for other keys or lost races;
    SIGTERM stops it with exit 0, and so does SIGINT (Ctrl+C)."""
    node = processes.node("node1")
    alice = processes.account("alice")
    write(node.url, alice.key, ("lists/old", 0, Present("before")))
    watcher = watch(processes, "watch", node.url, "lists/", alice.key)
    ctrl_c = watch(processes, "ctrl-c", node.url, "", alice.key)
    assert "(1 keys now)" in watcher.stderr

    outcomes = write(
        node.url,
        alice.key,
        ("lists/a", 0, Present({"n": 1})),
        ("other", 0, Present(1)),  # not under the prefix
        ("lists/a", 0, Present(2)),  # lost: no change
        ("lists/old", 1, Tombstone(0, AccountID(alice.id))),
        ("lists/zz", 0, Present("last")),
    )
    assert outcomes == ["Stored", "Stored", "Conflict", "Stored", "Stored"]
    watcher.wait_for(lambda line: line.get("key") == "lists/zz", WATCH_UNITS, "the last change")
    rows = [(line["key"], line["generation"], line["state"], line.get("value")) for line in watcher.lines]
    assert rows == [
        ("lists/a", 1, "present", {"n": 1}),
        ("lists/old", 2, "tombstone", None),
        ("lists/zz", 1, "present", "last"),
    ]
    assert {line["namespace"] for line in watcher.lines} == {alice.id}
    ctrl_c.wait_for(lambda line: line.get("key") == "lists/zz", WATCH_UNITS, "the last change")
    assert [line["key"] for line in ctrl_c.lines] == ["lists/a", "other", "lists/old", "lists/zz"]

    watcher.proc.send_signal(signal.SIGTERM)
    ctrl_c.proc.send_signal(signal.SIGINT)
    for proc in (watcher, ctrl_c):
        assert proc.wait_exit(WATCH_UNITS) == 0, proc.describe()
        assert "Traceback" not in proc.stderr


def test_watch_ends_with_exit_1_when_its_node_goes_away(processes: Processes) -> None:
    node = processes.node("node1")
    alice = processes.account("alice")
    watcher = watch(processes, "watch", node.url, "", alice.key)
    assert node.stop() == 0
    assert watcher.wait_exit(WATCH_UNITS) == 1, watcher.describe()
    assert "[connection_lost]" in watcher.stderr and "Traceback" not in watcher.stderr
    assert watcher.lines[-1]["error"]["code"] == "connection_lost"
