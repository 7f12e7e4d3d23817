"""The audit log, recovery receipts and the atomic recovery write, in a PostgreSQL store.

The rules of :mod:`engine.storage.sqlite.audit`: the audit log is append-only and a record is
stored only if it follows the last stored one, checked in the transaction that inserts it; a
recovery's replacements, receipt and audit record commit as one transaction. Several nodes may
append at once, so the check holds the ``audit`` table in SHARE ROW EXCLUSIVE mode for its
transaction (appends wait for each other; reads go on): two writers can never fork the log.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from engine.errors import StorageBugError
from engine.model.audit import AuditRecord
from engine.storage.interface import CoValueReplace, StoredReceipt
from engine.storage.postgres import rows

__all__ = ["append_audit_row", "read_audit", "read_receipts", "recovery_rows"]


async def read_audit(conn: asyncpg.Connection) -> list[AuditRecord]:
    """Every audit record, oldest first."""
    found = await conn.fetch("SELECT body, hash, sig FROM audit ORDER BY seq")
    return [AuditRecord(bytes(b), bytes(h), bytes(s)) for b, h, s in found]


async def append_audit_row(conn: asyncpg.Connection, record: AuditRecord) -> None:
    """Append ``record`` inside the caller's transaction; raises :class:`StorageBugError`
    when it does not follow the last stored record (reread the log and make it again)."""
    fields = record.fields()
    await conn.execute("LOCK TABLE audit IN SHARE ROW EXCLUSIVE MODE")
    last = await conn.fetchrow("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
    seq, prev = (0, None) if last is None else (int(last[0]), bytes(last[1]))
    if fields["seq"] != seq + 1 or (prev is not None and fields["prev"] != prev):
        raise StorageBugError(f"audit record {fields['seq']} does not follow record {seq} of the stored log")
    await conn.execute(
        "INSERT INTO audit (seq, body, hash, sig) VALUES ($1, $2, $3, $4)",
        fields["seq"],
        record.body,
        record.hash,
        record.sig,
    )


async def read_receipts(conn: asyncpg.Connection) -> list[StoredReceipt]:
    """Every stored receipt, oldest first."""
    found = await conn.fetch("SELECT id, at, body, sig FROM receipts ORDER BY at, id")
    return [StoredReceipt(bytes(i), int(at), bytes(b), bytes(s)) for i, at, b, s in found]


async def recovery_rows(
    conn: asyncpg.Connection,
    replaces: Sequence[CoValueReplace],
    receipt: StoredReceipt | None,
    audit: AuditRecord | None,
) -> None:
    """Every replacement of a recovery, its receipt and its audit record, inside the
    caller's transaction (see :meth:`Store.apply_recovery
    <engine.storage.interface.Store.apply_recovery>`)."""
    for item in replaces:
        covalue = item.header.covalue_id()
        await rows.put_header(conn, item.header)
        for sid in item.remove:
            await rows.drop_session(conn, covalue, sid)
        for log in item.logs:
            await rows.write_session_whole(conn, log)
        if item.deleted:
            await rows.tombstone_rows(conn, item.header, [], [])
    if receipt is not None:
        await conn.execute(
            "INSERT INTO receipts (id, at, body, sig) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            receipt.id,
            receipt.at_ms,
            receipt.body,
            receipt.sig,
        )
    if audit is not None:
        await append_audit_row(conn, audit)
