"""``kintsugi bench``: run the engine benchmarks of ``bench/`` (measurements, never tests).

With no ``--workload`` it runs the default workloads; the opt-in ones (which first build big
stores) run only when named. Both lists are in ``--help`` and in the JSON (``default``,
``opt_in``), read from :data:`bench.workloads.WORKLOADS`.
"""

from __future__ import annotations

import argparse

from engine.cli.output import EXIT_OK, AddCommand, Output
from engine.errors import UsageError


def cmd_bench(args: argparse.Namespace, out: Output) -> int:
    from bench.workloads import WORKLOADS, run_workloads

    known = [*WORKLOADS, *WORKLOADS.opt_in]
    names = args.workload or list(WORKLOADS)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(known)}")
    results = run_workloads(names, args.n, progress=out.progress)
    results["default"] = list(WORKLOADS)
    results["opt_in"] = list(WORKLOADS.opt_in)
    lines = [f"{'workload':<14} {'n':>8} {'seconds':>9} {'tx/s':>10} {'rss MB':>8}"]
    lines += [
        f"{r['name']:<14} {r['n']:>8} {r['seconds']:>9.3f} {r['tx_per_s']:>10.0f} {r['rss_mb']:>8.1f}"
        for r in results["workloads"]
    ]
    out.result(results, "\n".join(lines))
    return EXIT_OK


def register(command: AddCommand) -> None:
    from bench.workloads import WORKLOADS

    p = command("bench", cmd_bench, "Run the engine benchmarks (see bench/README.md).")
    p.add_argument(
        "--n", type=int, action="append", help="transactions per workload (repeatable; default 10000 and 100000)"
    )
    p.add_argument(
        "--workload",
        action="append",
        help=(
            f"run only this workload (repeatable). Default: {', '.join(WORKLOADS)}; "
            f"opt-in, run only when named: {', '.join(WORKLOADS.opt_in)}"
        ),
    )
