"""The ``kintsugi`` command: everything the inspector does, headless.

Every command that reports something takes ``--json`` and then prints exactly one JSON
document on stdout (errors too: ``{"error": {"code", "detail"}}``). Progress goes to stderr.
Exit codes: 0 success, 1 the check failed or an error occurred, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import platformdirs

from engine import __version__
from engine.crypto import AccountKey
from engine.errors import KintsugiError, UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def default_demo_store() -> Path:
    """Where ``kintsugi demo`` writes unless ``--store`` says otherwise."""
    return platformdirs.user_data_path("kintsugi", appauthor=False) / "demo"


class Output:
    """Prints results as text or as one JSON document, and progress to stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.interactive = sys.stderr.isatty()

    def result(self, data: Any, text: str) -> None:
        if self.as_json:
            json.dump(data, sys.stdout, indent=2, sort_keys=False)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(text.rstrip("\n") + "\n")

    def progress(self, message: str) -> None:
        if not self.as_json or self.interactive:
            sys.stderr.write(f"… {message}\n")

    def counter(self, what: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            if self.interactive and (done == total or done % 50 == 0):
                sys.stderr.write(f"\r{what}: {done}/{total}")
                if done == total:
                    sys.stderr.write("\n")

        return report

    def error(self, exc: KintsugiError) -> None:
        if self.as_json:
            json.dump({"error": exc.to_dict()}, sys.stdout)
            sys.stdout.write("\n")
        sys.stderr.write(f"kintsugi: {exc.detail or exc.code} [{exc.code}]\n")


# -- commands ----------------------------------------------------------------------------------


def cmd_account_new(args: argparse.Namespace, out: Output) -> int:
    key = AccountKey.generate()
    key.save(args.out)
    out.result(
        {"account": key.account_id, "key_file": str(args.out)},
        f"created account {key.account_id}\nkey written to {args.out} (mode 0600; keep it secret)",
    )
    return EXIT_OK


def cmd_account_show(args: argparse.Namespace, out: Output) -> int:
    key = AccountKey.load(args.key)
    out.result({"account": key.account_id}, key.account_id)
    return EXIT_OK


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
        ]
    )
    out.result(data, text)
    return EXIT_OK


def _open_readonly(path: str) -> Any:
    from engine.storage.sqlite.store import SQLiteStore

    return SQLiteStore(Path(path).expanduser(), readonly=True)


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from engine.diagnostics.report import verify_store

    store = _open_readonly(args.store)
    try:
        report = verify_store(store, out.counter("verifying"))
    finally:
        store.close()
    lines = [
        f"{'OK' if report['ok'] else 'CORRUPT'}: {report['covalues']} CoValues, "
        f"{report['sessions']} sessions, {report['transactions']} transactions"
    ]
    lines += [f"  {c['covalue']} {c['session']} at {c['index']}: {c['reason']}" for c in report["corrupt"]]
    out.result(report, "\n".join(lines))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    from engine.diagnostics.report import inspect_store

    if args.target.startswith(("ws://", "wss://")):
        import asyncio

        from engine.net.remote import inspect_remote

        if args.key is None:
            raise UsageError("inspecting a node needs --key FILE (the account to connect as)")
        out.progress(f"connecting to {args.target}")
        report = asyncio.run(inspect_remote(args.target, AccountKey.load(args.key), timeout=args.timeout))
    else:
        store = _open_readonly(args.target)
        try:
            report = inspect_store(store, out.counter("loading"))
        finally:
            store.close()
    lines = []
    for cv in report["covalues"]:
        flags = f" [{', '.join(cv['flags'])}]" if cv["flags"] else ""
        lines.append(f"{cv['id']}  {cv['type']}{flags}")
        for s in cv["sessions"]:
            mark = "" if s["verified"] else "  CORRUPT"
            lines.append(f"    {s['kind']:<8} {s['count']!s:>8}  {s['id']}{mark}")
    lines.append(f"{len(report['kv'])} CAS slots")
    lines += [f"    {k['namespace']} {k['key']} gen {k['generation']} {k['state']}" for k in report["kv"]]
    out.result(report, "\n".join(lines))
    return EXIT_OK


def cmd_node_serve(args: argparse.Namespace, out: Output) -> int:
    import asyncio

    from engine.net.serve import serve

    asyncio.run(
        serve(
            args.store,
            host=args.host,
            port=args.port,
            admins=args.admin,
            upstreams=args.upstream,
            ready_file=args.ready_file,
            key_file=args.key,
        )
    )
    return EXIT_OK


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


# -- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kintsugi",
        description="Kintsugi: a local-first sync engine with signed session logs. "
        "Build the demo, verify and inspect stores, and benchmark the engine.",
        epilog="Every reporting command takes --json. Exit codes: 0 ok, 1 failed, 2 usage.",
    )
    parser.add_argument("--version", action="version", version=f"kintsugi {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, func: Callable[[argparse.Namespace, Output], int], help_text: str, **kw: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
        return p

    account = sub.add_parser("account", help="create or show account keys", description="Account keys (Ed25519).")
    account_sub = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    p = account_sub.add_parser("new", help="create a new account key file (mode 0600)")
    p.set_defaults(func=cmd_account_new)
    p.add_argument("--out", required=True, type=Path, help="key file to create; an existing file is never overwritten")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p = account_sub.add_parser("show", help="print the AccountID of a key file")
    p.set_defaults(func=cmd_account_show)
    p.add_argument("--key", required=True, type=Path, help="key file")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")

    p = command(
        "demo",
        cmd_demo,
        "Build the demo scenario into a store: a group with members, CoMaps with thousands of "
        "edits, a forked session recovered into a conflict session, a deleted CoValue and "
        "contended CAS slots. A previous demo store at the same place is replaced.",
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

    p = command(
        "verify",
        cmd_verify,
        "Check every hash chain and signature in a store. Exit 1 when anything is corrupt.",
    )
    p.add_argument("store", help="store directory or database file")

    p = command(
        "inspect",
        cmd_inspect,
        "List the CoValues of a store (sessions, kinds, counts, heads, verification, flags) and its CAS slots.",
    )
    p.add_argument("target", help="store directory or database file, or a node's ws:// URL")
    p.add_argument("--key", type=Path, help="account key file to connect with (for a ws:// target)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a node (default 60)")

    node = sub.add_parser("node", help="run a sync node", description="Run a Kintsugi sync node.")
    node_sub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    p = node_sub.add_parser(
        "serve",
        help="serve a store over WebSockets until SIGTERM/SIGINT",
        description="Serve the CoValues of a store to authenticated peers over WebSockets. The node's "
        "account key is --key, or node.key in the store directory (created on first start).",
    )
    p.set_defaults(func=cmd_node_serve)
    p.add_argument("--store", required=True, type=Path, help="store directory (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    p.add_argument("--admin", action="append", default=[], metavar="ACCOUNT", help="an admin AccountID (repeatable)")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="URL",
        help="a node to sync with (repeatable); to relay everything, this node's account must be an --admin there",
    )
    p.add_argument("--ready-file", type=Path, help="write the actual ws:// URL here once listening")
    p.add_argument("--key", type=Path, help="the node's account key file")

    p = command("bench", cmd_bench, "Run the engine benchmarks (see bench/README.md).")
    p.add_argument(
        "--n", type=int, action="append", help="transactions per workload (repeatable; default 10000 and 100000)"
    )
    p.add_argument("--workload", action="append", help="run only this workload (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    out = Output(getattr(args, "json", False))
    try:
        code: int = args.func(args, out)
    except KintsugiError as exc:
        out.error(exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("kintsugi: interrupted\n")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
