"""Engine → view: a live LocalNode target changes and the models follow, coalesced by the
throttle and applied in batches, without stalling the loop."""

from __future__ import annotations

import asyncio

from pytestqt.qtbot import QtBot

from engine.demo.scenario import DemoResult
from engine.diagnostics.covalue_summary import Badge
from engine.ids import SessionKind
from inspector.controller import Inspector
from inspector.lag import LoopLagMonitor
from inspector.models.covalues import CoValueListModel
from inspector.models.roles import Role
from inspector.targets import NodeTarget
from inspector.views.main_window import MainWindow
from tests.inspector.conftest import ms, run, wait_for
from tests.util import UNIT

#: The UI budget (DESIGN §11), scaled like every other bound in the suite.
STALL_BUDGET = 0.05 * UNIT


async def write_in_turns(node: object, covalue: str, prefix: str, turns: int, per_turn: int) -> None:
    """Writes spread over several loop turns, as a live app makes them (one commit a turn)."""
    for turn in range(turns):
        for i in range(per_turn):
            node.set(covalue, f"{prefix}-{turn * per_turn + i:04d}", turn)  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)


def test_writes_appear_in_navigator_lanes_and_content_in_batches(  # noqa: PLR0917 - fixtures
    heap_frozen: None,
    qtbot: QtBot,
    inspector: Inspector,
    window: MainWindow,
    node_target: NodeTarget,
    demo_store: DemoResult,
    monitor: LoopLagMonitor,
) -> None:
    assert run(qtbot, inspector.open(node_target.spec, node_target))
    node = node_target.node
    assert node is not None
    notes = demo_store.maps["notes"]
    with qtbot.waitSignal(inspector.contentLoaded, timeout=ms(10)):
        assert window.navigator.select_covalue(notes)
    row = inspector.covalues.row_of(notes)
    txs_before = inspector.covalues.index(row, CoValueListModel.TRANSACTIONS).data(Role.RAW)
    # This node writes in Alice's session (the demo released its lease cleanly, so it is
    # reused): the rows go into that session's lane.
    lane = next(r for r in range(inspector.lanes.rowCount()) if inspector.lanes.index(r).data(Role.ID) == node.session)
    assert inspector.lanes.index(lane).data(Role.KIND) == SessionKind.ACTIVE
    wait_for(qtbot, lambda: not window.chain.building)
    chain = inspector.lanes.chain(lane)
    rows_before = chain.rowCount()
    content = inspector.content
    inserted_rows: list[int] = []
    chain.rowsInserted.connect(lambda _p, first, last: inserted_rows.append(last - first + 1))
    content_batches: list[int] = []
    content.rowsInserted.connect(lambda _p, first, last: content_batches.append(last - first + 1))
    deliveries = inspector.throttle.deliveries
    monitor.reset()

    run(qtbot, write_in_turns(node, notes, "stream", turns=20, per_turn=25))

    def caught_up() -> bool:
        # The summary of a CoValue this big comes from the worker, which reads the store: a
        # refresh that started before the last commit is followed by one more after it.
        summary = inspector.target.summary(notes)  # type: ignore[union-attr]
        done = summary is not None and summary.transactions == txs_before + 500
        return done and chain.rowCount() == rows_before + 500 and content.row_of("stream-0499") >= 0

    wait_for(qtbot, caught_up)

    # every write shows up: 500 new rows in the lane, 500 new keys in the content
    assert sum(inserted_rows) == 500 and sum(content_batches) == 500
    # ...but in batches: far fewer model signals than writes, one delivery per throttle window
    assert len(inserted_rows) < 20 and len(content_batches) < 20
    assert inspector.throttle.deliveries - deliveries <= len(inserted_rows) + 1
    assert chain.index(rows_before + 499, 2).data() == "set stream-0499 = 19"
    summary = inspector.target.summary(notes)  # type: ignore[union-attr]
    assert summary is not None and summary.transactions == txs_before + 500
    assert inspector.covalues.index(row, CoValueListModel.TRANSACTIONS).data() == f"{txs_before + 500:,}"
    wait_for(qtbot, lambda: chain.verifier is not None and chain.verifier.done)
    assert chain.verification_text() == "verified"
    print(
        f"\nlive writes: max loop lag {monitor.max_lag * 1000:.1f} ms ({monitor.max_busy * 1000:.1f} ms working) "
        f"over {monitor.samples} samples"
    )
    assert monitor.max_busy < STALL_BUDGET, monitor.recent()


def test_new_and_deleted_covalues_appear(
    qtbot: QtBot, inspector: Inspector, node_target: NodeTarget, demo_store: DemoResult, monitor: LoopLagMonitor
) -> None:
    assert run(qtbot, inspector.open(node_target.spec, node_target))
    node = node_target.node
    assert node is not None
    monitor.reset()
    inserted: list[tuple[int, int]] = []
    inspector.covalues.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))

    created = [node.create_map(demo_store.group, meta={"name": f"fresh {i}"}).id for i in range(3)]
    wait_for(qtbot, lambda: all(inspector.covalues.row_of(c) >= 0 for c in created))
    assert sum(last - first + 1 for first, last in inserted) == 3 and len(inserted) <= 3
    names = {inspector.covalues.index(inspector.covalues.row_of(c), 0).data() for c in created}
    assert names == {"fresh 0", "fresh 1", "fresh 2"}

    inspector.navigator.set_badge(Badge.DELETED)
    assert inspector.navigator.rowCount() == 1
    node.delete_covalue(created[0])
    wait_for(qtbot, lambda: inspector.tombstones.rowCount() == 2)
    assert inspector.navigator.rowCount() == 2  # the filter follows live badges
    deleted_ids = {inspector.tombstones.index(r, 0).data(Role.ID) for r in range(2)}
    assert deleted_ids == {created[0], demo_store.deleted[0]}
    assert Badge.DELETED in inspector.covalues.index(inspector.covalues.row_of(created[0]), 0).data(Role.BADGES)
    lag_ms, busy_ms = monitor.max_lag * 1000, monitor.max_busy * 1000
    print(f"\nnew/deleted CoValues: max loop lag {lag_ms:.1f} ms ({busy_ms:.1f} ms working)")
    assert monitor.max_busy < STALL_BUDGET


def test_kv_changes_show_with_the_next_change(
    qtbot: QtBot, inspector: Inspector, node_target: NodeTarget, demo_store: DemoResult
) -> None:
    from engine.kv.envelope import Present

    assert run(qtbot, inspector.open(node_target.spec, node_target))
    node = node_target.node
    assert node is not None
    account = demo_store.accounts["alice"]
    inspector.select_slot(account, "cursor/sync")
    before = inspector.cas_timeline.rowCount()
    generation, _slot = node.kv.get(account, "cursor/sync")
    node.kv.cas(account, "cursor/sync", generation, Present(99))
    node.kv.cas(account, "cursor/sync", generation, Present(100))  # loses: stale generation
    node.set(demo_store.maps["notes"], "poke", 1)  # KV writes do not notify; the next change refreshes
    wait_for(qtbot, lambda: inspector.cas_timeline.rowCount() == before + 2)
    last = inspector.cas_timeline.record(before + 1)
    assert last is not None and last.outcome == "conflict"
    row = inspector.cas_slots.row_of(account, "cursor/sync")
    assert inspector.cas_slots.index(row, 2).data() == str(generation + 1)
