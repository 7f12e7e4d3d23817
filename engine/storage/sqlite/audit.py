"""The audit log, recovery receipts and the atomic recovery write, in a SQLite store.

Rules kept here:

- The audit log is append-only: a record is stored only if it follows the last stored one
  (its ``seq`` is the next number and its ``prev`` is the last record's hash), checked in the
  same transaction that inserts it, so two writers can never fork the log; nothing here
  updates or deletes an ``audit`` row.
- A recovery's replacements, its receipt and its audit record commit as one transaction:
  after a crash the store holds all of them or none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from engine.errors import StorageBugError
from engine.model.audit import AuditRecord
from engine.storage.interface import CoValueReplace, StoredReceipt
from engine.storage.sqlite import rows

__all__ = ["append_audit_row", "read_audit", "read_receipts", "recovery_rows"]


def read_audit(conn: sqlite3.Connection) -> list[AuditRecord]:
    """Every audit record, oldest first."""
    return [AuditRecord(b, h, s) for b, h, s in conn.execute("SELECT body, hash, sig FROM audit ORDER BY seq")]


def append_audit_row(conn: sqlite3.Connection, record: AuditRecord) -> None:
    """Append ``record`` inside the caller's transaction; raises :class:`StorageBugError`
    when it does not follow the last stored record (reread the log and make it again)."""
    fields = record.fields()
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (0, None) if last is None else last
    if fields["seq"] != seq + 1 or (prev is not None and fields["prev"] != prev):
        raise StorageBugError(f"audit record {fields['seq']} does not follow record {seq} of the stored log")
    conn.execute(
        "INSERT INTO audit (seq, body, hash, sig) VALUES (?, ?, ?, ?)",
        (fields["seq"], record.body, record.hash, record.sig),
    )


def read_receipts(conn: sqlite3.Connection) -> list[StoredReceipt]:
    """Every stored receipt, oldest first."""
    return [
        StoredReceipt(i, at, b, s)
        for i, at, b, s in conn.execute("SELECT id, at, body, sig FROM receipts ORDER BY at, id")
    ]


def recovery_rows(
    conn: sqlite3.Connection,
    replaces: Sequence[CoValueReplace],
    receipt: StoredReceipt | None,
    audit: AuditRecord | None,
) -> None:
    """Every replacement of a recovery, its receipt and its audit record, inside the
    caller's transaction (see :meth:`Store.apply_recovery
    <engine.storage.interface.Store.apply_recovery>`)."""
    for item in replaces:
        covalue = item.header.covalue_id()
        rows.put_header(conn, item.header)
        for sid in item.remove:
            rows.drop_session(conn, covalue, sid)
        for log in item.logs:
            rows.write_session_whole(conn, log)
        if item.deleted:
            rows.tombstone_rows(conn, item.header, [], [])
    if receipt is not None:
        conn.execute(
            "INSERT OR IGNORE INTO receipts (id, at, body, sig) VALUES (?, ?, ?, ?)",
            (receipt.id, receipt.at_ms, receipt.body, receipt.sig),
        )
    if audit is not None:
        append_audit_row(conn, audit)
