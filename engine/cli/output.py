"""What every ``kintsugi`` command shares: exit codes, result output and progress.

Every command that reports something takes ``--json`` and then prints exactly one JSON
document on stdout (errors too: ``{"error": {"code", "detail"}}``). Progress goes to stderr,
and only to a terminal when ``--json`` is given. Exit codes: :data:`EXIT_OK` success,
:data:`EXIT_FAILED` the check failed or an error occurred, :data:`EXIT_USAGE` bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import platformdirs

from engine.errors import KintsugiError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: A command: parsed arguments and the output in, an exit code out.
Handler = Callable[[argparse.Namespace, "Output"], int]


class AddCommand(Protocol):
    """Adds one top-level command with ``--json`` to the parser and returns its sub-parser."""

    def __call__(self, name: str, func: Handler, help_text: str, **kw: Any) -> argparse.ArgumentParser: ...


def default_demo_store() -> Path:
    """Where ``kintsugi demo`` writes unless ``--store`` says otherwise."""
    return platformdirs.user_data_path("kintsugi", appauthor=False) / "demo"


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json`` and ``-v`` on a command, as on ``kintsugi`` itself: either place works
    (``kintsugi --json verify S`` and ``kintsugi verify S --json``). Unset here, they leave
    the attribute absent, so the top-level value stands."""
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document on stdout"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log engine activity and show progress on stderr",
    )


class Output:
    """Prints results as text or as one JSON document, and progress to stderr."""

    def __init__(self, as_json: bool, verbose: bool = False) -> None:
        self.as_json = as_json
        self.verbose = verbose
        self.interactive = sys.stderr.isatty()

    @property
    def shows_progress(self) -> bool:
        """Whether progress counters are written: to a terminal, or when ``-v`` asks."""
        return self.interactive or self.verbose

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
            if self.shows_progress and (done == total or done % 50 == 0):
                sys.stderr.write(f"\r{what}: {done}/{total}" if self.interactive else f"{what}: {done}/{total}\n")
                if done == total and self.interactive:
                    sys.stderr.write("\n")

        return report

    def error(self, exc: KintsugiError) -> None:
        self.error_dict(exc.to_dict())

    def error_dict(self, error: dict[str, str]) -> None:
        """An error ``{"code", "detail"}``: on stderr, and as the JSON document with ``--json``."""
        if self.as_json:
            json.dump({"error": error}, sys.stdout)
            sys.stdout.write("\n")
        sys.stderr.write(f"kintsugi: {error['detail'] or error['code']} [{error['code']}]\n")
