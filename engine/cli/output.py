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
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


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
