"""Project rules that ruff and mypy do not know, each with the fix to make.

Run from the repository root; exits 1 and lists every violation.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RULES: list[tuple[str, re.Pattern[str], str, str]] = [
    (
        "engine/**/*.py",
        re.compile(r"^\s*(from|import)\s+(PySide6|qasync|inspector)\b"),
        "the engine never imports Qt, qasync or the inspector",
        "move the code to inspector/, or pass what the engine needs in as plain data",
    ),
    (
        "engine/**/*.py",
        re.compile(r"(?<![\w.])print\("),
        "no print() in engine/",
        "log with logging.getLogger(__name__), or return the text to the CLI",
    ),
    (
        "**/*.py",
        re.compile(r"^\s*except\s*:"),
        "no bare except",
        "catch the exception types you mean (KintsugiError, OSError, ...)",
    ),
    (
        "engine/protocol/**/*.py",
        re.compile(r"^\s*(from|import)\s+(asyncio|socket|websockets|sqlite3)\b"),
        "engine/protocol is sans-I/O",
        "do the I/O in engine/net and feed decoded data in",
    ),
    (
        "engine/sync/**/*.py",
        re.compile(r"^\s*(from|import)\s+(asyncio|socket|websockets|sqlite3)\b"),
        "engine/sync is sans-I/O",
        "return effects from the state machine and let engine/net perform them",
    ),
]
QASYNC = re.compile(r"^\s*(from|import)\s+qasync\b")
SKIP_PARTS = {".venv", "build", "dist", "__pycache__"}


def files(pattern: str) -> list[Path]:
    return [p for p in ROOT.glob(pattern) if not SKIP_PARTS & set(p.relative_to(ROOT).parts)]


def main() -> int:
    problems = []
    for pattern, regex, rule, fix in RULES:
        for path in files(pattern):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if regex.search(line):
                    problems.append(f"{path.relative_to(ROOT)}:{number}: {rule} — fix: {fix}")
    qasync_users = sorted(
        str(p.relative_to(ROOT))
        for p in files("inspector/**/*.py")
        if any(QASYNC.search(line) for line in p.read_text().splitlines())
    )
    if len(qasync_users) > 1:
        problems.append(f"qasync is imported by {', '.join(qasync_users)} — fix: only inspector/loop.py imports it")
    for problem in problems:
        print(problem)
    print(f"project rules: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
