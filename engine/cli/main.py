"""The ``kintsugi`` command: builds the parser from the command modules and dispatches.

Command groups, one module each: :mod:`~engine.cli.account`, :mod:`~engine.cli.demo`,
:mod:`~engine.cli.store` (verify, inspect), :mod:`~engine.cli.node` (node serve),
:mod:`~engine.cli.bench`, :mod:`~engine.cli.bundle` (bundle export), :mod:`~engine.cli.anomalies`,
:mod:`~engine.cli.compare`, :mod:`~engine.cli.recover` (plan, apply), :mod:`~engine.cli.audit`
(verify, show). What they share (``--json`` output, progress, exit codes) is
:mod:`engine.cli.output`. Engine errors become a message and exit 1, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from engine import __version__
from engine.cli import account, anomalies, audit, bench, bundle, compare, demo, node, recover, store
from engine.cli.output import EXIT_FAILED, Handler, Output, add_json_flag
from engine.errors import KintsugiError


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

    def command(name: str, func: Handler, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kw)
        p.set_defaults(func=func)
        add_json_flag(p)
        return p

    account.register(sub)
    demo.register(command)
    store.register(command)
    node.register(sub)
    bench.register(command)
    bundle.register(sub)
    anomalies.register(command)
    compare.register(command)
    recover.register(sub)
    audit.register(sub)
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
