"""``ws://`` targets against a node served in process (NodeServer + SyncShell + LocalNode on a
copy of the demo store, on the test's loop): an admin sees everything and stays live — CAS
values and histories with their lost races, the node's peer log, and forks the node itself
detected — other accounts see what they may read, and every way of failing to connect is a
message in the window, not an exception."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult
from engine.diagnostics.covalue_summary import Badge
from engine.diagnostics.kv_slots import timeline_summary
from engine.ids import CoValueID
from engine.kv.envelope import Present
from engine.kv.store import Conflict
from engine.net.server import NodeServer
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, encode_frame
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION
from engine.protocol.messages import NONCE_SIZE, Challenge, Error
from engine.sync.events import SyncEvent
from inspector.controller import Inspector
from inspector.models.roles import Role
from inspector.targets import RemoteTarget, TargetSpec
from inspector.views.main_window import MainWindow
from inspector.workers import WorkerPool
from tests.engine.net.conftest import ForkingTab
from tests.inspector.conftest import ms, run, wait_for
from tests.util import UNIT, free_port


@dataclass
class Served:
    node: LocalNode
    shell: SyncShell
    server: NodeServer
    url: str
    admin_key: Path
    keys: Path  # the demo accounts' key files


@pytest.fixture
def served(loop: asyncio.AbstractEventLoop, qtbot: QtBot, demo_copy: Path, tmp_path: Path) -> Iterator[Served]:
    """A node serving the demo copy as Alice (the group's admin, so the test can write), with a
    separate operator account as its admin. Request it before ``inspector``: it stops last."""
    admin = AccountKey.generate()
    admin_key = tmp_path / "admin.key"
    admin.save(admin_key)
    node = LocalNode.open(demo_copy, AccountKey.load(demo_copy / "keys" / "alice.key"), instance_id="served")
    shell = SyncShell(node)
    server = NodeServer(shell, name="test-node", admins=[admin.account_id])
    url = run(qtbot, server.start("127.0.0.1", 0))
    yield Served(node, shell, server, url, admin_key, demo_copy / "keys")
    run(qtbot, server.close())
    shell.close()
    node.close()


def open_node(qtbot: QtBot, inspector: Inspector, url: str, key: Path) -> dict[str, int]:
    with qtbot.waitSignal(inspector.loaded, timeout=ms(20)) as loaded:
        inspector.open_later(TargetSpec("node", url, str(key)))
    stats: dict[str, int] = loaded.args[0]
    return stats


def test_an_admin_sees_everything_and_stays_live(
    qtbot: QtBot, served: Served, inspector: Inspector, window: MainWindow, demo_store: DemoResult
) -> None:
    stats = open_node(qtbot, inspector, served.url, served.admin_key)
    assert stats == {"covalues": 4, "conflict_sessions": 1, "deleted": 1, "corrupt": 0, "forked": 0}
    assert not window.banner.isVisibleTo(window)
    opened = inspector.events.last("opened")
    assert opened is not None and opened["node"]["name"] == "test-node" and opened["node"]["admin"] is True
    assert window.node_label.text().startswith(f"node test-node · Kintsugi 0.1.0 · protocol {PROTOCOL_VERSION}")
    target = inspector.target
    assert isinstance(target, RemoteTarget)

    # CAS slots: listed for every namespace (admin), with their values (hidden until asked)
    alice = demo_store.accounts["alice"]
    assert inspector.kv_tree.key_index(alice, "prefs/recent").isValid()
    row = inspector.cas_slots.row_of(alice, "prefs/recent")
    generation, slot = served.node.kv.get(alice, "prefs/recent")
    assert isinstance(slot, Present)
    assert row >= 0 and inspector.cas_slots.index(row, 4).data().startswith("‹hidden · ")
    assert inspector.cas_slots.index(row, 4).data(Role.RAW) == slot.value
    assert inspector.cas_slots.index(row, 2).data(Role.RAW) == generation
    # ... and the selected slot's timeline, lost races included, as the node keeps it
    inspector.select_slot(alice, "prefs/recent")
    counts = inspector.cas_timeline.counts()
    assert counts == timeline_summary(served.node.kv.history(alice, "prefs/recent")) and counts["lost"] >= 1
    outcomes = [inspector.cas_timeline.index(r, 2).data() for r in range(inspector.cas_timeline.rowCount())]
    assert outcomes.count("lost (conflict)") == counts["lost"]
    assert "lost races (highlighted)" in window.cas.timeline_heading.text()

    # peers: the admin op lists this inspector's own connection, and the node's peer log
    wait_for(qtbot, lambda: inspector.peers.rowCount() >= 1)
    assert inspector.peers.peer(0).kind == "downstream" and inspector.peers.peer(0).admin  # type: ignore[union-attr]
    assert inspector.peer_log.available and window.peers.log_heading.text().startswith("Peer log (newest first): 1")
    assert [e.event for e in target.peer_log() or []] == ["up"]

    # view → engine: the lanes of a remote CoValue come from the replica
    notes = demo_store.maps["notes"]
    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        assert window.navigator.select_covalue(notes)
    assert inspector.lanes.rowCount() == 4

    # the replica's own sync manager reports a correction applied to its copy of a session
    # (as when the node repaired a fork): the CoValue is badged forked and the event listed
    assert target.shell is not None and target.recorder in target.shell.event_listeners
    session = inspector.lanes.index(0).data(Role.ID)
    event = SyncEvent("correction_applied", "out:1:" + served.url, CoValueID(notes), session, "diverged at 2")
    assert target.shell.manager.on_event is not None
    target.shell.manager.on_event(event)
    with qtbot.waitSignal(inspector.forkDetected, timeout=ms(5)):  # after the events throttle
        pass
    assert Badge.FORKED in inspector.covalues.index(inspector.covalues.row_of(notes), 0).data(Role.BADGES)
    inspector.navigator.set_badge(Badge.FORKED)
    assert [inspector.navigator.index(r, 0).data(Role.ID) for r in range(inspector.navigator.rowCount())] == [notes]
    inspector.navigator.set_badge(None)
    fork = inspector.events.last("fork")
    assert fork is not None and fork["kind"] == "correction_applied"
    assert (fork["covalue"], fork["session"]) == (notes, session)
    assert inspector.sync_events.row_of(notes, "correction_applied") == 0 and "forked" in window.chain.heading.text()

    # engine → view: a write on the node arrives through the replica and the throttle
    served.node.set(CoValueID(notes), "from-the-node", 42)
    wait_for(qtbot, lambda: inspector.content.row_of("from-the-node") >= 0)
    # a CoValue created on the node appears with the next periodic refresh
    fresh = served.node.create_map(demo_store.group, meta={"name": "made on the node"}).id
    wait_for(qtbot, lambda: inspector.covalues.row_of(fresh) >= 0, units=10)
    assert inspector.covalues.index(inspector.covalues.row_of(fresh), 0).data() == "made on the node"

    # a lost race on the node shows in the timeline of the slot being looked at (the target
    # reads that slot again on every poll)
    assert isinstance(served.node.kv.cas(alice, "prefs/recent", 0, Present(["stale"])), Conflict)
    wait_for(qtbot, lambda: inspector.cas_timeline.counts()["lost"] == counts["lost"] + 1)  # no reselect needed
    assert inspector.cas_timeline.index(inspector.cas_timeline.rowCount() - 1, 2).data() == "lost (conflict)"

    # a fork the node detects between itself and another client reaches the inspector as the
    # node's own event, with the node's time, and badges the CoValue forked
    tab = ForkingTab(served.node, served.url)
    forked = run(qtbot, tab.start())
    try:
        wait_for(qtbot, lambda: inspector.sync_events.row_of(forked, "fork_detected") >= 0)
        wait_for(qtbot, lambda: inspector.covalues.row_of(forked) >= 0)
        wait_for(
            qtbot,
            lambda: Badge.FORKED in inspector.covalues.index(inspector.covalues.row_of(forked), 0).data(Role.BADGES),
        )
    finally:
        run(qtbot, tab.stop())
    (timed,) = [t for t in target.recorder.recent() if t.event.kind == "fork_detected"]
    assert timed.origin == "node" and timed.event.session == tab.session and timed.event.peer.startswith("in:")
    node_event = next(e for e in served.shell.manager.events if e.kind == "fork_detected")
    assert timed.at_ms == node_event.at_ms == timed.event.at_ms and timed.at_ms <= timed.received_ms
    row = inspector.sync_events.row_of(forked, "fork_detected")
    assert inspector.sync_events.index(row, 0).data(Role.RAW) == node_event.at_ms
    assert [t.event.kind for t in target.recorder.recent() if t.origin == "node"] == [
        "fork_detected",
        "correction_sent",
    ]
    # the node's peer log shows the forking tab coming and going
    wait_for(qtbot, lambda: [e.event for e in target.peer_log() or []] == ["up", "up", "down"])

    run(qtbot, inspector.close())
    assert target.session is None
    wait_for(qtbot, lambda: not served.shell.connections)  # closed cleanly: the node saw it go
    assert [e.close_code for e in served.shell.peer_log if e.event == "down"] == [1000, 1000]


def test_other_accounts_see_what_they_may_read(
    qtbot: QtBot, served: Served, inspector: Inspector, window: MainWindow, tmp_path: Path
) -> None:
    bob_key = served.keys / "bob.key"
    bob = AccountKey.load(bob_key).account_id
    served.node.kv.cas(bob, "bob/theme", 0, Present("dark"))
    served.node.kv.cas(bob, "bob/theme", 0, Present("light"))  # a lost race
    stats = open_node(qtbot, inspector, served.url, bob_key)
    readable = {cid for cid in served.node.covalue_ids() if served.node.can_read(bob, cid)}
    assert stats["covalues"] == len(readable) and set(inspector.target.ids()) == readable  # type: ignore[union-attr]
    assert "not an admin" in window.node_label.text()
    assert not inspector.peers.available and "Only admin accounts" in window.peers.summary.text()
    assert not inspector.peer_log.available and inspector.target.peer_log() is None  # type: ignore[union-attr]
    assert [inspector.kv_tree.index(r, 0).data(Role.NAMESPACE) for r in range(inspector.kv_tree.rowCount())] == [bob]
    # Bob's own slots, with value and history; the node's events are for admins only
    row = inspector.cas_slots.row_of(bob, "bob/theme")
    assert row >= 0 and inspector.cas_slots.index(row, 4).data(Role.RAW) == "dark"
    inspector.select_slot(bob, "bob/theme")
    assert inspector.cas_timeline.counts() == {"attempts": 2, "stored": 1, "lost": 1}
    target = inspector.target
    assert isinstance(target, RemoteTarget) and target.event_cursor.epoch is None
    assert not [t for t in target.recorder.recent() if t.origin == "node"]

    mallory = tmp_path / "mallory.key"
    AccountKey.generate().save(mallory)
    stats = open_node(qtbot, inspector, served.url, mallory)
    assert stats["covalues"] == 0 and inspector.covalues.rowCount() == 0


class FakeNode:
    """A WebSocket server on the test's loop that fails the handshake one way: ``silent``
    (never sends a challenge), ``auth_failed`` (refuses the hello), ``proto2`` (a challenge
    for protocol 2)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.server: Server | None = None
        self.url = ""

    async def start(self) -> str:
        self.server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self.url = f"ws://127.0.0.1:{next(iter(self.server.sockets)).getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            if self.behaviour != "silent":
                proto = PROTOCOL_VERSION + 1 if self.behaviour == "proto2" else PROTOCOL_VERSION
                challenge = Challenge("fake-node", os.urandom(NONCE_SIZE), proto, "9.9.9", FEATURES)
                await ws.send(encode_frame(OP, [challenge]))
            if self.behaviour == "auth_failed":
                await ws.recv()
                await ws.send(encode_frame(OP, [Error("auth_failed", "this account is not accepted here")]))
                await ws.close(4401, "auth_failed")
            await ws.wait_closed()


def failure(qtbot: QtBot, inspector: Inspector, window: MainWindow, target: RemoteTarget) -> tuple[str, str]:
    """Open ``target``; it must fail as a message in the window."""
    with qtbot.waitSignal(inspector.failed, timeout=ms(10)) as failed:
        inspector.spawn(inspector.open(target.spec, target), "open")
    code, message = failed.args
    assert window.banner.isVisibleTo(window) and message in window.banner_text.text()
    assert "Traceback" not in message
    error = inspector.events.last("error")
    assert error is not None and error["code"] == code
    assert target.session is None  # nothing left open
    return code, message


def test_failures_to_connect_are_messages_in_the_window(
    qtbot: QtBot, inspector: Inspector, window: MainWindow, pool: WorkerPool, tmp_path: Path
) -> None:
    good_key = tmp_path / "me.key"
    AccountKey.generate().save(good_key)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key")
    os.chmod(bad_key, 0o600)

    def remote(url: str, key: Path = good_key, timeout: float = 5.0) -> RemoteTarget:
        return RemoteTarget(TargetSpec("node", url, str(key)), pool, timeout=timeout)

    code, message = failure(qtbot, inspector, window, remote("ws://127.0.0.1:1", bad_key))
    assert code == "key_file" and message.startswith("The key file cannot be used")

    code, message = failure(qtbot, inspector, window, remote(f"ws://127.0.0.1:{free_port()}"))
    assert code == "connection_refused" and message.startswith("Could not connect to the node: nothing accepts")

    fakes = {name: FakeNode(name) for name in ("auth_failed", "proto2", "silent")}
    for fake in fakes.values():
        run(qtbot, fake.start())
    try:
        code, message = failure(qtbot, inspector, window, remote(fakes["auth_failed"].url))
        assert code == "auth_failed" and "did not accept this account: this account is not accepted here" in message
        code, message = failure(qtbot, inspector, window, remote(fakes["proto2"].url))
        assert code == "unsupported_version" and f"node speaks protocol {PROTOCOL_VERSION + 1}" in message
        code, message = failure(qtbot, inspector, window, remote(fakes["silent"].url, timeout=0.5))
        assert code == "timeout" and "did not complete the handshake within 0.5 s" in message
    finally:
        for fake in fakes.values():
            run(qtbot, fake.close())
    assert inspector.target is None


def test_version_skew_is_a_warning_not_a_failure(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, served: Served, inspector: Inspector, window: MainWindow
) -> None:
    monkeypatch.setattr("engine.net.server.__version__", "0.0.9")  # what the node's challenge says
    with qtbot.waitSignal(inspector.warned, timeout=ms(20)) as warned:
        inspector.open_later(TargetSpec("node", served.url, str(served.admin_key)))
    wait_for(qtbot, lambda: inspector.is_loaded)
    assert warned.args[0] == "version_skew" and "runs Kintsugi 0.0.9" in warned.args[1]
    assert window.banner.isVisibleTo(window) and window.banner.property("kind") == "warning"
    assert "version skew" in window.node_label.text()
    skew = inspector.events.last("version_skew")
    assert skew == {"event": "version_skew", "node": "test-node", "node_version": "0.0.9", "inspector_version": "0.1.0"}


@pytest.mark.parametrize("announced", [False, True], ids=["not-announced", "announced-but-unanswered"])
def test_an_older_node_without_the_new_admin_ops_still_opens(  # noqa: PLR0917 - fixtures
    qtbot: QtBot,
    monkeypatch: pytest.MonkeyPatch,
    served: Served,
    inspector: Inspector,
    window: MainWindow,
    announced: bool,
) -> None:
    """A node from before ``kv_slot``, ``events`` and the peer log does not announce them, and
    its decoder refuses them with an ``error`` that names no request; its ``peers`` reply has
    no log. The inspector shows what the node does send: slots without values (and says so),
    the peers without a log, no node events. It does not ask a node that does not announce
    the ops; one that announces them but never answers gets one request of each, and after
    one request timeout the same fallback — so the node never closes it for bad messages."""
    monkeypatch.setattr("engine.protocol.messages.Admin.OPS", ("list", "peers"))  # the node's decoder
    if not announced:
        monkeypatch.setattr("engine.net.server.FEATURES", ("sync", "correction", "tombstone", "kv_list", "admin_list"))
    served.shell.manager.peer_log_report = None  # its peers reply has no log
    monkeypatch.setattr("inspector.targets.remote.REQUEST_TIMEOUT", 0.5 * UNIT)
    open_node(qtbot, inspector, served.url, served.admin_key)
    target = inspector.target
    assert isinstance(target, RemoteTarget) and not target.kv_values
    alice = AccountKey.load(served.keys / "alice.key").account_id
    row = inspector.cas_slots.row_of(alice, "prefs/recent")
    assert row >= 0 and inspector.cas_slots.index(row, 4).data() == "(values stay on the node)"
    inspector.select_slot(alice, "prefs/recent")
    assert "does not send CAS histories" in window.cas.timeline_heading.text()
    wait_for(qtbot, lambda: inspector.peers.rowCount() >= 1)
    assert not inspector.peer_log.available and "sends no peer log" in window.peers.log_heading.text()
    assert target.event_cursor.epoch is None and not target.recorder.recent()
    # it asked once for each: the node did not close the connection for too many bad requests
    run(qtbot, target.poll())
    assert target.connected and not [e for e in served.shell.peer_log if e.event == "down"]
