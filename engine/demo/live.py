"""The demo against a real node (``kintsugi demo --headless --connect URL``).

Runs the demo's clients over WebSockets and reports what the node detected and how the
owners repaired it:

- Alice creates a group (Bob writer, Carol reader), a "todo" CoMap with edits, "notes".
- Two tabs of Bob's app write one session id at once: the node keeps the copy it
  acknowledged first and corrects the other tab, whose edits move to a conflict session.
- A crash after acknowledgement, for real: a client process writes, its local store commit is
  held back (a disk slower than the network), the node acknowledges, and the process is
  SIGKILLed before it persists. It restarts on the same session — as a client restored from a
  backup, or one that predates session leases, would — and writes offline. On reconnect the
  node sees the fork, sends a correction, and the client keeps its offline edits in a
  conflict session and continues in a new session.
- Alice deletes a CoValue; the tombstone reaches the node.

The child process is ``python -m engine --kintsugi-demo-child ...`` (:data:`DEMO_CHILD_ARG`; the app
itself when frozen) and speaks JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.crypto import AccountKey
from engine.demo.held import HeldStore
from engine.errors import KintsugiError, ProtocolError
from engine.ids import CoValueID, SessionID, SessionKind, is_conflict_of, parse_session_id
from engine.model.header import OwnedByGroup
from engine.net.client import Backoff, SyncClient
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.storage.opener import open_store
from engine.sync.events import SyncEvent

#: Seconds any one step of the live demo may take.
STEP_TIMEOUT = 30.0

Progress = Callable[[str], None]


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ProtocolError(f"timed out waiting for {what}", code="timeout")
        await asyncio.sleep(0.01)


class LiveClient:
    """A LocalNode synced with the node, recording the sync events it sees."""

    def __init__(self, name: str, key: AccountKey, url: str, **node_args: Any) -> None:
        self.name = name
        store = node_args.pop("store", None)
        self.node = LocalNode.open(store, key, instance_id=name, **node_args)
        self.shell = SyncShell(self.node)
        self.events: list[SyncEvent] = []
        self.shell.event_listeners.append(self.events.append)
        self.url = url
        self.client = SyncClient(self.shell, url, backoff=Backoff(initial=0.2, cap=2.0))

    async def start(self) -> None:
        self.client.start()
        await asyncio.wait_for(self.client.connected.wait(), STEP_TIMEOUT)

    async def go_offline(self) -> None:
        await self.client.stop()
        self.client = SyncClient(self.shell, self.url, backoff=Backoff(initial=0.2, cap=2.0))

    def upstream_heads(self, covalue: CoValueID) -> dict[SessionID, tuple[int, bytes]]:
        """What the node said it holds (its own ``known``), not what we sent it."""
        for peer in self.shell.manager.peers.values():
            if peer.id.startswith("out:"):
                return peer.acked.get(covalue, {})
        return {}

    def node_answered(self, covalue: CoValueID) -> bool:
        return any(covalue in p.acked for p in self.shell.manager.peers.values() if p.id.startswith("out:"))

    async def acked(self, covalue: CoValueID) -> None:
        """Sign what is pending, then wait until the node's known state covers every session."""
        self.node.flush()
        core = self.node.get(covalue)
        await wait_for(
            lambda: all(self.upstream_heads(covalue).get(sid) == log.head() for sid, log in core.sessions.items()),
            f"{self.name}: node acknowledgement of {covalue}",
        )

    async def load(self, covalue: CoValueID) -> None:
        """Load ``covalue`` and wait until it, its owner group and the node's answer are here."""
        self.shell.manager.load(covalue)
        self.shell.dispatch()

        def ready() -> bool:
            core = self.node.get_or_none(covalue)
            if core is None or not self.node_answered(covalue):
                return False
            return not isinstance(core.header.ruleset, OwnedByGroup) or core.owner_group() is not None

        await wait_for(ready, f"{self.name}: {covalue} and its owner group")

    async def stop(self) -> None:
        await self.client.stop()
        self.shell.close()
        self.node.close()


async def run_live_demo(url: str, workdir: Path, *, edits: int = 300, say: Progress | None = None) -> dict[str, Any]:
    say = say or (lambda _m: None)
    started = time.perf_counter()
    keys = {name: AccountKey.generate() for name in ("alice", "bob", "carol")}
    (workdir / "keys").mkdir(parents=True, exist_ok=True)
    for name, key in keys.items():
        key.save(workdir / "keys" / f"{name}.key")
    report: dict[str, Any] = {"node": url, "accounts": {n: k.account_id for n, k in keys.items()}}

    say("Alice creates a group, CoMaps and edits")
    alice = LiveClient("alice", keys["alice"], url)
    await alice.start()
    group = alice.node.create_group(meta={"name": "Demo team"})
    alice.node.set_role(group.id, keys["bob"].account_id, "writer")
    alice.node.set_role(group.id, keys["carol"].account_id, "reader")
    todo = alice.node.create_map(group.id, meta={"name": "todo"})
    notes = alice.node.create_map(group.id, meta={"name": "notes"})
    with alice.node.batch():
        for i in range(edits):
            alice.node.set(todo.id, f"item-{i % 50}", {"title": f"task {i}", "done": i % 3 == 0})
    for cid in (group.id, todo.id, notes.id):
        await alice.acked(cid)
    report["group"] = group.id
    report["maps"] = {"todo": todo.id, "notes": notes.id}

    say("two tabs of Bob's app write one session id")
    tab1 = LiveClient("bob-tab-1", keys["bob"], url)
    shared = tab1.node.session
    tab2 = LiveClient("bob-tab-2", keys["bob"], url, session=shared)
    for tab in (tab1, tab2):
        await tab.start()
        await tab.load(notes.id)
    # Tab 2 loses its connection; both tabs write the same next index of the shared session.
    await tab2.go_offline()
    tab1.node.set(notes.id, "from-tab-1", "kept: the node acknowledged it first")
    await tab1.acked(notes.id)
    tab2.node.set(notes.id, "from-tab-2", "kept in a conflict session")
    await tab2.start()
    await wait_for(lambda: any(e.kind == "correction_applied" for e in tab2.events), "tab 2's correction")
    await tab2.acked(notes.id)
    report["two_tabs"] = {
        "session": shared,
        "corrected": [e.detail for e in tab2.events if e.kind == "correction_applied"],
        "tab_2_moved_to": tab2.node.session,
    }

    say("a client is killed after the node acknowledged what it never persisted")
    report["crash_after_ack"] = await _crash_after_ack(url, workdir, notes.id, say)

    say("Alice deletes a CoValue")
    scratch = alice.node.create_map(group.id, meta={"name": "scratch"})
    alice.node.set(scratch.id, "draft", "soon gone")
    await alice.acked(scratch.id)
    alice.node.delete_covalue(scratch.id)
    await alice.acked(scratch.id)
    report["deleted"] = [scratch.id]

    say("checking that everyone converged")
    notes_id = notes.id
    await wait_for(lambda: _conflict_sessions(alice.node, notes_id) >= 2, "Alice to receive both conflict sessions")
    notes_view = alice.node.get_map(notes.id)
    report["conflict_sessions"] = sorted(
        sid for sid in alice.node.get(notes.id).sessions if parse_session_id(sid).kind is SessionKind.CONFLICT
    )
    report["notes_seen_by_alice"] = sorted(notes_view)
    for client in (tab1, tab2, alice):
        await client.stop()
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _conflict_sessions(node: LocalNode, covalue: CoValueID) -> int:
    return sum(parse_session_id(s).kind is SessionKind.CONFLICT for s in node.get(covalue).sessions)


async def _crash_after_ack(url: str, workdir: Path, covalue: CoValueID, say: Progress) -> dict[str, Any]:
    store = workdir / "crashing-client"
    key_file = workdir / "keys" / "bob.key"
    first = _child(["write-then-hang", url, str(key_file), str(store), covalue, "3", "5"])
    try:
        line = await _read_json(first, "acked")
    finally:
        first.send_signal(signal.SIGKILL)
        _reap(first)
    say(f"killed the client after the node acknowledged {line['acked']} transactions; {line['persisted']} were on disk")
    second = _child(["reuse-session", url, str(key_file), str(store), covalue, line["session"], "2"])
    try:
        recovered = await _read_json(second, "recovered")
        await asyncio.get_running_loop().run_in_executor(None, second.wait, STEP_TIMEOUT)
    finally:
        if second.poll() is None:
            second.kill()
        _reap(second)
    return {"killed_after_ack": line, "after_restart": recovered["recovered"]}


def _reap(proc: subprocess.Popen[str]) -> None:
    """Wait for a child and close its pipes."""
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


#: First argument of a demo client process. The entries that recognise it (``python -m
#: engine`` and the inspector's, frozen or not) run ``main(["child", ...])`` of this module
#: with the arguments after it, and nothing else.
DEMO_CHILD_ARG = "--kintsugi-demo-child"


def _child(args: list[str]) -> subprocess.Popen[str]:
    """Start one demo client process, ``main(["child", *args])``, with its output piped.

    Always through :data:`DEMO_CHILD_ARG`, never ``-m MODULE``: in a frozen app (PyInstaller
    sets ``sys.frozen``) ``sys.executable`` is the app itself, whose entry dispatches the
    argument; otherwise it is Python, and ``python -m engine`` dispatches it the same way.
    """
    entry = [sys.executable] if getattr(sys, "frozen", False) else [sys.executable, "-m", "engine"]
    return subprocess.Popen(
        [*entry, DEMO_CHILD_ARG, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


async def _read_json(proc: subprocess.Popen[str], key: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + STEP_TIMEOUT
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), STEP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            detail = proc.stderr.read() if proc.stderr is not None else ""
            raise ProtocolError(f"demo client did not report {key} in time:\n{detail}", code="timeout") from None
        if not line:
            raise ProtocolError(f"demo client exited early: {proc.stderr.read() if proc.stderr else ''}", code="child")
        data: dict[str, Any] = json.loads(line)
        if key in data:
            return data
    raise ProtocolError(f"demo client never reported {key}", code="timeout")


# -- the child process -------------------------------------------------------------------------


async def _child_write_then_hang(
    url: str, key_file: str, store: str, covalue: str, *, persisted: int, unpersisted: int
) -> None:
    """Write ``persisted`` edits normally, then ``unpersisted`` more with the local commit held
    back; report once the node has acknowledged them all, then wait to be killed."""
    held = HeldStore(open_store(store, writer="crashing-client"))
    client = LiveClient("crashing-client", AccountKey.load(key_file), url, store=held)
    await client.start()
    cid = CoValueID(covalue)
    await client.load(cid)
    for i in range(persisted):
        client.node.set(cid, f"crash-test-{i}", "persisted before the crash")
    await client.acked(cid)
    held.hold()
    for i in range(persisted, persisted + unpersisted):
        client.node.set(cid, f"crash-test-{i}", "acknowledged by the node, lost locally")
    await client.acked(cid)
    total = client.node.get(cid).sessions[client.node.session].signed_count
    _emit({"acked": total, "persisted": persisted, "session": client.node.session})
    await asyncio.Event().wait()


async def _child_reuse_session(
    url: str, key_file: str, store: str, covalue: str, *, session: str, offline: int
) -> None:
    """Reopen the store on the old session id, write offline, then reconnect and recover."""
    node = LocalNode.open(store, AccountKey.load(key_file), instance_id="restarted-client", session=SessionID(session))
    cid = CoValueID(covalue)
    held = node.get(cid).sessions[SessionID(session)].signed_count
    for i in range(offline):
        node.set(cid, f"offline-after-restart-{i}", "written after the restart, before reconnecting")
    node.close()
    client = LiveClient("restarted-client", AccountKey.load(key_file), url, store=store, session=SessionID(session))
    await client.start()
    await client.load(cid)
    await wait_for(lambda: any(e.kind == "correction_applied" for e in client.events), "the node's correction")
    await client.acked(cid)
    core = client.node.get(cid)
    conflicts = sorted(s for s in core.sessions if is_conflict_of(s, session))
    _emit(
        {
            "recovered": {
                "store_held": held,
                "corrections": [e.detail for e in client.events if e.kind == "correction_applied"],
                "conflict_sessions": conflicts,
                "conflict_edits": sorted(k for k in client.node.get_map(cid) if k.startswith("offline-after-restart")),
                "now_writing": client.node.session,
            }
        }
    )
    await client.stop()


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m engine {DEMO_CHILD_ARG}")
    sub = parser.add_subparsers(dest="mode", required=True)
    child = sub.add_parser("child")
    child.add_argument("action", choices=["write-then-hang", "reuse-session"])
    child.add_argument("args", nargs="+")
    ns = parser.parse_args(argv)
    a = ns.args
    try:
        if ns.action == "write-then-hang":
            asyncio.run(_child_write_then_hang(a[0], a[1], a[2], a[3], persisted=int(a[4]), unpersisted=int(a[5])))
        else:
            asyncio.run(_child_reuse_session(a[0], a[1], a[2], a[3], session=a[4], offline=int(a[5])))
    except KintsugiError as exc:
        sys.stderr.write(f"demo client: {exc} [{exc.code}]\n")
        return 1
    return 0


def live_demo(url: str, workdir: Path | None, edits: int, say: Progress) -> dict[str, Any]:
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="kintsugi-live-demo-") as tmp:
            return asyncio.run(run_live_demo(url, Path(tmp), edits=edits, say=say))
    return asyncio.run(run_live_demo(url, workdir, edits=edits, say=say))


if __name__ == "__main__":
    sys.exit(main())
