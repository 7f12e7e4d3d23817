"""Targets (inspector.targets): opening, failures as messages, summaries, content, KV."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult
from engine.diagnostics.covalue_summary import Badge
from engine.errors import KintsugiError, SchemaVersionError, StoreNotFound
from engine.ids import CoValueID
from engine.storage.sqlite.store import store_file
from inspector.targets import (
    LiveDemoTarget,
    NodeTarget,
    RemoteTarget,
    StoreTarget,
    TargetSpec,
    TargetUnavailable,
    describe_error,
    make_target,
)
from inspector.workers import WorkerPool
from tests.inspector.conftest import run


def test_specs_parse_and_round_trip() -> None:
    assert TargetSpec.parse(None) == TargetSpec("demo") == TargetSpec.parse("demo")
    assert TargetSpec.parse("ws://node:4242", "me.key") == TargetSpec("node", "ws://node:4242", "me.key")
    store = TargetSpec.parse("~/x")
    assert store.kind == "store" and not store.location.startswith("~")
    assert TargetSpec.from_json(store.to_json()) == store
    assert TargetSpec.from_json("{") is None and TargetSpec.from_json('{"kind": "nope"}') is None
    assert TargetSpec("demo").label == "embedded demo"
    with pytest.raises(ValueError, match="unknown target kind"):
        TargetSpec("ftp")


def failure(qtbot: QtBot, pool: WorkerPool, spec: TargetSpec) -> tuple[str, str]:
    target = make_target(spec, pool)
    with pytest.raises((KintsugiError, TargetUnavailable, OSError)) as info:
        run(qtbot, target.open())
    run(qtbot, target.close())
    return describe_error(info.value)


def test_no_store_there(loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, tmp_path: Path) -> None:
    code, message = failure(qtbot, pool, TargetSpec("store", str(tmp_path / "missing")))
    assert code == "store_not_found" and message.startswith("There is no Kintsugi store there")


def test_an_sqlite_file_that_is_not_a_store(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, tmp_path: Path
) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    code, message = failure(qtbot, pool, TargetSpec("store", str(path)))
    assert code == "store_not_found" and "is not a Kintsugi store" in message


def test_a_schema_too_new(loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, demo_copy: Path) -> None:
    conn = sqlite3.connect(store_file(demo_copy))
    conn.execute(f"PRAGMA user_version = {2 * 65536}")
    conn.close()
    code, message = failure(qtbot, pool, TargetSpec("store", str(demo_copy)))
    assert code == SchemaVersionError.code and "newer" in message


def test_node_urls_check_the_key_file_then_connect(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, tmp_path: Path
) -> None:
    code, message = failure(qtbot, pool, TargetSpec("node", "ws://localhost:1", str(tmp_path / "nope.key")))
    assert code == "key_file" and message.startswith("The key file cannot be used")
    assert failure(qtbot, pool, TargetSpec("node", "ws://localhost:1"))[0] == "key_file"
    key = tmp_path / "me.key"
    AccountKey.generate().save(key)
    os.chmod(key, 0o644)
    assert "readable by others" in failure(qtbot, pool, TargetSpec("node", "ws://x", str(key)))[1]
    os.chmod(key, 0o600)
    code, message = failure(qtbot, pool, TargetSpec("node", "ws://localhost:1", str(key)))
    assert code == "connection_refused" and message.startswith("Could not connect to the node: nothing accepts")
    assert isinstance(make_target(TargetSpec("node", "ws://x"), pool), RemoteTarget)
    assert isinstance(make_target(TargetSpec("demo"), pool), LiveDemoTarget)


def test_other_errors_are_messages_too() -> None:
    assert describe_error(FileNotFoundError(2, "No such file", "/x")) == ("os_error", "No such file: /x")
    assert describe_error(ValueError("bad"))[0] == "internal"
    assert describe_error(StoreNotFound()) == ("store_not_found", "store_not_found")


def test_a_store_lists_at_once_and_analyses_in_the_worker(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot, pool: WorkerPool, demo_store: DemoResult
) -> None:
    target = StoreTarget(TargetSpec("store", demo_store.store), pool)
    run(qtbot, target.open())
    notes = CoValueID(demo_store.maps["notes"])
    assert len(target.ids()) == 4 and not target.summary(notes).analysed  # type: ignore[union-attr]
    assert target.stats() == {"covalues": 4, "conflict_sessions": 1, "deleted": 1, "corrupt": 0, "forked": 0}
    batches: list[list[CoValueID]] = []
    run(qtbot, target.analyse(batches.append))
    assert sorted(c for batch in batches for c in batch) == target.ids()
    summary = target.summary(notes)
    assert summary is not None and summary.analysed and Badge.CONFLICT_SESSION in summary.badges
    content = run(qtbot, target.content(notes))
    assert content is not None and content.name == "notes" and "after-recovery" in content.entries
    assert "tab2-0" in content.entries  # the conflict session's edits are content too
    scratch = run(qtbot, target.content(CoValueID(demo_store.deleted[0])))
    assert scratch is not None and scratch.deleted and scratch.tombstone is not None
    session = summary.sessions[0].id
    source = target.open_session(notes, session)
    assert source is not None and source.count == summary.sessions[0].count
    assert target.open_session(notes, session.replace("_session_z", "_session_zz")) is None
    (namespace,) = target.kv_namespaces()
    assert {s.key for s in target.kv_slots(namespace)} >= {"prefs/recent", "draft/old"}
    assert any(r.outcome == "conflict" for r in target.kv_history(namespace, "prefs/recent"))
    assert not target.live and target.subscribe(lambda _c: None)() is None
    run(qtbot, target.close())
    assert target.kv_namespaces() == [] and target.open_session(notes, session) is None
    assert run(qtbot, target.content(notes)) is None


def test_a_node_target_summarizes_small_covalues_in_place_and_big_ones_in_the_worker(
    loop: asyncio.AbstractEventLoop, qtbot: QtBot, node_target: NodeTarget, demo_store: DemoResult
) -> None:
    run(qtbot, node_target.open())
    node = node_target.node
    assert node is not None and node_target.live
    run(qtbot, node_target.analyse(lambda _b: None))
    assert node_target.stats()["conflict_sessions"] == 1
    notes = CoValueID(demo_store.maps["notes"])
    todo = CoValueID(demo_store.maps["todo"])
    jobs = node_target.pool.jobs
    node.set(notes, "fresh", 1)  # loads notes into the node: 300-odd transactions, in place
    assert run(qtbot, node_target.refresh([notes])) == [notes]
    assert node_target.pool.jobs == jobs
    content = run(qtbot, node_target.content(notes))
    assert content is not None and content.entries["fresh"].value == 1
    node.set(todo, "fresh", 2)  # 600 transactions: more than is summarized in place
    node.flush()
    assert run(qtbot, node_target.refresh([todo])) == [todo]
    big = run(qtbot, node_target.content(todo))
    assert big is not None and big.entries["fresh"].value == 2 and node_target.pool.jobs > jobs
    source = node_target.open_session(notes, node.session)
    assert source is not None and source.may_hold_pending
    run(qtbot, node_target.close())
    assert node_target.node is None and node.closed
