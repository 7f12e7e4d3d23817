"""Figures the ``compare`` workload reports beside its CLI timings (bench/workloads.py):

- ``app_first_rows_seconds``: the inspector's compare panes, offscreen in a process of their
  own with Qt already started, from being asked for the two stores' sessions until they have
  read their first rows (at the fork);
- ``probe_ms``: one probe of the binary search that aligns two sessions (one stored chain
  hash read from a random place of the session), median of :data:`PROBE_ROUNDS` rounds.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from engine.diagnostics.compare import hash_reader
from engine.diagnostics.session_rows import StoreSessionSource
from engine.storage import open_store

__all__ = ["PROBES_PER_ROUND", "PROBE_ROUNDS", "app_first_rows", "probe_ms"]

#: Rounds of probes timed, and probes a round, for ``probe_ms``.
PROBE_ROUNDS = 5
PROBES_PER_ROUND = 400


def app_first_rows(tmp: Path, covalue: str, session: str, env: dict[str, str]) -> float:
    """Seconds until the compare panes read the first rows of the sessions of the stores
    ``tmp/a`` and ``tmp/b`` (``env``: the child's environment); -1 when that fails."""
    script = tmp / "first_rows.py"
    script.write_text(_FIRST_ROWS_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp / "a"), str(tmp / "b"), covalue, session],
        env=dict(env, QT_QPA_PLATFORM="offscreen"),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    return float(lines[-1]) if proc.returncode == 0 and lines else -1.0


def probe_ms(path: Path) -> float:
    """Milliseconds of one binary-search probe on the one session of the store at ``path``
    (median of the rounds; the first round also warms the page cache)."""
    store = open_store(path, readonly=True)
    try:
        ((covalue, _kind, _deleted),) = store.covalue_ids()
        (stored,) = store.stored_sessions(covalue)
        read = hash_reader(StoreSessionSource(store, covalue, stored.session))
        pick = random.Random(7).randrange
        rounds = []
        for _ in range(PROBE_ROUNDS):
            counts = [pick(1, stored.count + 1) for _ in range(PROBES_PER_ROUND)]
            started = time.perf_counter()
            for n in counts:
                read(n)
            rounds.append((time.perf_counter() - started) / PROBES_PER_ROUND * 1000)
        return statistics.median(rounds)
    finally:
        store.close()


_FIRST_ROWS_SCRIPT = """
import sys, time
started = time.perf_counter()
from PySide6.QtWidgets import QApplication
app = QApplication([])
from engine.diagnostics.compare import compare_sessions
from engine.diagnostics.compare_sides import StoreSide
from engine.storage import open_store
from inspector.models.compare import CompareModel
from inspector.views.compare import ComparePanes
left, right, covalue, session = sys.argv[1:5]
asked = time.perf_counter()
stores = [open_store(path, readonly=True) for path in (left, right)]
a, b = (StoreSide(s).open_session(covalue, session) for s in stores)
model = CompareModel(compare_sessions(a, b))
panes = ComparePanes()
panes.resize(1280, 800)
panes.set_model(model, "left", "right", model.summary_text())
panes.show()
panes.go_to(model.fork_row)
while model.cached_rows == 0 and time.perf_counter() - asked < 60:
    app.processEvents()
print(time.perf_counter() - asked if model.cached_rows else -1)
"""
