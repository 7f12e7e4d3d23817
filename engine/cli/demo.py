"""``kintsugi demo``: build the demo scenario into a store, or run its clients against a node."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from engine.cli.output import EXIT_FAILED, EXIT_OK, AddCommand, Output, default_demo_store
from engine.cli.urls import node_url, resolve_node_blocking
from engine.errors import UsageError


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from engine.demo.scenario import build_demo

    if not args.headless:
        raise UsageError(
            "the windowed demo is kintsugi-inspector (with no arguments); add --headless to build the demo store here"
        )
    if args.connect:
        from engine.demo.live import live_demo

        resolve_node_blocking(args.connect)
        workdir = Path(args.store).expanduser() if args.store else Path(tempfile.mkdtemp(prefix=LIVE_DEMO_PREFIX))
        report = live_demo(args.connect, workdir, min(args.edits, 1000), out.progress)
        report["files"] = live_demo_files(workdir)
        crash = report["crash_after_ack"]
        files = report["files"]
        text = "\n".join(
            [
                f"live demo against {args.connect} in {report['seconds']:.2f} s",
                f"  clients' files in {files['workdir']}:",
                f"    account keys: {', '.join(files['keys'].values())}",
                f"    client stores: {', '.join(files['stores'].values()) or 'none'} "
                "(the client killed after ack; the other clients kept theirs in memory)",
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
    try:
        result = build_demo(store, edits=args.edits, progress=out.progress)
    except UsageError as exc:
        # A directory holding something other than a demo store is refused for what is in
        # it, not for how the command was written: a failure (exit 1), with the code it has.
        out.error(exc)
        return EXIT_FAILED
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


#: Prefix of the directory ``demo --connect`` keeps its clients' keys and stores in when
#: ``--store`` names none (a fresh one each run, left in place and named in the output).
LIVE_DEMO_PREFIX = "kintsugi-live-demo-"


def live_demo_files(workdir: Path) -> dict[str, Any]:
    """Where the live demo left its clients' files: the working directory, the account key
    files (by name) and the client stores (by client), as absolute paths."""
    workdir = workdir.resolve()
    keys = {key.stem: str(key) for key in sorted((workdir / "keys").glob("*.key"))}
    stores = {entry.name: str(entry) for entry in sorted(workdir.iterdir()) if entry.is_dir() and entry.name != "keys"}
    return {"workdir": str(workdir), "keys": keys, "stores": stores}


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
        type=node_url,
        help="run the demo's clients against this node instead (with a real crash after acknowledgement); "
        "--store then names a working directory for the clients' keys and stores (default: a new "
        f"temporary directory {LIVE_DEMO_PREFIX}*, kept and named in the output)",
    )
