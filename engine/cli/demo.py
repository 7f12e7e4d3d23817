"""``kintsugi demo``: build the demo scenario into a store, or run its clients against a node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.cli.output import EXIT_OK, EXIT_USAGE, AddCommand, Output, default_demo_store


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from engine.demo.scenario import build_demo

    if not args.headless:
        sys.stderr.write(
            "kintsugi demo: the windowed demo is kintsugi-inspector (with no arguments); "
            "add --headless to build the demo store here\n"
        )
        return EXIT_USAGE
    if args.connect:
        from engine.demo.live import live_demo

        workdir = Path(args.store).expanduser() if args.store else None
        report = live_demo(args.connect, workdir, min(args.edits, 1000), out.progress)
        crash = report["crash_after_ack"]
        text = "\n".join(
            [
                f"live demo against {args.connect} in {report['seconds']:.2f} s",
                f"  two tabs on one session: corrected ({'; '.join(report['two_tabs']['corrected'])})",
                f"  crash after ack: node acknowledged {crash['killed_after_ack']['acked']} transactions, "
                f"{crash['killed_after_ack']['persisted']} were on disk when the client was killed",
                f"  after the restart: {'; '.join(crash['after_restart']['corrections'])}",
                f"  conflict sessions: {', '.join(report['conflict_sessions'])}",
                f"  deleted: {', '.join(report['deleted'])}",
            ]
        )
        out.result(report, text)
        return EXIT_OK
    store = Path(args.store).expanduser() if args.store else default_demo_store()
    result = build_demo(store, edits=args.edits, progress=out.progress)
    data = result.to_json()
    text = "\n".join(
        [
            f"demo store written to {result.store} in {result.seconds:.2f} s",
            f"  {result.transactions} transactions in {len(result.maps) + len(result.deleted) + 1} CoValues",
            f"  forks detected and recovered: {len(result.forks_detected)} "
            f"(conflict sessions: {', '.join(result.conflict_sessions) or 'none'})",
            f"  deleted CoValues: {', '.join(result.deleted)}",
            f"  lost CAS races recorded: {result.kv_conflicts}",
            f"look at it with: kintsugi inspect {result.store}",
            f"something to recover: {result.recovery['replica']} (a corrupt ledger, a stale release)",
            f"  serve its origin:  kintsugi node serve --store {result.recovery['origin']}",
            f"  then:              kintsugi recover plan {result.recovery['replica']} --from ws://HOST:PORT "
            f"--key {result.recovery['operator_key']} --group {result.recovery['group']}",
        ]
    )
    out.result(data, text)
    return EXIT_OK


def register(command: AddCommand) -> None:
    p = command(
        "demo",
        cmd_demo,
        "Build the demo scenario into a store: a group with members, CoMaps with thousands of "
        "edits, a forked session recovered into a conflict session, a deleted CoValue, "
        "contended CAS slots, and beside it a replica to recover (a corrupt and a stale copy) with its origin. "
        "A previous demo store at the same place is replaced.",
    )
    p.add_argument("--headless", action="store_true", help="build the store without opening the inspector")
    p.add_argument("--store", help=f"store directory (default: {default_demo_store()})")
    p.add_argument("--edits", type=int, default=3000, help="number of CoMap edits (default 3000)")
    p.add_argument(
        "--connect",
        metavar="URL",
        help="run the demo's clients against this node instead (with a real crash after acknowledgement); "
        "--store then names a working directory for the clients' keys and stores",
    )
