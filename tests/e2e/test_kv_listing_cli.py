"""``kintsugi inspect ws://`` lists every CAS slot of a node, not just the first ``kv_list``
page: a real node process holding more slots than a page
(:data:`~engine.protocol.messages.kv.MAX_KV_LIST_PAGE`) in one namespace."""

from __future__ import annotations

import json
from pathlib import Path

from engine.diagnostics.bundle_read import Bundle
from engine.kv.envelope import Present
from engine.protocol.messages.kv import MAX_KV_LIST_PAGE
from engine.storage import open_store
from tests.e2e.conftest import STEP_UNITS, Processes
from tests.util import run_cli, timeout

#: Slots written: more than two pages.
SLOTS = 2 * MAX_KV_LIST_PAGE + 7


def test_inspect_of_a_node_lists_every_page_of_slots(processes: Processes) -> None:
    admin = processes.account("admin")
    store = open_store(processes.workdir / "node1", synchronous="OFF")
    try:
        for i in range(SLOTS):
            store.kv.cas(admin.id, f"slot/{i:05}", 0, Present(i))
    finally:
        store.close()
    node = processes.node("node1")
    wait = ["--timeout", str(timeout(STEP_UNITS))]

    report = json.loads(run_cli("inspect", node.url, "--key", str(admin.key), "--json", *wait).stdout)
    listed = sorted(k["key"] for k in report["kv"] if k["namespace"] == admin.id and k["key"].startswith("slot/"))
    assert listed == [f"slot/{i:05}" for i in range(SLOTS)]


def test_bundle_export_of_a_node_holds_every_slot(processes: Processes, tmp_path: Path) -> None:
    """An export reads each of thousands of slots with its own request, paced under the node's
    rate limit: it finishes and the bundle holds every slot (it used to be cut off for
    flooding past about a thousand)."""
    admin = processes.account("admin")
    store = open_store(processes.workdir / "node1", synchronous="OFF")
    try:
        for i in range(SLOTS):
            store.kv.cas(admin.id, f"slot/{i:05}", 0, Present(i))
    finally:
        store.close()
    node = processes.node("node1")
    out = tmp_path / "node.zip"
    wait = ["--timeout", str(timeout(STEP_UNITS))]
    run_cli("bundle", "export", node.url, "--key", str(admin.key), "--out", str(out), "--json", *wait)
    with Bundle(out) as bundle:
        slots = bundle.slots()  # keys are redacted tokens: count them
    assert len(slots) >= SLOTS
