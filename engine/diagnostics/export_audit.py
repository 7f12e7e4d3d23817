"""Exporting a bundle is an operator action (DESIGN §10): its record in the audit log.

Once a bundle is written, :func:`record_export` appends an ``export`` record
(:class:`~engine.model.audit.AuditAction`) to the audit log of the store it came from, signed
by the operator's key: which file (name, size, the SHA-256 of its manifest, which names the
SHA-256 of every other member), the redaction salt id, whether content went out, and how
much. The record follows the bundle: the bundle holds the audit log as it was before.

- A store is opened for writing just long enough to append (it was read-only for the
  export). When that is impossible — a read-only file or directory, a store a newer build
  wrote, a database that refuses — nothing is recorded and :class:`ExportRecord` says why;
  the bundle stays valid either way.
- A node exported over the wire records the export in its own store, signed by the node's
  key with the requesting admin as ``requested_by``: the ``export`` admin op (see
  ``docs/protocol.md``), whose arguments are :func:`export_details`, served by
  :class:`engine.net.serve.AdminActions`.

Nothing secret goes into a record (records are copied into later bundles): no key, no salt,
no content, no password (a store is named by its public location,
:func:`~engine.storage.opener.public_location`).
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.crypto import AccountKey
from engine.diagnostics.bundle import BundleResult
from engine.diagnostics.bundle_format import MANIFEST
from engine.errors import KintsugiError
from engine.model.audit import AuditAction
from engine.node.recovery import append_audit
from engine.protocol.messages import Admin, AdminResult, Message
from engine.protocol.messages.admin import intent_message
from engine.storage import Store, open_store
from engine.storage.opener import public_location

__all__ = ["AdminSession", "ExportRecord", "export_details", "node_export_recorder", "record_export"]


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """Whether the export was recorded: where, as which record (``seq``, ``head`` = the new
    head of the audit chain), or ``why`` not."""

    recorded: bool
    where: str
    seq: int | None = None
    head: str | None = None
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"recorded": self.recorded, "where": self.where, "seq": self.seq, "head": self.head, "why": self.why}


def _manifest_sha256(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return hashlib.sha256(zf.read(MANIFEST)).hexdigest()


def export_details(result: BundleResult) -> dict[str, Any]:
    """What the record of ``result`` says of the bundle (plain data, nothing secret)."""
    manifest = result.manifest
    scope = manifest.get("scope", {})
    return {
        "bundle": result.path.name,
        "bytes": result.bytes,
        "manifest_sha256": _manifest_sha256(result.path),
        "salt_id": manifest.get("redaction", {}).get("salt_id"),
        "content": bool(scope.get("content")),
        "covalues": int(scope.get("covalues", 0)),
        "transactions": int(scope.get("transactions", 0)),
    }


def _append(store: Store, actor: AccountKey, target: str, details: Mapping[str, Any], where: str) -> ExportRecord:
    record = append_audit(store, actor, AuditAction.EXPORT, target, details=details, at_ms=int(time.time() * 1000))
    return ExportRecord(True, where, int(record.fields()["seq"]), record.hash.hex())


def record_export(
    store: Store | str | os.PathLike[str], operator: AccountKey, result: BundleResult, *, target: str
) -> ExportRecord:
    """Append the ``export`` record of ``result`` to the audit log of ``store`` (an open
    writable store, or a store's location, opened for writing and closed again), signed by
    ``operator``. Never raises for a store that cannot take it: the record says why."""
    where = store.location if isinstance(store, Store) else public_location(store)
    try:
        details = export_details(result)
        if isinstance(store, Store):
            if store.readonly:
                return ExportRecord(False, where, why="the store is open read-only")
            return _append(store, operator, target, details, where)
        opened = open_store(store)
        try:
            return _append(opened, operator, target, details, where)
        finally:
            opened.close()
    except (KintsugiError, OSError) as exc:
        why = exc.detail if isinstance(exc, KintsugiError) else f"{exc.strerror or exc}"
        return ExportRecord(False, where, why=f"the store could not be written: {why}")


class _Challenge(Protocol):
    @property
    def node(self) -> str: ...

    @property
    def features(self) -> Sequence[str]: ...


class _Client(Protocol):
    @property
    def challenge(self) -> _Challenge | None: ...


class AdminSession(Protocol):
    """What :func:`node_export_recorder` uses of an open admin session
    (:class:`engine.net.remote.RemoteSession`)."""

    @property
    def url(self) -> str: ...

    @property
    def client(self) -> _Client: ...

    def next_rid(self) -> int: ...

    async def request(self, message: Admin, timeout: float) -> Message: ...


def node_export_recorder(
    session: AdminSession, operator: AccountKey, timeout: float
) -> Callable[[BundleResult], Awaitable[dict[str, Any]]]:
    """The ``record`` of an export made over ``session``: ask the node to record it
    (``admin{export}`` with :func:`export_details` and the operator's signed intent); the
    node appends the record to its own audit log, signed by its key. A node without the
    ``admin_export`` feature is not asked. Never raises: the result says what happened."""

    async def record(result: BundleResult) -> dict[str, Any]:
        where = session.url
        challenge = session.client.challenge
        if challenge is None or "admin_export" not in challenge.features:
            return ExportRecord(False, where, why="the node does not record exports (no admin_export)").to_json()
        args = export_details(result)
        intent = operator.sign(intent_message(challenge.node, "export", args))
        try:
            reply = await session.request(Admin(session.next_rid(), "export", args, intent), timeout)
        except (KintsugiError, TimeoutError) as exc:
            return ExportRecord(False, where, why=f"the node did not answer: {exc}").to_json()
        if not isinstance(reply, AdminResult) or not reply.ok or not isinstance(reply.result, dict):
            detail = reply.result if isinstance(reply, AdminResult) else reply.T
            return ExportRecord(False, where, why=f"the node refused: {detail}").to_json()
        return ExportRecord(True, where, int(reply.result.get("seq", 0)), str(reply.result.get("head", ""))).to_json()

    return record
