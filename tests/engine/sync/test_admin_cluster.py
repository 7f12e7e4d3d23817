"""The admin op ``cluster`` in the sans-I/O core: admins only, ``unsupported_op`` on a replica
that is not a served node, the report as JSON, rows cut to the frame; and the report's JSON
read back (tolerant of missing fields, refusing what is not a report)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import InvalidInput
from engine.protocol.limits import Limits
from engine.sync.cluster import ClusterNode, ClusterReport, compact_peer_row
from tests.engine.sync.test_admin import ADMIN, USER, Harness, refused


def node(i: int, *, alive: bool = True, this: bool = False) -> ClusterNode:
    return ClusterNode(
        f"host:{i}",
        "acc_z" + "n" * 40,
        f"ws://10.0.0.{i}:4000",
        alive,
        1_000,
        2_000 + i,
        i * 10,
        5_000,
        i,
        ({"peer_id": f"in:{i}", "kind": "downstream", "behind": 0},),
        cursor=100 + i,
        lag=i,
        this=this,
    )


@pytest.fixture
def harness() -> Any:
    h = Harness()
    yield h
    h.close()


def test_cluster_is_for_admins_of_a_served_node(harness: Harness) -> None:
    assert refused(harness.ask(ADMIN, "cluster")) == "unsupported_op"  # no network shell
    report = ClusterReport("host:1", True, (node(1, this=True), node(2, alive=False)))
    harness.manager.cluster_report = lambda: report
    assert refused(harness.ask(USER, "cluster")) == "permission_denied"
    result = harness.ask(ADMIN, "cluster").result
    assert result == report.to_json() and "nodes_dropped" not in result
    assert ClusterReport.from_json(result) == report


def test_a_huge_cluster_is_cut_to_the_frame() -> None:
    h = Harness(Limits(max_frame_size=4 * 1024))
    try:
        report = ClusterReport("host:0", True, tuple(node(i) for i in range(200)))
        h.manager.cluster_report = lambda: report
        result = h.ask(ADMIN, "cluster").result
        kept = result["nodes"]
        assert 0 < len(kept) < 200 and result["nodes_dropped"] == 200 - len(kept)
        assert kept == [n.to_json() for n in report.nodes[: len(kept)]]
    finally:
        h.close()


def test_reading_a_report_tolerates_missing_fields_and_refuses_other_things() -> None:
    sparse = ClusterReport.from_json({"nodes": [{"node": "n", "url": "ws://x:1", "extra": 1}]})
    (only,) = sparse.nodes
    assert (only.alive, only.peers, only.lag, only.cursor, only.peer_rows, only.this) == (
        False,
        0,
        None,
        None,
        (),
        False,
    )
    for bad in (None, [], {"nodes": {}}, {"nodes": [{"url": "ws://x:1"}]}, {"nodes": [{"node": "n", "url": 3}]}):
        with pytest.raises(InvalidInput):
            ClusterReport.from_json(bad)


def test_a_heartbeat_carries_a_compact_peer_row() -> None:
    row = {"peer_id": "in:1", "account": "acc_zA", "kind": "downstream", "behind": 4, "queue_bytes": 9, "admin": 0}
    assert compact_peer_row(row) == {"peer_id": "in:1", "account": "acc_zA", "kind": "downstream", "behind": 4}
