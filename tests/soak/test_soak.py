"""The soak (issue 15, point 3): a real node process, client processes writing and
reconnecting through a proxy that cuts, stalls, delays and refuses connections, SIGKILLs of
clients and of the node on a seeded schedule, and at the end the oracle over everything
written (:mod:`tests.soak.harness`, :mod:`tests.soak.oracle`).

``KINTSUGI_SOAK_MINUTES`` sets the length of the faulty phase (default 2, what CI runs; the
setup and the final sync add a quarter of a minute to a minute). ``KINTSUGI_SOAK_SEED``
replays a schedule of kills and faults. The run prints its seed first and ends with one
line::

    soak: W written, A acknowledged, K kills, F faults, 0 lost
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.soak.harness import SOAK_MINUTES, Soak, soak_seed
from tests.util import timeout

#: Seconds the test may take beyond the faulty phase (setup, final sync, checks).
OVERHEAD_UNITS = 300


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_MINUTES * 60 + timeout(OVERHEAD_UNITS)))
def test_soak_loses_nothing(tmp_path: Path) -> None:
    seed = soak_seed()
    print(f"soak: seed {seed}, {SOAK_MINUTES:g} minutes (KINTSUGI_SOAK_SEED={seed} replays)")
    soak = Soak(tmp_path, seed, SOAK_MINUTES * 60)
    verdict = soak.run()
    print(f"soak: {soak.tally.summary()}; client lives {[s.lives for s in soak.clients]}")
    print(verdict.line)
    assert verdict.written > 0 and verdict.acknowledged > 0, verdict.line
    assert not verdict.problems, f"seed {seed}:\n{verdict.report()}"
    assert verdict.lost == 0, verdict.line
