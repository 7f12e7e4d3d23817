"""``kintsugi bench``: run the engine benchmarks of ``bench/`` (measurements, never tests)."""

from __future__ import annotations

import argparse
import sys

from engine.cli.output import EXIT_OK, EXIT_USAGE, AddCommand, Output


def cmd_bench(args: argparse.Namespace, out: Output) -> int:
    from bench.workloads import WORKLOADS, run_workloads

    names = args.workload or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        sys.stderr.write(f"kintsugi bench: unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}\n")
        return EXIT_USAGE
    results = run_workloads(names, args.n, progress=out.progress)
    lines = [f"{'workload':<14} {'n':>8} {'seconds':>9} {'tx/s':>10} {'rss MB':>8}"]
    lines += [
        f"{r['name']:<14} {r['n']:>8} {r['seconds']:>9.3f} {r['tx_per_s']:>10.0f} {r['rss_mb']:>8.1f}"
        for r in results["workloads"]
    ]
    out.result(results, "\n".join(lines))
    return EXIT_OK


def register(command: AddCommand) -> None:
    p = command("bench", cmd_bench, "Run the engine benchmarks (see bench/README.md).")
    p.add_argument(
        "--n", type=int, action="append", help="transactions per workload (repeatable; default 10000 and 100000)"
    )
    p.add_argument("--workload", action="append", help="run only this workload (repeatable)")
