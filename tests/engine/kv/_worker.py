"""Worker process for the KV tests: ``python -m tests.engine.kv._worker MODE ARGS...``.

Speaks JSON lines on stdout and takes commands on stdin, one per line.

- ``increment DB NAMESPACE KEY COUNT WRITER LOG_KEEP``: print ``ready``, wait for ``go``, then
  add 1 to the integer in the slot COUNT times with read_modify_write; print ``done``.
- ``lease DB ACCOUNT INSTANCE``: acquire a session lease and print ``acquired``; then obey
  ``release`` (release it, print ``released``) and ``exit``; end of input also exits, without
  releasing.
"""

from __future__ import annotations

import json
import os
import sys

from engine.errors import CASRetriesExhausted
from engine.ids import AccountID
from engine.kv.envelope import Present, Slot
from engine.kv.lease import SessionLeases
from engine.kv.rmw import read_modify_write
from engine.storage.sqlite.kv import SQLiteKV
from tests.engine.kv._util import open_db


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def increment(slot: Slot | None) -> Slot:
    current = slot.value if isinstance(slot, Present) else 0
    # Give the other workers the CPU between our read and our CAS, so races really happen.
    os.sched_yield()
    return Present(current + 1)


def run_increment(*args: str) -> None:
    db, namespace, key, count, writer, keep = args
    store = SQLiteKV(open_db(db), writer=writer, log_keep=int(keep))
    emit("ready")
    if sys.stdin.readline().strip() != "go":
        return
    exhausted = 0
    done = 0
    while done < int(count):
        try:
            read_modify_write(store, namespace, key, increment)
        except CASRetriesExhausted:
            exhausted += 1  # nothing was stored: try the same increment again
            continue
        done += 1
    emit("done", exhausted=exhausted)


def run_lease(db: str, account: str, instance: str) -> None:
    leases = SessionLeases(SQLiteKV(open_db(db), writer=instance), AccountID(account), instance)
    session = leases.acquire()
    emit("acquired", session=session)
    for line in sys.stdin:
        command = line.strip()
        if command == "release":
            leases.release(session)
            emit("released")
        elif command == "exit":
            return


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "increment":
        run_increment(*args)
    elif mode == "lease":
        run_lease(*args)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
