"""Real processes over loopback WebSockets: nodes, clients, and the fixtures that reap them.

- :class:`Proc` runs a child process whose stdout is JSON lines; reader threads collect its
  lines and its stderr, so a chatty child never blocks on a full pipe, and a test waits for a
  specific line with a bounded wait (a multiple of ``KINTSUGI_TEST_UNIT``).
- :class:`NodeProcess` is ``python -m engine.cli -v node serve --store … --ready-file …``: it
  is ready once the ready file holds its ``ws://`` URL, and it stops on SIGTERM with exit code
  0 within :data:`NODE_STOP_UNITS` (SIGKILL only as a last resort, and the test fails then).
- :class:`ClientProc` is ``tests/e2e/_client.py`` (see its docstring for the steps).
- :class:`ScriptedNode` is a node played by the test process (a hostile one, or one whose
  timing the test controls), speaking the real handshake and wire protocol.

Every child is started through a fixture that kills (if needed) and reaps it in ``finally``.
Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine import __version__
from engine.crypto import AccountKey, verify_signature
from engine.protocol.frames import OP, decode_frame, encode_frame
from engine.protocol.limits import DEFAULT_LIMITS, FEATURES, PROTOCOL_VERSION
from engine.protocol.messages import NONCE_SIZE, Challenge, Hello, Message, Welcome, hello_message
from tests.util import python_child, run_cli, timeout, wait_until

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "_client.py"

#: Units a node may take to start listening, and to stop after SIGTERM.
NODE_START_UNITS = 15
NODE_STOP_UNITS = 10
#: Units any one client step may take (also the client's own bound on each of its waits).
STEP_UNITS = 20


class Proc:
    """A child process printing JSON lines on stdout (anything else is kept as ``{"raw"}``)."""

    def __init__(self, label: str, args: list[str], *, stdin: bool = False) -> None:
        self.label = label
        self.args = args
        self.proc = python_child(args, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.lines: list[dict[str, Any]] = []
        #: when each line arrived (``time.monotonic()``), in step with ``lines``
        self.arrivals: list[float] = []
        self._stderr: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._threads = [
            threading.Thread(target=self._read_stdout, name=f"{label}-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"{label}-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                data = {"raw": line.rstrip("\n")}
            with self._cond:
                self.lines.append(data if isinstance(data, dict) else {"raw": data})
                self.arrivals.append(time.monotonic())
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self._stderr.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._cond:
            return "".join(self._stderr)

    def describe(self) -> str:
        with self._cond:
            out = "\n".join(json.dumps(line)[:500] for line in self.lines[-20:])
        head = f"--- {self.label} (pid {self.pid}, exit {self.proc.poll()})"
        return f"{head} stdout:\n{out}\n--- stderr:\n{self.stderr[-4000:]}"

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], units: float, what: str) -> dict[str, Any]:
        """The first line (ever printed) matching ``pred``; fails after ``units`` or at EOF."""
        deadline = time.monotonic() + timeout(units)
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        reason = "it exited" if self._eof else f"{timeout(units):.1f}s passed"
        raise AssertionError(f"{self.label}: {reason} before {what}\n{self.describe()}")

    def arrived(self, line: dict[str, Any]) -> float:
        """When ``line`` (one returned by :meth:`wait_for`) arrived."""
        with self._cond:
            return next(t for seen, t in zip(self.lines, self.arrivals, strict=True) if seen is line)

    def wait_exit(self, units: float) -> int:
        """The exit code; fails (after killing it) when it does not exit within ``units``."""
        try:
            return self.proc.wait(timeout(units))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.label} did not exit within {timeout(units):.1f}s\n{self.describe()}") from None

    def kill(self) -> None:
        """SIGKILL (a real crash) and reap."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def reap(self) -> None:
        """Kill if still running, wait, and collect the reader threads."""
        self.kill()
        for thread in self._threads:
            thread.join(timeout(5))
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class NodeProcess(Proc):
    """``kintsugi node serve`` on a store directory; ``url`` once the ready file names it."""

    def __init__(
        self,
        label: str,
        workdir: Path,
        *,
        admins: tuple[str, ...] = (),
        upstreams: tuple[str, ...] = (),
        key: Path | None = None,
    ) -> None:
        self.store = workdir / label
        self.ready_file = workdir / f"{label}.ready"
        args = ["-m", "engine.cli", "-v", "node", "serve", "--store", str(self.store)]
        args += ["--host", "127.0.0.1", "--port", "0", "--ready-file", str(self.ready_file)]
        for admin in admins:
            args += ["--admin", admin]
        for upstream in upstreams:
            args += ["--upstream", upstream]
        if key is not None:
            args += ["--key", str(key)]
        self.key_file = key or self.store / "node.key"
        super().__init__(label, args)
        self.url = ""

    def wait_ready(self) -> str:
        """The URL, once the ready file names it; fails if the node exits or takes too long."""
        try:
            wait_until(
                lambda: self.ready_file.exists() or self.proc.poll() is not None,
                NODE_START_UNITS,
                f"{self.label}'s ready file",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe()}") from None
        if not self.ready_file.exists():
            raise AssertionError(f"{self.label} exited before it was ready\n{self.describe()}")
        self.url = self.ready_file.read_text().strip()
        assert self.url.startswith("ws://127.0.0.1:"), self.url
        return self.url

    @property
    def account(self) -> str:
        return AccountKey.load(self.key_file).account_id

    def inspect(self, key: Path) -> dict[str, Any]:
        """``kintsugi inspect ws://… --key KEY --json``, parsed."""
        result = run_cli("inspect", self.url, "--key", str(key), "--json", "--timeout", str(timeout(STEP_UNITS)))
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def stop(self) -> int:
        """SIGTERM, and the exit code within :data:`NODE_STOP_UNITS` (killed after that)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(NODE_STOP_UNITS)


class ClientProc(Proc):
    """``tests/e2e/_client.py``: the command-line steps run first, then :meth:`do` sends more."""

    def __init__(
        self,
        label: str,
        *,
        key: Path,
        store: Path,
        url: str | None = None,
        session: str | None = None,
        steps: tuple[str, ...] = (),
        interactive: bool = True,
        options: tuple[str, ...] = (),
    ) -> None:
        args = [str(CLIENT), "--key", str(key), "--store", str(store), "--instance", label, *options]
        args += ["--timeout", str(timeout(STEP_UNITS))]
        if url is not None:
            args += ["--url", url]
        if session is not None:
            args += ["--session", session]
        if interactive:
            args.append("--interactive")
        args += ["--", *steps]
        super().__init__(label, args, stdin=interactive)
        self.steps = steps
        self.seq = len(steps)
        self.sent: dict[int, str] = {}

    def reply(self, seq: int, units: float = STEP_UNITS + 5) -> dict[str, Any]:
        """The reply to step number ``seq``; fails when that step failed."""
        what = f"step {seq} ({self.steps[seq] if seq < len(self.steps) else self.sent.get(seq, '?')})"
        msg = self.wait_for(lambda m: m.get("seq") == seq, units, what)
        if "error" in msg:
            raise AssertionError(f"{self.label}: {what} failed: {msg['error']}\n{self.describe()}")
        return msg

    def send(self, *words: str) -> int:
        """Start one more step (after the command-line ones, which must have succeeded);
        returns its number for :meth:`reply`."""
        assert self.proc.stdin is not None
        for seq in range(len(self.steps)):
            self.reply(seq)
        line = shlex.join(words)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        seq, self.seq = self.seq, self.seq + 1
        self.sent[seq] = line
        return seq

    def do(self, *words: str, units: float = STEP_UNITS + 5) -> dict[str, Any]:
        """Run one more step and return its reply."""
        return self.reply(self.send(*words), units)

    def report(self, covalue: str) -> dict[str, Any]:
        data: dict[str, Any] = self.do("report", covalue)["report"]
        return data

    def quit(self, units: float = 10) -> None:
        """End the step loop; the client closes cleanly and must exit 0."""
        if self.proc.stdin is not None and self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
        code = self.wait_exit(units)
        assert code == 0, f"{self.label} exited {code}\n{self.describe()}"


Reply = list[tuple[float, Message]]


class ScriptedNode:
    """A node played by the test process: its own asyncio loop in a thread, on 127.0.0.1.

    It completes the handshake like the real node — ``challenge`` with a 32-byte nonce, checks
    the ``hello`` signature, ``welcome{admin: false}`` — then, for every message a peer sends,
    sends what ``respond(message)`` returns: ``(delay in seconds, message)`` pairs. It records
    every message received, the peer's ``hello``, and when (``time.monotonic()``) it sent
    each message.
    """

    def __init__(self, respond: Callable[[Message], Reply], name: str = "scripted-node") -> None:
        self.respond = respond
        self.name = name
        self.received: list[Message] = []
        self.sent: list[tuple[float, Message]] = []
        self.hello: Hello | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.url = ""
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def __enter__(self) -> ScriptedNode:
        self.thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout(5))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout(10))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout(5))
            self.loop.close()

    async def _start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def _stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _decode(data: str | bytes) -> list[Message]:
        raw = data if isinstance(data, bytes) else data.encode()
        return decode_frame(raw, max_size=DEFAULT_LIMITS.max_frame_size, max_messages=10_000).messages

    async def _send_later(self, ws: ServerConnection, delay: float, message: Message) -> None:
        if delay:
            await asyncio.sleep(delay)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(encode_frame(OP, [message]))
            self.sent.append((time.monotonic(), message))

    async def _handle(self, ws: ServerConnection) -> None:
        nonce = os.urandom(NONCE_SIZE)
        await ws.send(encode_frame(OP, [Challenge(self.name, nonce, PROTOCOL_VERSION, __version__, FEATURES)]))
        (hello,) = self._decode(await ws.recv())
        if not (
            isinstance(hello, Hello) and verify_signature(hello.account, hello_message(nonce, self.name), hello.sig)
        ):
            await ws.close(4401, "auth_failed")
            return
        self.hello = hello
        await ws.send(encode_frame(OP, [Welcome(False)]))
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                for message in self._decode(data):
                    self.received.append(message)
                    for delay, reply in [] if self._closing else self.respond(message):
                        task = asyncio.get_running_loop().create_task(self._send_later(ws, delay, reply))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)


@dataclass(frozen=True)
class Account:
    name: str
    key: Path
    id: str


class Processes:
    """Accounts, nodes and clients of one story, under one work directory.

    :meth:`close` stops every node with SIGTERM (the last started first) and reports those
    that did not exit 0 in time or left their ready file; every process is reaped whatever
    happens. Every node accepts the ``admin`` account as admin (for ``kintsugi inspect
    ws://``) and the ``node-link`` account, which a chained node runs as.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: list[NodeProcess] = []
        self.clients: list[ClientProc] = []
        self.others: list[Proc] = []
        self._accounts: dict[str, Account] = {}
        (workdir / "keys").mkdir(parents=True, exist_ok=True)
        (workdir / "stores").mkdir(parents=True, exist_ok=True)

    def account(self, name: str) -> Account:
        """A key file for ``name`` (the same one on every call)."""
        if name not in self._accounts:
            key = AccountKey.generate()
            path = self.workdir / "keys" / f"{name}.key"
            key.save(path)
            self._accounts[name] = Account(name, path, key.account_id)
        return self._accounts[name]

    def node(self, label: str, *, upstreams: tuple[str, ...] = (), key: Path | None = None) -> NodeProcess:
        admins = (self.account("admin").id, self.account("node-link").id)
        node = NodeProcess(label, self.workdir, admins=admins, upstreams=upstreams, key=key)
        self.nodes.append(node)
        node.wait_ready()
        return node

    def chained_node(self, upstream: NodeProcess, label: str = "node2") -> NodeProcess:
        """A node started with ``--upstream upstream.url``, running as ``node-link``.

        An upstream serves a node link like any peer — a CoValue only to members of its owner
        group, or to an admin — so the linking node's account must be an admin upstream for it
        to relay everything; ``node-link`` is one on every node of the story.
        """
        return self.node(label, upstreams=(upstream.url,), key=self.account("node-link").key)

    def client(self, label: str, account: Account, *, store: Path | None = None, **kwargs: Any) -> ClientProc:
        """A started client process (store ``stores/<label>`` unless given)."""
        client = ClientProc(label, key=account.key, store=store or self.workdir / "stores" / label, **kwargs)
        self.clients.append(client)
        return client

    def spawn(self, label: str, args: list[str]) -> Proc:
        """Any other child process (``python args…``), reaped at the end."""
        proc = Proc(label, args)
        self.others.append(proc)
        return proc

    def close(self) -> None:
        failures = []
        try:
            for proc in [*self.clients, *self.others]:
                proc.reap()
            for node in reversed(self.nodes):
                try:
                    code = node.stop()
                except AssertionError as exc:
                    failures.append(str(exc))
                    continue
                if code != 0:
                    failures.append(f"{node.label} exited {code} after SIGTERM\n{node.describe()}")
                elif node.ready_file.exists():
                    failures.append(f"{node.label} left its ready file behind")
        finally:
            for proc in [*self.clients, *self.others, *self.nodes]:
                proc.reap()
        assert not failures, "\n".join(failures)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.close()


@pytest.fixture
def accounts(processes: Processes) -> Callable[[str], Account]:
    """``accounts(name)``: a key file for ``name`` (the same one on every call)."""
    return processes.account


@pytest.fixture
def admin(processes: Processes) -> Account:
    """The operator account every node of a test accepts as admin (``--admin``)."""
    return processes.account("admin")


@pytest.fixture
def node_factory(processes: Processes) -> Callable[..., NodeProcess]:
    """``node_factory(label, upstreams=(), key=None)``: a started node, stopped at teardown
    with SIGTERM (it must exit 0 in time; SIGKILL only as a last resort)."""
    return processes.node


@pytest.fixture
def node(processes: Processes) -> NodeProcess:
    """One node on a fresh store: ``node.url``, ``node.store``."""
    return processes.node("node1")


@pytest.fixture
def chained_node(processes: Processes) -> Callable[[NodeProcess], NodeProcess]:
    """``chained_node(upstream)``: a second node started with ``--upstream upstream.url``."""
    return processes.chained_node


@pytest.fixture
def clients(processes: Processes) -> Callable[..., ClientProc]:
    """``clients(label, account, url=…, session=…, steps=…, store=…)``: a started client
    process, reaped at teardown."""
    return processes.client
