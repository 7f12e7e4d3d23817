"""The ``kintsugi`` command: builds the parser from the command modules and dispatches.

Command groups, one module each: :mod:`~engine.cli.account`, :mod:`~engine.cli.demo`,
:mod:`~engine.cli.store` (verify, inspect), :mod:`~engine.cli.node` (node serve),
:mod:`~engine.cli.bench`, :mod:`~engine.cli.bundle` (bundle export), :mod:`~engine.cli.anomalies`,
:mod:`~engine.cli.compare`, :mod:`~engine.cli.recover` (plan, apply), :mod:`~engine.cli.audit`
(verify, show), :mod:`~engine.cli.kv` (get, cas, watch: a node's CAS slots). What they
share: ``--json`` output, progress and exit codes (:mod:`engine.cli.output`), logging
(:mod:`engine.cli.logs`), telling node URLs from paths (:mod:`engine.cli.urls`), opening a
named store or saying it is none (:mod:`engine.cli.stores`), and a node's limits from a file
and flags (:mod:`engine.cli.limits_config`).

Exit codes: 0 ok, 1 failed, 2 usage. A usage error — argparse's own, an argument written as
a URL that is not a valid one (:mod:`engine.cli.urls`), or a :class:`UsageError` a command
raises — exits 2; any other engine error exits 1; neither prints a traceback. A password in
a PostgreSQL URL argument is taken out of the arguments before the command runs (see
:func:`~engine.cli.urls.hide_store_secrets`): the command sees the public location only. ``--json`` and
``-v`` are accepted before or after the command; with ``--json`` an error, usage errors
included, is also the one JSON document on stdout: ``{"error": {"code", "detail"}}``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from engine import __version__
from engine.cli import account, anomalies, audit, bench, bundle, compare, demo, kv, node, recover, store
from engine.cli.logs import configure_logging
from engine.cli.output import EXIT_FAILED, EXIT_USAGE, Handler, Output, add_json_flag
from engine.cli.urls import check_url_arguments, hide_passwords, hide_store_secrets
from engine.errors import KintsugiError, StorageEnvironmentError, UsageError


class ParseFailure(Exception):
    """argparse's usage error, raised instead of exiting so :func:`main` reports it."""

    def __init__(self, usage: str, message: str) -> None:
        super().__init__(message)
        self.usage = usage
        self.message = message


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors :func:`main` reports (as JSON with ``--json``)."""

    def error(self, message: str) -> NoReturn:
        raise ParseFailure(self.format_usage(), f"{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kintsugi",
        description="Kintsugi: a local-first sync engine with signed session logs. "
        "Build the demo, verify and inspect stores, and benchmark the engine.",
        epilog="Every reporting command takes --json (before or after the command). "
        "Exit codes: 0 ok, 1 failed, 2 usage.",
    )
    parser.add_argument("--version", action="version", version=f"kintsugi {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity and show progress on stderr")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout (errors too)")
    sub: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=Parser
    )

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
    kv.register(sub)
    return parser


def _log_level(args: argparse.Namespace) -> str:
    if getattr(args, "log_level", None):
        return str(args.log_level)
    if args.verbose:
        return "INFO"
    return str(getattr(args, "default_log_level", "WARNING"))


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(words)
    except ParseFailure as failure:
        sys.stderr.write(failure.usage)
        as_json = "--json" in words[: words.index("--")] if "--" in words else "--json" in words
        out = Output(as_json)
        message = hide_passwords(failure.message)
        if as_json:
            out.error_dict({"code": UsageError.code, "detail": message})
        else:
            sys.stderr.write(message + "\n")
        return EXIT_USAGE
    configure_logging(_log_level(args), getattr(args, "log_format", "text"))
    out = Output(bool(args.json), bool(args.verbose))
    try:
        check_url_arguments(args)
        hide_store_secrets(args)
        code: int = args.func(args, out)
    except UsageError as exc:
        out.error(exc)
        return EXIT_USAGE
    except KintsugiError as exc:
        out.error(exc)
        return EXIT_FAILED
    except OSError as exc:  # a file the command reads or writes itself (a --ready-file, an --out)
        where = f"{exc.filename}: " if exc.filename else ""
        out.error(StorageEnvironmentError(f"{where}{exc.strerror or exc}"))
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("kintsugi: interrupted\n")
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
