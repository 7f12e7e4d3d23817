"""Worker-process analysis functions, run in-process here (engine.diagnostics.analysis)."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.crypto import AccountKey
from engine.demo.scenario import DemoResult, build_demo_store
from engine.diagnostics import analysis
from engine.diagnostics.covalue_summary import Badge
from engine.errors import ChainError, StorageBugError
from engine.ids import CoValueID
from engine.node.facade import LocalNode
from engine.storage.sqlite.store import store_file


@pytest.fixture
def copy(demo: DemoResult, tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "copy"
    shutil.copytree(demo.store, target)
    yield target
    analysis.close_stores()


def test_analyse_and_content_of_a_store(demo: DemoResult, copy: Path) -> None:
    path = str(store_file(copy))
    notes = CoValueID(demo.maps["notes"])
    summary = analysis.analyse(path, notes)
    assert summary is not None and summary.analysed and Badge.CONFLICT_SESSION in summary.badges
    content = analysis.content(path, notes)
    assert content is not None and content.covalue == notes and "after-recovery" in content.entries
    assert analysis.analyse(path, CoValueID("co_zNotThere1111111111111111")) is None
    assert analysis.content(path, CoValueID("co_zNotThere1111111111111111")) is None
    assert analysis.ping() > 0


def test_a_store_written_meanwhile_is_read_again(demo: DemoResult, copy: Path) -> None:
    path = str(store_file(copy))
    todo = CoValueID(demo.maps["todo"])
    before = analysis.analyse(path, todo)
    assert before is not None and analysis.analyse(path, todo) == before  # cached: same answer
    bob = demo.accounts["bob"]
    with LocalNode.open(copy, AccountKey.load(copy / "keys" / "alice.key"), instance_id="writer") as node:
        node.set(todo, "fresh", 1)
        node.flush()
        after = analysis.analyse(path, todo)
        assert after is not None and after.transactions == before.transactions + 1
        content = analysis.content(path, todo)
        assert content is not None and content.entries["fresh"].value == 1
        loaded = analysis._cores[(path, todo)][2]
        assert analysis.analyse(path, todo) == after and analysis._cores[(path, todo)][2] is loaded
        # A role change in the owner group can change which edits are valid: the CoMap is
        # loaded again even though its own rows did not change.
        node.set_role(CoValueID(demo.group), bob, "revoked")
        node.flush()
        revoked = analysis.analyse(path, todo)
    assert revoked is not None and revoked.transactions == after.transactions
    assert analysis._cores[(path, todo)][2] is not loaded


def test_many_loaded_covalues_are_evicted(demo: DemoResult, copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "KEEP_CORES", 2)
    path = str(store_file(copy))
    for cid in (demo.group, demo.maps["notes"], demo.maps["todo"], demo.deleted[0]):
        assert analysis.analyse(path, CoValueID(cid)) is not None
    assert len(analysis._cores) <= 2


def test_build_demo_store(tmp_path: Path) -> None:
    report = build_demo_store(str(tmp_path / "demo"), 30)
    assert report["deleted"] and report["conflict_sessions"]


def test_errors_cross_process_boundaries(demo: DemoResult, copy: Path) -> None:
    conn = sqlite3.connect(store_file(copy))
    conn.execute("UPDATE covalues SET header = x'00' WHERE id = ?", (demo.group,))
    conn.commit()
    conn.close()
    with pytest.raises(StorageBugError) as info:
        analysis.analyse(str(store_file(copy)), CoValueID(demo.group))
    assert pickle.loads(pickle.dumps(info.value)).detail == info.value.detail

    @analysis.portable_errors
    def broken() -> None:
        raise ChainError("s", 3, "why")  # three arguments: its pickle cannot rebuild it

    with pytest.raises(StorageBugError, match="ChainError: s@3: why"):
        broken()
