"""How long tools/check_rules.py takes over this repository: the check runs first in every CI
run and before every commit, so it should stay well under a second.

``python -m bench.rules [--runs N]`` prints ``{"name": "check_rules", "runs", "files",
"median_s", "min_s", "max_s"}``. Each run reads and parses the whole tree again, as the
command does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_rules", REPO / "tools" / "check_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="how many times to check the tree (default 5)")
    args = parser.parse_args(argv)
    rules = _checker()
    files = len(rules.read_tree(REPO)[0])
    seconds = []
    for _ in range(max(1, args.runs)):
        start = time.perf_counter()
        rules.check(REPO)
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "name": "check_rules",
                "runs": len(seconds),
                "files": files,
                "median_s": round(statistics.median(seconds), 4),
                "min_s": round(min(seconds), 4),
                "max_s": round(max(seconds), 4),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
