"""``kintsugi anomalies TARGET [--json]``: what is wrong with a target, worst first.

TARGET is a store, a node's ``ws://`` URL (with ``--key``), ``demo`` (the embedded demo), or
a bundle (``FILE.zip``: the anomalies found when it was exported). Each anomaly has a
``kind``, a ``severity`` (critical, high, medium, low), a ``subject`` (the entry it
concerns) and a one-line ``explanation``, plus the ids that link to that entry; the rules are
those of :mod:`engine.diagnostics.anomalies`. Exit 0 whatever is found: this is a report,
``kintsugi verify`` is the check.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from engine.cli.bundle import DEFAULT_TIMEOUT, open_inputs, run_steps
from engine.cli.output import EXIT_OK, AddCommand, Output
from engine.diagnostics.anomalies import Anomaly, severity_counts
from engine.diagnostics.bundle import target_anomaly_steps
from engine.diagnostics.bundle_read import Bundle, is_bundle_path

__all__ = ["register"]


def cmd_anomalies(args: argparse.Namespace, out: Output) -> int:
    if is_bundle_path(args.target):
        with Bundle(args.target) as bundle:
            found = bundle.anomalies()
    else:

        async def gather() -> list[Anomaly]:
            async with open_inputs(args.target, args.key, args.timeout, out) as inputs:
                return await run_steps(target_anomaly_steps(inputs), out)

        found = asyncio.run(gather())
    counts = severity_counts(found)
    data = {"anomalies": [a.to_json() for a in found], "counts": counts}
    lines = [f"{len(found)} anomalies: " + ", ".join(f"{n} {severity}" for severity, n in counts.items())]
    lines += [f"  [{a.severity}] {a.kind}: {a.subject}\n      {a.explanation}" for a in found]
    out.result(data, "\n".join(lines))
    return EXIT_OK


def register(command: AddCommand) -> None:
    p = command(
        "anomalies",
        cmd_anomalies,
        "List what is wrong with a store, a node, the embedded demo or a bundle, ranked by severity: "
        "signature failures, forks, corrupt chains, invalid transactions, lagging or lost peers, CAS "
        "contention, unacknowledged tombstones, version and clock skew.",
    )
    p.add_argument(
        "target",
        help="store (directory, file or postgresql:// URL), a node's ws:// URL, 'demo', or a bundle FILE.zip",
    )
    p.add_argument("--key", type=Path, help="account key file to connect with (for a ws:// target)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for a node (default {DEFAULT_TIMEOUT:g})",
    )
