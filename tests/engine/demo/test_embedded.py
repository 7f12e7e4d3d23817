"""The inspector's embedded default: a live node with the demo's clients (real WebSockets)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine.cli.audit import check_store
from engine.crypto import AccountKey
from engine.demo.embedded import EmbeddedDemo
from engine.demo.repairs import LEDGER_ENTRIES, ROTTED_INDEX
from engine.ids import CoValueID, SessionKind, parse_session_id
from engine.net.recover import apply, recover_from
from engine.protocol.limits import CloseCode
from engine.protocol.messages import RecoveryScope
from engine.recovery.plan import SessionAction
from tests.util import timeout


async def _until(cond, units: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout(units)
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_embedded_demo_is_live_forks_recovered_and_a_peer_lags(tmp_path: Path) -> None:
    """The node holds the story (conflict sessions, a tombstone, contended slots), the live
    clients keep writing and stay caught up, and the stalled peer is closed as lagged."""

    async def scenario() -> None:
        demo = EmbeddedDemo(tmp_path, edit_interval=0.05)
        await demo.start()
        try:
            node = demo.node
            notes = node.get(demo.report["maps"]["notes"])
            kinds = [parse_session_id(s).kind for s in notes.sessions]
            assert kinds.count(SessionKind.CONFLICT) >= 2
            deleted = node.get(demo.report["deleted"][0])
            assert deleted.deleted
            assert node.kv_namespaces(), "contended CAS slots are in the node's store"
            todo = node.get(demo.report["maps"]["todo"])
            before = todo.transaction_count()
            await _until(lambda: todo.transaction_count() > before + 5, 10, "live edits")
            await _until(
                lambda: any(e.lagged and e.close_code == CloseCode.LAGGED for e in demo.shell.peer_log),
                30,
                "the stalled peer to be closed as lagged",
            )
            live = [p for p in demo.shell.peers() if p.account in {c.node.account_id for c in demo.clients}]
            assert len(live) == 2
            await _until(lambda: all(p.behind < 50 for p in demo.shell.peers() if p in live), 10, "catch-up")
        finally:
            await demo.stop()

    asyncio.run(scenario())


def test_embedded_demo_holds_a_corrupt_and_a_stale_replica_that_recover_from_the_origin(tmp_path: Path) -> None:
    """The node's ledger is corrupt and its release stale (v1), the origin holds both whole;
    neither is repaired by the running demo; REPLACE from the origin (real WebSocket) repairs
    both, the divergent edit is archived in the receipt, and the audit log verifies."""

    async def scenario() -> None:
        demo = EmbeddedDemo(tmp_path, edit_interval=0.05)
        await demo.start()
        try:
            node = demo.node
            info = demo.report["recovery"]
            ledger, release = CoValueID(info["corrupt"]), CoValueID(info["stale"])
            assert info["origin"] == demo.origin_url and Path(info["operator_key"]).exists()
            core = node.get(ledger)
            ((_sid, error),) = core.corrupt.items()
            assert error.index == ROTTED_INDEX  # type: ignore[attr-defined]
            assert node.get_map(release)["version"] == "v1"
            key = AccountKey.load(info["operator_key"])
            scope = RecoveryScope(covalues=(ledger, release))
            planned = await recover_from(node, demo.origin_url, key, scope)
            by_id = {c.id: c for c in planned.plan.covalues}
            (ledger_session,) = by_id[ledger].sessions
            assert ledger_session.action is SessionAction.REPLACED
            assert ledger_session.unverifiable == LEDGER_ENTRIES - 120 and ledger_session.at_risk == 0
            (release_session,) = by_id[release].sessions
            assert release_session.action is SessionAction.REPLACED
            assert release_session.at_risk == release_session.archived == 1
            receipt = apply(node, planned, key)
            assert receipt.verify()
            assert not node.get(ledger).corrupt and len(node.get_map(ledger)) == LEDGER_ENTRIES
            assert node.get_map(release)["version"] == "v2" and "status" not in node.get_map(release)
            assert node.store is not None
            assert check_store(node.store)["ok"] and check_store(node.store)["records"] == 1
            again = await recover_from(node, demo.origin_url, key, scope)
            assert not again.plan.changes  # applied: a second run plans nothing
        finally:
            await demo.stop()

    asyncio.run(scenario())
