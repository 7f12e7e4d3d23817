"""The ``kintsugi`` command on bad input and in daily use (issue 13, point 6), as a real
subprocess: every bad input gets a message, exit code 2 (usage) or 1 (failure), and never a
traceback; URLs are never opened as paths; ``--json`` works before and after the command,
errors included; ``node serve`` logs, takes a TOML config for its limits, and fails at once
when it cannot listen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from engine.cli.limits_config import limits_from
from engine.cli.main import build_parser
from engine.protocol.limits import DEFAULT_LIMITS, CloseCode, Limits
from tests.e2e.conftest import Proc
from tests.util import REPO, free_port, run_cli, timeout, wait_until

#: Units a command that must fail at once may take (interpreter start-up included).
FAST_UNITS = 10


def cli(*args: str, env: dict[str, str] | None = None, units: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m engine ARGS`` (the ``kintsugi`` entry), whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})),
        timeout=timeout(units),
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Assert ``result`` exited ``code`` with every one of ``words`` on stderr and no
    traceback; returns stderr."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    return result.stderr


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The ``{"error": …}`` document a failed ``--json`` command printed on stdout."""
    document = json.loads(result.stdout)
    assert set(document) == {"error"}, document
    error: dict[str, str] = document["error"]
    return error


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo store (read only by the tests that use it)."""
    store = tmp_path_factory.mktemp("demo") / "demo"
    run_cli("demo", "--headless", "--store", str(store), "--edits", "300", "--json")
    return store


@pytest.fixture
def foreign_sqlite(tmp_path: Path) -> Path:
    """An SQLite database of some other program."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    return path


def tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


# -- node serve: arguments checked before anything is created ------------------------------------


def test_serve_refuses_a_port_out_of_range_as_a_usage_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    refused(cli("node", "serve", "--store", str(store), "--port", "99999"), 2, "--port", "99999", "0 to 65535")
    result = cli("--json", "node", "serve", "--store", str(store), "--port", "99999")
    refused(result, 2)
    assert json_error(result)["code"] == "usage" and "99999" in json_error(result)["detail"]
    assert not store.exists()


def test_serve_on_an_address_of_no_local_interface_fails_at_once_and_creates_nothing(tmp_path: Path) -> None:
    """192.0.2.1 (TEST-NET-1) is nobody's address here: binding fails at once, before the
    store or the node key is created; a name under .invalid never resolves."""
    store = tmp_path / "store"
    started = time.monotonic()
    result = cli("node", "serve", "--store", str(store), "--host", "192.0.2.1", units=FAST_UNITS)
    refused(result, 2, "--host 192.0.2.1", "not an address of this machine")
    assert time.monotonic() - started < timeout(FAST_UNITS)
    assert not store.exists()
    refused(cli("node", "serve", "--store", str(store), "--host", "nowhere.invalid"), 2, "does not resolve")
    assert not store.exists()


def test_serve_on_a_port_in_use_fails_with_listen_failed(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("--json", "node", "serve", "--store", str(tmp_path / "s"), "--port", str(port))
    refused(result, 1, f"port {port}")
    assert json_error(result)["code"] == "listen_failed"


def test_serve_refuses_a_store_that_is_a_file_or_not_a_kintsugi_store(tmp_path: Path, foreign_sqlite: Path) -> None:
    """A plain file where a store directory is wanted is a usage error; another program's
    SQLite database is refused and left exactly as it was (no Kintsugi tables added)."""
    plain = tmp_path / "notes"
    plain.write_text("not a store")
    refused(cli("node", "serve", "--store", str(plain)), 2, "is a file", "store directory")
    assert plain.read_text() == "not a store"
    before = foreign_sqlite.read_bytes()
    refused(cli("node", "serve", "--store", str(foreign_sqlite)), 1, "not a Kintsugi store")
    assert foreign_sqlite.read_bytes() == before and tables(foreign_sqlite) == {"notes"}
    refused(cli("node", "serve", "--store", "ws://127.0.0.1:9"), 2, "not a store")


def test_serve_refuses_an_upstream_that_is_not_a_node_url_at_start(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for upstream in ("http://127.0.0.1:9", "127.0.0.1:9", "ws://127.0.0.1:http"):
        refused(cli("node", "serve", "--store", str(store), "--upstream", upstream, units=FAST_UNITS), 2, "--upstream")
    assert not store.exists()


# -- URLs, stores and what is not one --------------------------------------------------------------


def test_a_url_with_a_port_that_is_not_a_number_is_a_usage_error(tmp_path: Path) -> None:
    key = tmp_path / "me.key"
    run_cli("account", "new", "--out", str(key))
    for extra in ((), ("--key", str(key))):
        result = cli("inspect", "ws://127.0.0.1:notaport", *extra, units=FAST_UNITS)
        refused(result, 2, "'notaport' is not a number")


def test_verify_of_a_node_url_says_what_verify_takes(tmp_path: Path) -> None:
    """Not "no store at ws:/…": the URL is never made a path."""
    result = cli("verify", "ws://127.0.0.1:1234", "--json")
    stderr = refused(result, 2, "ws://127.0.0.1:1234", "store directory", "bundle", "kintsugi inspect")
    assert "ws:/127" not in stderr and "no store at" not in stderr
    assert json_error(result)["code"] == "usage"
    refused(cli("inspect", "http://example.invalid/store"), 2, "http://", "neither a node")


def test_verify_and_inspect_say_a_file_is_not_a_kintsugi_store(tmp_path: Path, foreign_sqlite: Path) -> None:
    """Another program's SQLite database, a text file and an empty file: "not a Kintsugi
    store" and why, never "no such table" or storage_bug."""
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not SQLite\n" * 10)
    empty = tmp_path / "empty.db"
    empty.touch()
    for path, why in ((foreign_sqlite, "without Kintsugi's schema"), (text, "not an SQLite"), (empty, "empty")):
        for command in ("verify", "inspect"):
            result = cli(command, str(path), "--json")
            stderr = refused(result, 1, "not a Kintsugi store", why)
            assert "no such table" not in stderr and "storage_bug" not in stderr
            assert json_error(result)["code"] == "store_not_found"
    assert tables(foreign_sqlite) == {"notes"}


def test_a_name_that_does_not_resolve_is_not_connection_refused(tmp_path: Path) -> None:
    """``.invalid`` names never resolve (RFC 6761): ``host_not_found``, at once; a port where
    nothing listens stays ``connection_refused``."""
    key = tmp_path / "me.key"
    run_cli("account", "new", "--out", str(key))
    result = cli("inspect", "ws://kintsugi-node.invalid:8787", "--key", str(key), "--json", units=FAST_UNITS)
    stderr = refused(result, 1, "cannot resolve", "kintsugi-node.invalid")
    assert "refused" not in stderr and "nothing accepts connections" not in stderr
    assert json_error(result)["code"] == "host_not_found"
    port = free_port()
    closed = cli("inspect", f"ws://127.0.0.1:{port}", "--key", str(key), "--json", "--timeout", "5", units=FAST_UNITS)
    refused(closed, 1)
    assert json_error(closed)["code"] == "connection_refused"


# -- --json anywhere, usage errors exit 2 --------------------------------------------------------


def test_json_is_taken_before_or_after_the_command(demo_store: Path, tmp_path: Path) -> None:
    before, after = cli("--json", "verify", str(demo_store)), cli("verify", str(demo_store), "--json")
    assert before.returncode == after.returncode == 0
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["ok"] is True
    missing = str(tmp_path / "nowhere")
    for args in (("--json", "verify", missing), ("verify", missing, "--json")):
        result = cli(*args)
        refused(result, 1, "no store at")
        assert json_error(result)["code"] == "store_not_found"
    usage = cli("--json", "verify")
    refused(usage, 2, "required")
    assert json_error(usage)["code"] == "usage"


def test_usage_errors_exit_2_everywhere(tmp_path: Path) -> None:
    """argparse's errors and the commands' own usage errors alike, text or JSON."""
    key = tmp_path / "me.key"
    run_cli("account", "new", "--out", str(key))
    cases = [
        (("inspect", "ws://127.0.0.1:9"), "needs --key"),
        (("bench", "--workload", "no-such-workload"), "unknown workload"),
        (("demo",), "--headless"),
        (("recover", "plan", "ws://127.0.0.1:9", "--from", "ws://127.0.0.1:9", "--key", str(key)), "takes a store"),
        (("node", "serve", "--store", str(tmp_path / "s"), "--admin", "not-an-account"), "--admin"),
        (("no-such-command",), "invalid choice"),
    ]
    for args, words in cases:
        refused(cli(*args), 2, words)
        result = cli("--json", *args)
        refused(result, 2)
        assert json_error(result)["code"] == "usage", args


# -- what the text output says ---------------------------------------------------------------------


def corrupt_one_session(store: Path) -> str:
    """Flip a bit inside a stored transaction; the session it belongs to."""
    conn = sqlite3.connect(store / "kintsugi.db")
    sid, session, start, txs = conn.execute(
        "SELECT b.sid, s.session, b.start, b.txs FROM blocks b JOIN sessions s ON s.sid = b.sid "
        "WHERE s.count > 20 ORDER BY b.sid LIMIT 1"
    ).fetchone()
    damaged = bytearray(txs)
    damaged[-2] ^= 0x01
    conn.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", (bytes(damaged), sid, start))
    conn.commit()
    conn.close()
    return str(session)


@pytest.fixture
def corrupt_store(tmp_path: Path) -> tuple[Path, str]:
    store = tmp_path / "demo"
    run_cli("demo", "--headless", "--store", str(store), "--edits", "300", "--json")
    return store, corrupt_one_session(store)


def test_inspect_text_shows_head_and_verified_and_never_none(corrupt_store: tuple[Path, str]) -> None:
    store, session = corrupt_store
    report = json.loads(run_cli("inspect", str(store), "--json").stdout)
    text = run_cli("inspect", str(store)).stdout
    assert "None" not in text
    assert "head" in text and "verified" in text
    lines: dict[tuple[str, str], str] = {}
    covalue = ""
    for line in text.splitlines():
        if line.startswith("co_z"):
            covalue = line.split()[0]
        elif covalue and line.startswith("    ") and "_session_" in line:
            lines[covalue, line.split()[-1]] = line
    for cv in report["covalues"]:
        for s in cv["sessions"]:
            line = lines[cv["id"], s["id"]]
            if s["verified"]:
                assert s["head"][:16] in line and " yes " in line and str(s["count"]) in line
            else:
                assert s["id"] == session and "CORRUPT" in line and " - " in line


def test_verify_names_a_corrupt_session_once(corrupt_store: tuple[Path, str]) -> None:
    store, session = corrupt_store
    result = cli("verify", str(store))
    refused(result, 1)
    assert "CORRUPT" in result.stdout
    assert result.stdout.count(session) == 1, result.stdout


# -- node serve: logs, config ----------------------------------------------------------------------


@pytest.fixture
def node_procs() -> Iterator[list[Proc]]:
    """Node processes started by a test, stopped (SIGTERM, exit 0) or killed at its end."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.reap()


def serve(procs: list[Proc], tmp_path: Path, *args: str) -> tuple[Proc, str]:
    """``kintsugi node serve`` on a new store with ``args``; the process and its URL."""
    ready = tmp_path / f"ready-{len(procs)}"
    store = tmp_path / f"store-{len(procs)}"
    proc = Proc("node", ["-m", "engine", "node", "serve", "--store", str(store), "--ready-file", str(ready), *args])
    procs.append(proc)
    wait_until(lambda: ready.exists() or proc.proc.poll() is not None, 15, "the node's ready file")
    assert ready.exists(), proc.describe()
    return proc, ready.read_text().strip()


def test_serve_logs_its_url_at_info_in_text_or_json(tmp_path: Path, node_procs: list[Proc]) -> None:
    """By default (no -v) the listening URL is logged at INFO; ``--log-format json`` makes
    every stderr line one JSON object; ``--log-level WARNING`` leaves the INFO lines out."""
    text, url = serve(node_procs, tmp_path)
    wait_until(lambda: f"listening on {url}" in text.stderr, 10, "the listening line")
    line = next(line for line in text.stderr.splitlines() if f"listening on {url}" in line)
    assert " INFO " in line

    as_json, url = serve(node_procs, tmp_path, "--log-format", "json")
    wait_until(lambda: f"listening on {url}" in as_json.stderr, 10, "the listening line")
    as_json.proc.send_signal(15)
    assert as_json.wait_exit(10) == 0
    records = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert any(r["level"] == "INFO" and url in r["message"] for r in records)
    assert any(r["message"] == "node stopping" for r in records)

    quiet, url = serve(node_procs, tmp_path, "--log-level", "WARNING")
    quiet.proc.send_signal(15)
    assert quiet.wait_exit(10) == 0
    assert url not in quiet.stderr and "INFO" not in quiet.stderr


def closed_after_challenge(url: str) -> tuple[int | None, float]:
    """Connect, read the challenge, never say hello: the close code and seconds it took."""
    started = time.monotonic()
    with connect(url, open_timeout=timeout(10)) as ws:
        ws.recv(timeout=timeout(10))  # the challenge
        try:
            ws.recv(timeout=timeout(20))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), time.monotonic() - started
    raise AssertionError("the node sent a second frame instead of closing")


def test_config_file_sets_limits_and_flags_win(tmp_path: Path, node_procs: list[Proc]) -> None:
    """``handshake_timeout`` from the file closes a silent peer with 4408 quickly; with the
    file saying 600 s and the flag 0.5 s, the flag wins."""
    quick = tmp_path / "quick.toml"
    quick.write_text("[limits]\nhandshake_timeout = 0.5\nmax_frame_size = 65536\n")
    _, url = serve(node_procs, tmp_path, "--config", str(quick))
    code, seconds = closed_after_challenge(url)
    assert code == CloseCode.HANDSHAKE_TIMEOUT and seconds < timeout(10)

    slow = tmp_path / "slow.toml"
    slow.write_text("[limits]\nhandshake_timeout = 600\n")
    _, url = serve(node_procs, tmp_path, "--config", str(slow), "--handshake-timeout", "0.5")
    code, seconds = closed_after_challenge(url)
    assert code == CloseCode.HANDSHAKE_TIMEOUT and seconds < timeout(10)


def test_config_file_mistakes_are_usage_errors_naming_the_key(tmp_path: Path) -> None:
    store = tmp_path / "store"
    cases = {
        "[limits]\nmax_frame_sise = 10\n": "max_frame_sise",
        "[limits]\nmax_frame_size = 'big'\n": "max_frame_size",
        "[limits]\nmax_frame_size = 1.5\n": "max_frame_size",
        "[limits]\nrate_burst = true\n": "rate_burst",
        "[limits]\nping_interval = -1\n": "ping_interval",
        "[server]\nport = 1\n": "server",
        "max_frame_size = 10\n": "max_frame_size",
        "[limits\n": "not valid TOML",
    }
    for n, (body, key) in enumerate(cases.items()):
        config = tmp_path / f"bad-{n}.toml"
        config.write_text(body)
        refused(cli("node", "serve", "--store", str(store), "--config", str(config), units=FAST_UNITS), 2, key)
    refused(cli("node", "serve", "--store", str(store), "--config", str(tmp_path / "none.toml")), 2, "none.toml")
    refused(cli("node", "serve", "--store", str(store), "--lag-timeout", "soon"), 2, "--lag-timeout")
    assert not store.exists()


def test_every_limit_is_settable_by_file_and_by_flag(tmp_path: Path) -> None:
    """Each field of Limits: the file's value applies, and a flag overrides it."""
    fields = dataclasses.fields(Limits)
    from_file = {f.name: getattr(DEFAULT_LIMITS, f.name) * 2 for f in fields}
    config = tmp_path / "all.toml"
    config.write_text("[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in from_file.items()))
    base = ["node", "serve", "--store", str(tmp_path / "s"), "--config", str(config)]
    assert limits_from(build_parser().parse_args(base)) == Limits(**from_file)
    for f in fields:
        flag_value = getattr(DEFAULT_LIMITS, f.name) * 3
        args = build_parser().parse_args([*base, "--" + f.name.replace("_", "-"), str(flag_value)])
        assert limits_from(args) == dataclasses.replace(Limits(**from_file), **{f.name: flag_value})
    help_text = " ".join(cli("node", "serve", "--help").stdout.split())
    assert "[limits]" in help_text and "A flag wins over the file" in help_text
    assert all("--" + f.name.replace("_", "-") in help_text for f in fields)


def test_demo_connect_says_where_it_put_the_clients_keys_and_stores(tmp_path: Path, node_procs: list[Proc]) -> None:
    """Without --store the clients' files go to a new directory that is kept and named, in
    the text and in the JSON; every key and store named is there."""
    _, url = serve(node_procs, tmp_path)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = cli("demo", "--headless", "--connect", url, "--edits", "20", env={"TMPDIR": str(scratch)}, units=120)
    assert result.returncode == 0, result.stderr
    (workdir,) = scratch.iterdir()
    assert f"clients' files in {workdir.resolve()}" in result.stdout
    keys = sorted(workdir.glob("keys/*.key"))
    assert len(keys) == 3 and all(str(key.resolve()) in result.stdout for key in keys)
    assert str((workdir / "crashing-client").resolve()) in result.stdout

    kept = tmp_path / "kept"
    data = json.loads(
        run_cli("demo", "--headless", "--connect", url, "--edits", "20", "--store", str(kept), "--json").stdout
    )
    files = data["files"]
    assert files["workdir"] == str(kept.resolve())
    assert set(files["keys"]) == {"alice", "bob", "carol"} and all(Path(p).is_file() for p in files["keys"].values())
    assert files["stores"] and all(Path(p).is_dir() for p in files["stores"].values())


# -- inspect progress, entry points ----------------------------------------------------------------


@pytest.fixture(scope="module")
def large_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo store whose biggest CoMap holds more than 10,000 transactions."""
    store = tmp_path_factory.mktemp("large") / "demo"
    run_cli("demo", "--headless", "--store", str(store), "--edits", "15000", "--json")
    return store


def test_inspect_shows_progress_in_a_large_covalue_only_to_a_terminal_or_with_v(large_store: Path) -> None:
    quiet = cli("inspect", str(large_store))
    assert quiet.returncode == 0
    assert "loading" not in quiet.stderr and "loaded" not in quiet.stderr
    verbose = cli("-v", "inspect", str(large_store))
    assert verbose.returncode == 0
    assert "loading co_z" in verbose.stderr and "transactions in" in verbose.stderr
    assert "loaded co_z" in verbose.stderr
    assert verbose.stdout == quiet.stdout

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "inspect", str(large_store)],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        os.close(follower)
        follower = -1
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout(60)) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert b"loading co_z" in seen


def test_python_m_engine_works() -> None:
    """(``python -m inspector`` is tested with the inspector: the engine needs no Qt.)"""
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("kintsugi ")
    refused(cli(), 2, "COMMAND")


def test_a_long_load_inside_one_covalue_keeps_saying_it_is_loading(
    large_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """While one large CoValue loads (a single step of the store: read and verify every
    transaction), a line says every tick that it is still loading, then how long it took."""
    from engine.cli.output import Output
    from engine.cli.store import LoadProgress
    from engine.storage import open_store

    store = open_store(large_store, readonly=True)
    try:
        biggest = max(store.covalue_ids(), key=lambda row: sum(s.count for s in store.stored_sessions(row.id)))
        progress = LoadProgress(store, Output(as_json=False, verbose=True), tick=0.001)
        loaded = progress.load_covalue(biggest.id)
    finally:
        store.close()
    assert loaded is not None
    err = [line for line in capsys.readouterr().err.splitlines() if biggest.id in line]
    assert err[0].startswith(f"loading {biggest.id}: ")
    assert any(line.startswith(f"  still loading {biggest.id} (") for line in err[1:-1])
    assert err[-1].startswith(f"loaded {biggest.id} in ")
