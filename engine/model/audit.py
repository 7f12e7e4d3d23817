"""The audit log (DESIGN §10): operator actions as an append-only, hash-chained, signed record.

Every operator action (connect, elevate, recover, export) appends one :class:`AuditRecord`.
Pure data and rules, like a session log:

- A record's ``body`` is the canonical CBOR of ``{"v", "seq", "at", "actor", "action",
  "target", "details", "prev"}``; ``seq`` counts from 1 without gaps and ``prev`` is the
  previous record's hash (the chain base :data:`AUDIT_BASE` for the first).
- ``hash = BLAKE2b-256("kintsugi/audit/v1" ‖ body)``, so the hash covers the link to the
  previous record, and ``sig = Ed25519(actor, "kintsugi/audit-sig/v1" ‖ hash)``: the actor's
  AccountID names the key that must have signed (self-certifying, as for sessions).
- :func:`verify_chain` finds any edited byte (hash or signature), any removed or reordered
  record (seq and prev), and a record signed by anyone but its actor. What no chain can show
  alone is that its newest records were cut off: compare the head (:attr:`AuditRecord.hash`
  of the last record) with one kept elsewhere (a receipt, a bundle, the node's copy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from engine import codec
from engine.crypto import AccountKey, hash_bytes, verify_signature
from engine.errors import AuditError, InvalidCBOR, InvalidId
from engine.ids import AccountID, parse_account_id

__all__ = ["AUDIT_BASE", "AuditAction", "AuditRecord", "append_record", "verify_chain"]

#: Version of the record body.
AUDIT_VERSION = 1
HASH_DOMAIN = b"kintsugi/audit/v1"
SIG_DOMAIN = b"kintsugi/audit-sig/v1"
#: ``prev`` of the first record.
AUDIT_BASE = hash_bytes(b"kintsugi/audit/base/v1")
#: Longest text accepted for an action or a target.
MAX_AUDIT_TEXT = 2000


class AuditAction(StrEnum):
    CONNECT = "connect"
    ELEVATE = "elevate"
    RECOVER = "recover"
    EXPORT = "export"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored record: its CBOR ``body`` exactly as signed, its ``hash`` and ``sig``."""

    body: bytes
    hash: bytes
    sig: bytes

    def fields(self) -> dict[str, Any]:
        """The decoded body. Raises :class:`AuditError` when it is not a record body."""
        try:
            obj = codec.decode(self.body, require_canonical=True)
        except InvalidCBOR as exc:
            raise AuditError(f"record body is not canonical CBOR: {exc.detail}") from exc
        keys = {"v", "seq", "at", "actor", "action", "target", "details", "prev"}
        if not isinstance(obj, dict) or set(obj) != keys:
            raise AuditError("record body does not have the record's fields")
        if obj["v"] != AUDIT_VERSION or type(obj["seq"]) is not int or type(obj["at"]) is not int:
            raise AuditError("record version, seq or time is not what this build writes")
        if not isinstance(obj["prev"], bytes) or not isinstance(obj["details"], dict):
            raise AuditError("record prev or details has the wrong type")
        return obj

    def to_json(self) -> dict[str, Any]:
        """The record as ``kintsugi audit show`` prints it (hashes and signature in hex)."""
        f = self.fields()
        return {
            "seq": f["seq"],
            "at": f["at"],
            "actor": f["actor"],
            "action": f["action"],
            "target": f["target"],
            "details": f["details"],
            "prev": f["prev"].hex(),
            "hash": self.hash.hex(),
            "sig": self.sig.hex(),
        }


def _hash(body: bytes) -> bytes:
    return hash_bytes(HASH_DOMAIN + body)


def append_record(
    previous: AuditRecord | None,
    actor: AccountKey,
    action: AuditAction | str,
    target: str,
    *,
    details: Mapping[str, Any],
    at_ms: int,
) -> AuditRecord:
    """The record that follows ``previous`` (None: the first), signed by ``actor``.

    ``details`` must be CBOR-encodable plain data (before and after heads, plan hash, peer,
    counts); never put a secret in it: records are copied into diagnostic bundles.
    """
    if len(str(action)) > MAX_AUDIT_TEXT or len(target) > MAX_AUDIT_TEXT:
        raise AuditError("audit action and target are short texts")
    seq, prev = (1, AUDIT_BASE) if previous is None else (previous.fields()["seq"] + 1, previous.hash)
    body = codec.encode(
        {
            "v": AUDIT_VERSION,
            "seq": seq,
            "at": at_ms,
            "actor": actor.account_id,
            "action": str(action),
            "target": target,
            "details": dict(details),
            "prev": prev,
        }
    )
    digest = _hash(body)
    return AuditRecord(body, digest, actor.sign(SIG_DOMAIN + digest))


def verify_chain(records: Iterable[AuditRecord]) -> AuditError | None:
    """Check a whole log, oldest first: every body decodes, hashes to its ``hash``, links
    to the record before it with consecutive ``seq``, and is signed by its actor. Returns the
    first failure (its ``detail`` names the record) or None."""
    prev = AUDIT_BASE
    for seq, record in enumerate(records, start=1):
        try:
            f = record.fields()
        except AuditError as exc:
            return AuditError(f"record {seq}: {exc.detail}")
        if f["seq"] != seq:
            return AuditError(f"record {seq}: carries seq {f['seq']} (a record was removed or moved)")
        if f["prev"] != prev:
            return AuditError(f"record {seq}: does not follow the record before it")
        if _hash(record.body) != record.hash:
            return AuditError(f"record {seq}: its hash does not match its contents")
        try:
            actor = parse_account_id(f["actor"])
        except InvalidId:
            return AuditError(f"record {seq}: actor is not an AccountID")
        if not verify_signature(AccountID(actor), SIG_DOMAIN + record.hash, record.sig):
            return AuditError(f"record {seq}: signature does not verify under {actor}")
        prev = record.hash
    return None
