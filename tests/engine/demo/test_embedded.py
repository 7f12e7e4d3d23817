"""The inspector's embedded default: a live node with the demo's clients (real WebSockets)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from engine.demo.embedded import EmbeddedDemo
from engine.ids import SessionKind, parse_session_id
from engine.protocol.limits import CloseCode
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
