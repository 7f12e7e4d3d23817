"""``kintsugi audit``: read and check a store's audit log of operator actions (DESIGN §10).

- ``audit verify STORE``: the whole chain (every record's hash, link, seq and signature),
  every stored receipt's signature and archive, that every ``recover`` record names a
  receipt that is there and every receipt is named by a record. Exit 0 when all of it
  holds, 1 otherwise (the first failure named).
- ``audit show STORE``: the records, oldest first, and whether the log verifies.

The store is opened read-only.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from engine.cli.output import EXIT_FAILED, EXIT_OK, Output, add_json_flag
from engine.cli.stores import open_readonly
from engine.errors import AuditError, KintsugiError
from engine.model.audit import AuditAction, AuditRecord, verify_chain
from engine.storage import Store


def _open(path: str) -> Store:
    return open_readonly(path)


def check_store(store: Store) -> dict[str, Any]:
    """The audit log's and receipts' state as ``audit verify --json`` prints it."""
    from engine.node.recovery import verify_receipts

    records = store.audit_log()
    problems: list[str] = []
    failure = verify_chain(records)
    if failure is not None:
        problems.append(failure.detail)
    receipts = dict(verify_receipts(store))
    problems += [f"receipt {rid.hex()}: does not verify" for rid, ok in receipts.items() if not ok]
    if failure is None:
        known = {rid.hex() for rid in receipts}
        named_by_records: set[str] = set()
        for record in records:
            f = record.fields()
            named = f["details"].get("receipt") if isinstance(f["details"], dict) else None
            changed = (f["details"].get("summary") or {}).get("covalues", 1)
            if f["action"] == AuditAction.RECOVER and isinstance(named, str):
                named_by_records.add(named)
                if changed and named not in known:
                    problems.append(f"record {f['seq']}: names receipt {named}, which is not in the store")
        # A receipt is stored in the same transaction as the record of its recovery: one that
        # no record names means that record was removed (the chain alone cannot show the
        # newest records cut off).
        problems += [f"receipt {rid}: no audit record names it" for rid in sorted(known - named_by_records)]
    return {
        "ok": not problems,
        "records": len(records),
        "receipts": len(receipts),
        "head": records[-1].hash.hex() if records else None,
        "problems": problems,
    }


def _when(at_ms: int) -> str:
    return dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _record_line(record: AuditRecord) -> str:
    try:
        f = record.fields()
    except AuditError as exc:
        return f"  ?     unreadable record: {exc.detail}"
    details = f["details"] if isinstance(f["details"], dict) else {}
    extra = ", ".join(f"{k} {v}" for k, v in details.items() if k in ("peer", "receipt", "requested_by", "file"))
    return f"  {f['seq']:>4}  {_when(f['at'])}  {f['action']:<8} {f['target']}  by {f['actor']}  {extra}".rstrip()


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    store = _open(args.store)
    try:
        report = check_store(store)
    finally:
        store.close()
    head = "OK" if report["ok"] else "TAMPERED"
    lines = [f"{head}: {report['records']} audit records, {report['receipts']} receipts"]
    if report["head"]:
        lines.append(f"  head {report['head']}")
    lines += [f"  {p}" for p in report["problems"]]
    out.result(report, "\n".join(lines))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    store = _open(args.store)
    try:
        records = store.audit_log()
        report = check_store(store)
    finally:
        store.close()
    rows: list[dict[str, Any]] = []
    for record in records:
        try:
            rows.append(record.to_json())
        except KintsugiError as exc:
            rows.append({"hash": record.hash.hex(), "error": exc.detail})
    lines = [_record_line(r) for r in records] or ["  (no operator actions recorded)"]
    state = "verifies" if report["ok"] else "DOES NOT VERIFY: " + "; ".join(report["problems"])
    lines.append(f"{len(records)} records; the log {state}")
    out.result({"records": rows, "verify": report}, "\n".join(lines))
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser(
        "audit",
        help="show or verify a store's audit log of operator actions",
        description="Every operator action on a store (connect, elevate, recover, export) is a signed, "
        "hash-chained audit record. 'verify' finds any edited, removed or reordered record.",
    )
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    for name, func, help_text in (
        ("verify", cmd_verify, "check the chain, signatures and receipts (exit 0 intact, 1 tampered)"),
        ("show", cmd_show, "list the records, oldest first, and whether the log verifies"),
    ):
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        p.add_argument("store", help="store directory or file, or a postgresql:// store (opened read-only)")
        add_json_flag(p)
