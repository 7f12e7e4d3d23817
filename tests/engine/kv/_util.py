"""KV test helpers: SQLite files with the KV schema and worker processes.

Timing (the scalable ``KINTSUGI_TEST_UNIT`` and bounded waits) comes from :mod:`tests.util`.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from engine.ids import AccountID, account_id_from_public_key
from engine.storage.sqlite.kv import create_schema
from tests.util import timeout

REPO = Path(__file__).resolve().parents[3]


def random_account() -> AccountID:
    return account_id_from_public_key(os.urandom(32))


def open_db(path: Path | str, *, busy_units: float = 10) -> sqlite3.Connection:
    """An autocommit connection in WAL mode that waits up to ``busy_units`` for locks."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout(busy_units))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def new_db(path: Path) -> Path:
    """Create a database file holding the KV schema; return its path."""
    conn = open_db(path)
    try:
        create_schema(conn)
    finally:
        conn.close()
    return path


class Worker:
    """``python -m tests.engine.kv._worker *args`` speaking JSON lines on stdout."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        self.name = f"worker-{args[0]}-{id(self):x}"
        self._stderr_path = log_dir / f"{self.name}.stderr"
        self._stderr: IO[bytes] = self._stderr_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.engine.kv._worker", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, name=self.name, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(errors="replace")

    def expect(self, event: str, timeout_units: float = 10) -> dict[str, Any]:
        """The next JSON line, which must have ``"event": event``."""
        try:
            line = self._lines.get(timeout=timeout(timeout_units))
        except queue.Empty:
            raise AssertionError(f"{self.name}: no {event!r} line in time") from None
        if line is None:
            raise AssertionError(f"{self.name} exited before {event!r}:\n{self.stderr()}")
        message: dict[str, Any] = json.loads(line)
        assert message.get("event") == event, (message, self.stderr())
        return message

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_exit(self, timeout_units: float = 10) -> int:
        return self.proc.wait(timeout=timeout(timeout_units))

    def kill(self) -> None:
        """SIGKILL: the process dies without running any cleanup."""
        self.proc.kill()
        self.proc.wait(timeout=timeout(10))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with suppress(BrokenPipeError):  # the child may be gone
                    stream.close()
        self._reader.join(timeout(10))
        self._stderr.close()


@contextmanager
def workers(log_dir: Path) -> Iterator[Callable[..., Worker]]:
    """``with workers(tmp_path) as spawn: w = spawn("mode", ...)``; all are reaped on exit."""
    started: list[Worker] = []

    def spawn(*args: str) -> Worker:
        worker = Worker(log_dir, *args)
        started.append(worker)
        return worker

    try:
        yield spawn
    finally:
        for worker in started:
            worker.close()
