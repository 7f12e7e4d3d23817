"""Windowed reading of one session's transactions, decoded for display.

A *session source* serves a session's rows ``(index, tx bytes, stored chain hash)`` a window
at a time, so a view of a million-transaction session touches only the rows on screen:

- :class:`StoreSessionSource` reads a :class:`~engine.storage.interface.Store`'s
  :meth:`~engine.storage.interface.Store.session_window` (for SQLite, one indexed lookup of
  the storage blocks that overlap the window);
- :class:`LogSessionSource` slices an in-memory :class:`SessionLog` (a live node's), found
  again on every call, so a session replaced by recovery is noticed (:meth:`identity`).

:func:`decode_rows` turns raw rows into :class:`TxRow` (madeAt, a one-line change summary,
hash prefix, size); :func:`summarize_changes` is the summary alone (``set title = "milk"``,
``del x``, ``role acc_zAb3f… writer``, ``delete``). Nothing here verifies anything: the stored
hash is shown as stored, and :mod:`engine.diagnostics.chain_verify` says whether it links.

Every source counts the rows it has returned (``rows_read``), so tests and benchmarks can
check that a view reads windows, not whole sessions.

Imports: model, crypto, ids, errors and the Store interface (never a store implementation):
reading rows is the store's business, showing them is this module's.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.crypto import chain_base
from engine.errors import InvalidTransaction
from engine.ids import CoValueID, SessionID
from engine.model.session_log import SessionLog
from engine.model.transaction import decode_transaction
from engine.storage.interface import RawRow, Store

__all__ = [
    "HASH_PREFIX_BYTES",
    "MAX_SUMMARY_LENGTH",
    "LogSessionSource",
    "RawRow",
    "SessionSource",
    "StoreSessionSource",
    "TxRow",
    "decode_row",
    "decode_rows",
    "is_checkpoint",
    "short_account",
    "summarize_change",
    "summarize_changes",
]

#: Bytes of the chain hash shown per row (as hex: twice as many characters).
HASH_PREFIX_BYTES = 4
#: Longest change summary returned; longer ones end with an ellipsis.
MAX_SUMMARY_LENGTH = 120
#: Longest rendering of one value inside a summary.
MAX_VALUE_LENGTH = 48


class SessionSource(Protocol):
    """Windowed, read-only access to one session of one CoValue."""

    covalue: CoValueID
    session: SessionID
    #: rows returned by :meth:`window` so far
    rows_read: int
    #: True when rows after the last checkpoint are legitimate (a live writer's pending
    #: transactions); a store never holds them, so there they mean damage.
    may_hold_pending: bool

    @property
    def count(self) -> int:
        """Rows the session holds now."""
        ...

    def window(self, offset: int, limit: int) -> list[RawRow]:
        """Up to ``limit`` rows from ``offset``, in index order.

        Rows missing from storage are absent (indices then skip); raises
        :class:`engine.errors.ChainError` when a stored block is unreadable.
        """
        ...

    def row_hash(self, index: int) -> bytes | None:
        """The stored chain hash of row ``index`` (``h(index + 1)``), read on its own (a
        binary search's probe); None when the row is missing. Counts in :attr:`rows_read`."""
        ...

    def checkpoints(self) -> Sequence[int]:
        """Checkpoint counts ``n`` (sorted): ``sig(n)`` signs ``h(n)``."""
        ...

    def signature(self, n: int) -> bytes | None:
        """The signature of checkpoint ``n``, or None when there is none."""
        ...

    def base(self) -> bytes:
        """``h(0)``, the chain base."""
        ...

    def stored_head(self) -> tuple[int, bytes] | None:
        """``(count, h(count))`` as recorded beside the rows, or None when nothing is."""
        ...

    def identity(self) -> object:
        """A token that changes when the session is replaced wholesale (not when it grows)."""
        ...

    def reload(self) -> None:
        """Pick up changes made since (a no-op for sources that always read live)."""
        ...


class StoreSessionSource:
    """A session as stored in a :class:`~engine.storage.interface.Store`, read by window.

    Use it from the thread that owns ``store``. :meth:`reload` picks up rows another
    connection appended since. Raises the store's :class:`~engine.errors.StorageError`.
    """

    may_hold_pending = False

    def __init__(self, store: Store, covalue: CoValueID, session: SessionID) -> None:
        self.store = store
        self.covalue = covalue
        self.session = session
        self.rows_read = 0
        self._base = chain_base(covalue, session)
        self._key: int | None = None
        self._count = 0
        self._head = b""
        self._checkpoints: list[int] = []
        self.reload()

    def reload(self) -> None:
        """Re-read the stored session's identity, count, head and checkpoint list."""
        rows = self.store.session_rows(self.covalue, self.session)
        if rows is None:
            self._key, self._count, self._head, self._checkpoints = None, 0, b"", []
            return
        self._key, self._count, self._head = rows.key, rows.count, rows.head
        self._checkpoints = list(rows.checkpoints)

    @property
    def count(self) -> int:
        return self._count

    def window(self, offset: int, limit: int) -> list[RawRow]:
        # Clamped to the count read by reload(): a writer may have appended since, and rows
        # beyond that count would not match the checkpoint list read with it.
        offset = max(0, offset)
        rows = self.store.session_window(self.covalue, self.session, offset, min(limit, self._count - offset))
        self.rows_read += len(rows)
        return rows

    def row_hash(self, index: int) -> bytes | None:
        if not 0 <= index < self._count:
            return None
        found = self.store.session_hash(self.covalue, self.session, index)
        self.rows_read += found is not None
        return found

    def checkpoints(self) -> Sequence[int]:
        return self._checkpoints

    def signature(self, n: int) -> bytes | None:
        return None if self._key is None else self.store.signature(self._key, n)

    def base(self) -> bytes:
        return self._base

    def stored_head(self) -> tuple[int, bytes] | None:
        return None if self._key is None else (self._count, self._head)

    def identity(self) -> object:
        # A replace writes the session anew: another stored copy, another key.
        return self._key


class LogSessionSource:
    """A session held in memory by a live replica.

    ``get_log`` is asked for the log on every call (None: the session is gone, e.g. purged by
    a tombstone), so growth and replacement are seen without any notification.
    """

    may_hold_pending = True

    def __init__(self, covalue: CoValueID, session: SessionID, get_log: Callable[[], SessionLog | None]) -> None:
        self.covalue = covalue
        self.session = session
        self.rows_read = 0
        self._get_log = get_log
        self._base = chain_base(covalue, session)
        self._checkpoints: list[int] = []
        self._checkpoints_of: tuple[int, int] = (-1, -1)

    @classmethod
    def of(cls, log: SessionLog) -> LogSessionSource:
        """A source over exactly ``log`` (tests, detached copies)."""
        return cls(log.covalue, log.session, lambda: log)

    @property
    def count(self) -> int:
        log = self._get_log()
        return 0 if log is None else log.count

    def window(self, offset: int, limit: int) -> list[RawRow]:
        log = self._get_log()
        if log is None or limit <= 0:
            return []
        start = max(0, offset)
        stop = min(log.count, start + limit)
        rows = [(i, log.txs[i], log.hashes[i]) for i in range(start, stop)]
        self.rows_read += len(rows)
        return rows

    def row_hash(self, index: int) -> bytes | None:
        log = self._get_log()
        if log is None or not 0 <= index < log.count:
            return None
        self.rows_read += 1
        return log.hashes[index]

    def checkpoints(self) -> Sequence[int]:
        log = self._get_log()
        if log is None:
            return []
        # Checkpoints only accumulate while a log lives; re-sort only when one was added.
        key = (id(log), len(log.sigs))
        if key != self._checkpoints_of:
            self._checkpoints = sorted(log.sigs)
            self._checkpoints_of = key
        return self._checkpoints

    def signature(self, n: int) -> bytes | None:
        log = self._get_log()
        return None if log is None else log.sigs.get(n)

    def base(self) -> bytes:
        return self._base

    def stored_head(self) -> tuple[int, bytes] | None:
        return None

    def identity(self) -> object:
        log = self._get_log()
        return None if log is None else id(log)

    def reload(self) -> None:
        return None


def is_checkpoint(checkpoints: Sequence[int], index: int) -> bool:
    """True when transaction ``index`` ends a checkpoint (``index + 1`` is signed)."""
    i = bisect_left(checkpoints, index + 1)
    return i < len(checkpoints) and checkpoints[i] == index + 1


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxRow:
    """One transaction as a view shows it.

    ``made_at`` and ``changes`` are None when the bytes do not decode; ``error`` says why.
    """

    index: int
    made_at: int | None
    summary: str
    hash: bytes
    size: int
    changes: tuple[tuple[Any, ...], ...] | None = None
    error: str | None = None

    @property
    def hash_prefix(self) -> str:
        return self.hash[:HASH_PREFIX_BYTES].hex()


def short_account(account: str, keep: int = 5) -> str:
    """``acc_zAb3fQ…``: an AccountID cut to ``keep`` base58 characters."""
    if account.startswith("acc_z") and len(account) > 5 + keep:
        return account[: 5 + keep] + "…"
    return account


def _value(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=repr)
    except (TypeError, ValueError):  # e.g. non-string map keys that repr cannot fix
        text = repr(value)
    return text if len(text) <= MAX_VALUE_LENGTH else text[: MAX_VALUE_LENGTH - 1] + "…"


def summarize_change(change: Sequence[Any]) -> str:
    """One change in words: ``set k = v``, ``del k``, ``role acc_z… writer``, ``delete``."""
    if not change:
        return "(empty change)"
    op = change[0]
    if op == "set" and len(change) == 3:
        return f"set {change[1]} = {_value(change[2])}"
    if op == "del" and len(change) == 2:
        return f"del {change[1]}"
    if op == "role" and len(change) == 3:
        return f"role {short_account(str(change[1]))} {change[2]}"
    if op == "delete" and len(change) == 1:
        return "delete"
    return " ".join([str(op), *(_value(arg) for arg in change[1:])])


def summarize_changes(changes: Sequence[Sequence[Any]]) -> str:
    """All changes of a transaction, ``; ``-separated, cut at :data:`MAX_SUMMARY_LENGTH`."""
    parts: list[str] = []
    length = 0
    for change in changes:
        part = summarize_change(change)
        parts.append(part)
        length += len(part) + 2
        if length > MAX_SUMMARY_LENGTH:
            break
    text = "; ".join(parts)
    if len(text) > MAX_SUMMARY_LENGTH or len(parts) < len(changes):
        more = len(changes) - len(parts)
        tail = f" (+{more} more)" if more else ""
        text = text[: MAX_SUMMARY_LENGTH - len(tail) - 1] + "…" + tail
    return text


def decode_row(row: RawRow) -> TxRow:
    """Decode one raw row; an undecodable transaction becomes a row with ``error`` set."""
    index, tx, stored_hash = row
    try:
        decoded = decode_transaction(tx)
    except InvalidTransaction as exc:
        return TxRow(index, None, f"undecodable: {exc.detail}", stored_hash, len(tx), None, exc.detail)
    changes = tuple(tuple(change) for change in decoded.changes)
    return TxRow(index, decoded.made_at, summarize_changes(decoded.changes), stored_hash, len(tx), changes)


def decode_rows(rows: Sequence[RawRow]) -> list[TxRow]:
    return [decode_row(row) for row in rows]
