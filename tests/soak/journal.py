"""The soak's journal: what one client process wrote and what the node acknowledged to it,
kept durably so that a SIGKILL loses at most the record it was writing.

One file per client (all its lives), JSON lines, each append flushed and ``fsync``-ed before
the client goes on. Records:

- ``{"life": k, "pid": p, "session": sid}`` — a process started on the store (``k`` counts
  from 1) and writes in ``sid``; written before its first write.
- ``{"session": sid}`` — writing moved to another session (a lease lost while idle, a
  correction); written before the first write in it.
- ``{"w": cid, "s": sid, "i": index, "t": madeAt, "c": changes}`` — a transaction, written
  only once it is durable in the client's store (the batch committed).
- ``{"ack": cid, "s": sid, "n": count, "h": head hex}`` — the node announced holding the first
  ``n`` transactions of one of this client's sessions, with the client's own chain hash at
  ``n``: an acknowledgement.
- ``{"odd": cid, "s": sid, "n": count, "h": head hex}`` — the node announced a history of one
  of this client's sessions that is not the client's (longer, or another hash): a fork.

Every transaction the client writes carries a token in the value of its first change,
``["set", key, [label, life, n, j]]``: ``(label, life, n)`` names it wherever it ends up
(its own session, or a conflict session it was moved into).

A life killed while appending leaves a torn line; the next life ends it with a newline
before appending, and the reader skips (and counts) it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.model.transaction import decode_transaction

Token = tuple[str, int, int]


def token_of(changes: list[list[Any]]) -> Token | None:
    """The token a soak transaction carries in its first change (None: not a soak write)."""
    if not changes:
        return None
    first = changes[0]
    if len(first) == 3 and first[0] == "set" and isinstance(first[2], list) and len(first[2]) == 4:
        label, life, n, _j = first[2]
        if isinstance(label, str) and isinstance(life, int) and isinstance(n, int):
            return (label, life, n)
    return None


def write_records(covalue: str, session: str, start: int, txs: Iterable[bytes]) -> list[dict[str, Any]]:
    """The ``w`` records of transactions ``start``, ``start + 1``, … of a session."""
    records = []
    for index, raw in enumerate(txs, start):
        tx = decode_transaction(raw)
        records.append({"w": covalue, "s": session, "i": index, "t": tx.made_at, "c": tx.changes})
    return records


def ack_record(covalue: str, session: str, count: int, head: bytes, *, odd: bool = False) -> dict[str, Any]:
    """An ``ack`` record (``odd``: the announced history is not the client's)."""
    return {"odd" if odd else "ack": covalue, "s": session, "n": count, "h": head.hex()}


class JournalWriter:
    """Appends records to a journal file; each :meth:`append` is on disk when it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            # The last life was killed while appending: end its torn line, so the next
            # record starts on a line of its own.
            self.append_raw(b"\n")

    def append_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        if data:
            self.append_raw(data)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Write:
    """One transaction a client wrote (durable in its store when journaled)."""

    client: str
    covalue: str
    session: str
    index: int
    made_at: int
    changes: list[list[Any]]

    @property
    def token(self) -> Token:
        token = token_of(self.changes)
        assert token is not None, self.changes
        return token


@dataclass(frozen=True, slots=True)
class Ack:
    """The node announced holding ``count`` transactions of ``session`` ending at ``head``."""

    client: str
    covalue: str
    session: str
    count: int
    head: bytes


@dataclass(slots=True)
class Journal:
    """A client's journal as read back."""

    client: str
    lives: int = 0
    sessions: list[str] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    odd: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0

    def acked_counts(self) -> dict[tuple[str, str], int]:
        """The highest acknowledged count of each (CoValue, session)."""
        best: dict[tuple[str, str], int] = {}
        for ack in self.acks:
            key = (ack.covalue, ack.session)
            best[key] = max(best.get(key, 0), ack.count)
        return best


def read_journal(path: Path, client: str) -> Journal:
    """The journal at ``path`` (empty if there is none yet). A torn line (a life killed while
    appending it: the last line, or one the next life ended) is skipped and counted in
    ``torn``."""
    journal = Journal(client)
    if not path.exists():
        return journal
    lines = path.read_bytes().split(b"\n")
    for raw in lines:
        if not raw:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            journal.torn += 1
            continue
        add_record(journal, record)
    return journal


def add_record(journal: Journal, record: dict[str, Any]) -> None:
    """Fold one record into ``journal``."""
    if "life" in record:
        journal.lives = max(journal.lives, record["life"])
        journal.sessions.append(record["session"])
    elif "w" in record:
        journal.writes.append(Write(journal.client, record["w"], record["s"], record["i"], record["t"], record["c"]))
    elif "ack" in record:
        journal.acks.append(Ack(journal.client, record["ack"], record["s"], record["n"], bytes.fromhex(record["h"])))
    elif "session" in record:
        journal.sessions.append(record["session"])
    elif "odd" in record:
        journal.odd.append(record)
    else:
        raise AssertionError(f"unknown journal record {record!r}")
