"""Checking and reporting on a bundle offline, and locating a fork between two bundles.

- :func:`verify_bundle` is ``kintsugi verify FILE.zip``: every member against the manifest's
  SHA-256, every checkpoint signature against its recorded hash (no content needed: a
  signature covers ``h(n)`` and names its session), every chain re-derived from the raw
  rows when they are included, and the audit chain.
- :func:`inspect_bundle` is ``kintsugi inspect FILE.zip``: the JSON shape of ``kintsugi
  inspect STORE`` plus the matrix, the anomalies and the manifest's summary.
- :func:`locate_fork` puts the fork between two copies of a session within one checkpoint
  batch from their checkpoint hashes alone.

Nothing here changes the bundle; read failures are those of
:class:`~engine.diagnostics.bundle_read.Bundle`.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.crypto import signed_message, verify_signature
from engine.diagnostics.bundle_format import AUDIT, MANIFEST, ROW_INDEX_STRIDE
from engine.diagnostics.bundle_read import Bundle
from engine.diagnostics.chain_verify import ChainVerifier
from engine.errors import BundleError
from engine.ids import SessionID, parse_session_id
from engine.model.audit import verify_chain

__all__ = ["ForkWindow", "check_checksums", "describe_record", "inspect_bundle", "locate_fork", "verify_bundle"]

#: Bytes read per checksum chunk.
CHECKSUM_CHUNK = 1024 * 1024


def _checksums(bundle: Bundle) -> tuple[int, list[dict[str, Any]]]:
    """Every member against the manifest: each problem has ``code`` ``invalid_bundle``
    (:class:`~engine.errors.BundleError`) and a ``problem`` in words."""
    problems: list[dict[str, Any]] = []
    files = bundle.manifest.get("files", {})
    names = set(bundle.zip.namelist()) - {MANIFEST}
    for name in sorted(names - set(files)):
        problems.append({"file": name, "problem": "not listed in the manifest"})
    for name, expected in sorted(files.items()):
        if name not in names:
            problems.append({"file": name, "problem": "listed in the manifest but missing"})
            continue
        sha = hashlib.sha256()
        size = 0
        try:
            with bundle.zip.open(name) as fh:
                while chunk := fh.read(CHECKSUM_CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
        except (zipfile.BadZipFile, OSError) as exc:
            problems.append({"file": name, "problem": f"unreadable: {exc}"})
            continue
        if sha.hexdigest() != expected.get("sha256") or size != expected.get("bytes"):
            problems.append({"file": name, "problem": "checksum does not match the manifest"})
    for problem in problems:
        problem["code"] = BundleError.code
    return len(files), problems


def check_checksums(path: str | Path) -> int:
    """Check every member of the bundle at ``path`` against its manifest; returns how many
    files were checked. Raises :class:`~engine.errors.BundleError` (``problem`` ``checksum``)
    at the first member that is missing, unlisted, unreadable or does not match."""
    with Bundle(path) as bundle:
        files, problems = _checksums(bundle)
    if problems:
        first = problems[0]
        raise BundleError(f"{path}: {first['file']}: {first['problem']}", "checksum")
    return files


def _verify_checkpoints(covalue: str, s: dict[str, Any]) -> dict[str, Any] | None:
    """The first recorded checkpoint whose signature does not verify (None: all do). Only
    checkpoints the export found verified count: one past a recorded break is known bad."""
    account = parse_session_id(s["id"]).account
    for n, h, sig in s["checkpoints"]:
        if int(n) > int(s["verified"]):
            continue
        if not verify_signature(
            account, signed_message(covalue, s["id"], int(n), bytes.fromhex(h)), bytes.fromhex(sig)
        ):
            return {
                "covalue": covalue,
                "session": s["id"],
                "index": int(n) - 1,
                "problem": f"signature of checkpoint {n} does not verify",
            }
    return None


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """``{"ok", "files", "covalues", "sessions", "checkpoints", "chains_verified", "problems",
    "recorded_breaks", "audit"}``: ``ok`` is False when a member does not match the manifest,
    a recorded checkpoint signature or an included chain does not verify, or the audit log is
    broken. Breaks the bundle *records* (a corrupt session at export time) are listed in
    ``recorded_breaks`` and do not make the bundle itself fail."""
    with Bundle(path) as bundle:
        files, problems = _checksums(bundle)
        sessions = checkpoints = chains = 0
        recorded = []
        records = bundle.records() if not problems else {}
        for cid, record in sorted(records.items()):
            for s in record["sessions"]:
                sessions += 1
                checkpoints += len(s["checkpoints"])
                if s["broken"]:
                    recorded.append({"covalue": cid, "session": s["id"], **s["broken"]})
                bad = _verify_checkpoints(cid, s)
                if bad is not None:
                    problems.append(bad)
                    continue
                source = bundle.session_source(cid, SessionID(s["id"]))
                if source is None:
                    continue
                failure = ChainVerifier(source).run(10 * ROW_INDEX_STRIDE)
                chains += 1
                if failure is not None and not s["broken"]:
                    problems.append(
                        {"covalue": cid, "session": s["id"], "index": failure.index, "problem": failure.reason}
                    )
        audit_error = verify_chain(bundle.audit()) if bundle.has(AUDIT) and not problems else None
        if audit_error is not None:
            problems.append({"file": AUDIT, "problem": audit_error.detail})
        return {
            "ok": not problems,
            "files": files,
            "covalues": len(records),
            "sessions": sessions,
            "checkpoints": checkpoints,
            "chains_verified": chains,
            "problems": problems,
            "recorded_breaks": recorded,
            "audit": "ok" if audit_error is None else "broken",
        }


def describe_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record in ``kintsugi inspect``'s shape (see :func:`engine.diagnostics.report.describe_covalue`)."""
    verified = [s for s in record["sessions"] if not s["broken"]]
    broken = [s for s in record["sessions"] if s["broken"]]
    sessions = [
        {"id": s["id"], "kind": s["kind"], "count": s["count"], "head": s["head"], "verified": True}
        for s in sorted(verified, key=lambda s: s["id"])
    ]
    sessions += [
        {"id": s["id"], "kind": s["kind"], "count": None, "head": None, "verified": False}
        for s in sorted(broken, key=lambda s: s["id"])
    ]
    flags = []
    if record["deleted"]:
        flags.append("deleted")
    if broken:
        flags.append("corrupt")
    if any(s["kind"] == "conflict" for s in record["sessions"]):
        flags.append("conflict_session")
    if not record["deleted"] and record["invalid"]:
        flags.append("invalid_transactions")
    return {
        "id": record["id"],
        "type": record["type"],
        "deleted": record["deleted"],
        "sessions": sessions,
        "flags": flags,
    }


def inspect_bundle(path: str | Path) -> dict[str, Any]:
    """``{"covalues", "kv", "matrix", "anomalies", "bundle"}``: the shape of ``kintsugi
    inspect STORE`` plus what a bundle adds (CAS keys are tokens when redacted)."""
    with Bundle(path) as bundle:
        covalues = [describe_record(r) for _cid, r in sorted(bundle.records().items())]
        kv = [
            {"namespace": slot.namespace, "key": slot.key, "generation": slot.generation, "state": slot.state}
            for slot, _history, _dropped in bundle.slots()
        ]
        matrix = bundle.matrix()
        manifest = bundle.manifest
        return {
            "covalues": covalues,
            "kv": sorted(kv, key=lambda k: (k["namespace"], k["key"])),
            "matrix": matrix.to_json() if matrix is not None else None,
            "anomalies": [a.to_json() for a in bundle.anomalies()],
            "bundle": {
                key: manifest.get(key) for key in ("kintsugi", "protocol", "created_at", "target", "scope", "redaction")
            },
        }


@dataclass(frozen=True, slots=True)
class ForkWindow:
    """Where two copies of a session part: rows ``[0, after)`` are common (their checkpoint
    hashes agree), and the first differing row is below ``before`` (None: no checkpoint
    after ``after`` is shared, so it lies somewhere after ``after``). ``same`` is True when
    every shared checkpoint agrees."""

    after: int
    before: int | None
    same: bool


def locate_fork(left: Sequence[tuple[int, bytes]], right: Sequence[tuple[int, bytes]]) -> ForkWindow:
    """Locate the fork between two copies of one session from their checkpoint hashes.

    Hash chains make agreement at ``n`` mean agreement on every row before ``n``, so the fork
    lies after the last shared checkpoint that agrees and at or before the first shared one
    that does not: within one write batch when both copies were checkpointed at the same
    counts (an unrepaired fork keeps the common prefix's checkpoints)."""
    theirs = dict(right)
    shared = sorted(n for n, _h in left if n in theirs)
    mine = dict(left)
    agreeing = [n for n in shared if mine[n] == theirs[n]]
    differing = [n for n in shared if mine[n] != theirs[n]]
    if not differing:
        return ForkWindow(agreeing[-1] if agreeing else 0, None, True)
    first_bad = differing[0]
    good = [n for n in agreeing if n < first_bad]
    after = good[-1] if good else 0
    return ForkWindow(after, first_bad, False)
