"""The ``cluster`` benchmark (bench/cluster.py) runs end to end at a tiny size: it starts its
own PostgreSQL server, three node processes on it and one SQLite node, and reports every
figure of both runs. (Its figures are measurements, never asserted against goals here.)"""

from __future__ import annotations

import json

from bench.cluster import WRITERS, _percentile
from tests.util import run_cli

#: Transactions per writer in the end-to-end run: enough for every writer to wait on an
#: acknowledgement before its next write, small enough to take about 15 s.
PER_WRITER = 2


def test_cluster_workload_reports_both_runs() -> None:
    result = run_cli("bench", "--workload", "cluster", "--n", str(PER_WRITER * WRITERS), "--json", timeout_units=240)
    data = json.loads(result.stdout)
    assert "cluster" in data["opt_in"] and "cluster" not in data["default"]
    (run,) = data["workloads"]
    assert run["name"] == "cluster" and run["transactions"] == PER_WRITER * WRITERS
    for prefix in ("", "sqlite_"):
        seconds, rate = run[f"{prefix}seconds"], run[f"{prefix}tx_per_s"]
        assert seconds > 0 and abs(rate - PER_WRITER * WRITERS / seconds) <= 1 + rate / 100
        assert 0 < run[f"{prefix}seen_p50_ms"] <= run[f"{prefix}seen_p99_ms"] <= run[f"{prefix}seen_max_ms"]
        assert run[f"{prefix}node_rss_mb"] > 0 and run[f"{prefix}node_cpu_s"] > 0 and run[f"{prefix}client_cpu_s"] > 0


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert _percentile(ordered, 0.50) == 50.0
    assert _percentile(ordered, 0.99) == 99.0
    assert _percentile([7.0], 0.99) == 7.0
