"""Reading a diagnostic bundle offline: a bundle is a target like a store.

:class:`Bundle` opens a zip written by :mod:`engine.diagnostics.bundle`, checks its manifest
(format and version) and reads its members on demand: CoValue records as
:class:`~engine.diagnostics.covalue_summary.CoValueSummary` (what a viewer lists), content
snapshots (tokens in place of keys and values when redacted), CAS slots with their
histories, the peers × sessions matrix, sync events, peers and peer log, anomalies, audit
log, config and log lines. With raw content, :meth:`Bundle.session_source` reads a session's
rows by window straight from the zip (row members are stored uncompressed), so a viewer and
:class:`~engine.diagnostics.chain_verify.ChainVerifier` work on a bundle as on a store.

Checking a bundle (``kintsugi verify FILE.zip``), reporting on it (``kintsugi inspect
FILE.zip``) and locating a fork between two bundles are in
:mod:`engine.diagnostics.bundle_verify`.

Reading never changes the bundle; a damaged or foreign file raises
:class:`~engine.errors.BundleError` (code ``invalid_bundle``), a missing one
:class:`~engine.errors.StoreNotFound`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.content.comap import Entry
from engine.content.common import InvalidTx
from engine.crypto import chain_base
from engine.diagnostics.anomalies import Anomaly, anomalies_from_json
from engine.diagnostics.bundle_format import (
    ANOMALIES,
    AUDIT,
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    CONFIG,
    CONTENT,
    COVALUES,
    EVENTS,
    INDEX_ENTRY,
    KV,
    LOGS,
    MANIFEST,
    MATRIX,
    PEERS,
    ROW_HEADER,
    ROW_INDEX_STRIDE,
    TOMBSTONES,
    read_raw_value,
)
from engine.diagnostics.chain_verify import ChainBreak
from engine.diagnostics.covalue_summary import (
    Badge,
    ContentSnapshot,
    CoValueSummary,
    SessionSummary,
    TombstoneInfo,
    order_lanes,
)
from engine.diagnostics.matrix import PeersSessionsMatrix, matrix_from_json
from engine.errors import BundleError, InvalidInput, KintsugiError, StoreNotFound
from engine.ids import AccountID, CoValueID, SessionID, SessionKind, parse_session_id
from engine.kv.detail import SlotRow
from engine.kv.store import CASRecord
from engine.model.audit import AuditRecord
from engine.storage.interface import RawRow
from engine.sync.events import PeerLogEntry, SyncEvent, peer_log_from_json
from engine.sync.peers import PeerInfo, peer_info_from_json

__all__ = [
    "Bundle",
    "BundleSessionSource",
    "content_of",
    "is_bundle_path",
    "summary_of",
]

#: Bytes of a local file header before its name and extra field (the zip format).
_LOCAL_HEADER = 30


def is_bundle_path(location: str | Path) -> bool:
    """True when ``location`` names a bundle (a ``.zip`` file) rather than a store."""
    return str(location).lower().endswith(".zip")


def _bad(path: Path, why: str, problem: str = "damaged") -> BundleError:
    return BundleError(f"{path} is not a readable Kintsugi bundle: {why}", problem)


class Bundle:
    """An open bundle. Not thread-safe; :meth:`close` when done."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise StoreNotFound(f"{self.path}: no such bundle")
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise _bad(self.path, f"not a zip archive ({exc})", "not_a_zip") from exc
        if not self.has(MANIFEST):
            self.zip.close()
            raise _bad(self.path, f"no {MANIFEST} (a zip, but not a Kintsugi bundle)", "no_manifest")
        try:
            self.manifest: dict[str, Any] = self._json(MANIFEST)
        except InvalidInput:
            self.zip.close()
            raise
        if self.manifest.get("format") != BUNDLE_FORMAT:
            self.zip.close()
            raise _bad(self.path, "no Kintsugi manifest", "no_manifest")
        version = self.manifest.get("format_version")
        if type(version) is not int or version > BUNDLE_VERSION:
            self.zip.close()
            raise _bad(
                self.path, f"format version {version!r} is newer than this build reads ({BUNDLE_VERSION})", "too_new"
            )
        self._records: dict[CoValueID, dict[str, Any]] | None = None
        self._raw = open(self.path, "rb")  # noqa: SIM115 - row reads seek here; closed by close()

    def close(self) -> None:
        self.zip.close()
        self._raw.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- members ------------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self.zip.NameToInfo

    def _json(self, name: str) -> Any:
        try:
            with self.zip.open(name) as fh:
                return json.load(fh)
        except KeyError:
            raise _bad(self.path, f"{name} is missing") from None
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise _bad(self.path, f"{name}: {exc}") from exc

    def _lines(self, name: str) -> Iterator[Any]:
        if not self.has(name):
            return
        try:
            with self.zip.open(name) as fh:
                for line in io.TextIOWrapper(fh, encoding="utf-8"):
                    if line.strip():
                        yield json.loads(line)
        except (ValueError, zipfile.BadZipFile, OSError) as exc:
            raise _bad(self.path, f"{name}: {exc}") from exc

    @property
    def redacted(self) -> bool:
        return bool(self.manifest.get("redaction", {}).get("policy") == "tokens")

    @property
    def has_content(self) -> bool:
        return bool(self.manifest.get("scope", {}).get("content"))

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.manifest.get("target") or {})

    # -- CoValues -----------------------------------------------------------------------------

    def records(self) -> dict[CoValueID, dict[str, Any]]:
        """Every CoValue record (``covalues.jsonl`` lines), by id."""
        if self._records is None:
            self._records = {CoValueID(r["id"]): r for r in self._lines(COVALUES)}
        return self._records

    def record(self, covalue: CoValueID) -> dict[str, Any] | None:
        return self.records().get(covalue)

    def summaries(self) -> list[CoValueSummary]:
        """What a viewer lists, sorted by id (``forked`` is left to the sync events)."""
        return [summary_of(r) for _cid, r in sorted(self.records().items())]

    def contents(self) -> Iterator[ContentSnapshot]:
        for row in self._lines(CONTENT):
            yield content_of(row, self.record(CoValueID(row["id"])))

    def content(self, covalue: CoValueID) -> ContentSnapshot | None:
        return next((c for c in self.contents() if c.covalue == covalue), None)

    def checkpoints(self, covalue: CoValueID, session: SessionID) -> list[tuple[int, bytes]]:
        """``(n, h(n))`` at every recorded checkpoint of a session (empty: none)."""
        s = _session(self.record(covalue), session)
        return [(int(n), bytes.fromhex(h)) for n, h, _sig in s["checkpoints"]] if s else []

    def conflict_fork_record(self, covalue: CoValueID, conflict: SessionID) -> bytes | None:
        """The fork record the exported store kept for a conflict session (see
        :mod:`engine.model.fork`), or None."""
        s = _session(self.record(covalue), conflict)
        return bytes.fromhex(s["fork_record"]) if s is not None and s.get("fork_record") else None

    def session_source(self, covalue: CoValueID, session: SessionID) -> BundleSessionSource | None:
        """A windowed reader of the session's raw rows (None: the bundle has none)."""
        record = self.record(covalue)
        s = _session(record, session)
        if s is None or not s.get("rows"):
            return None
        return BundleSessionSource(self, covalue, s)

    # -- the rest -----------------------------------------------------------------------------

    def slots(self) -> list[tuple[SlotRow, list[CASRecord], int]]:
        """Every CAS slot (keys and values as tokens when redacted), its history and the
        number of older records left out."""
        out = []
        for row in self._lines(KV):
            present = row["state"] == "present"
            slot = SlotRow(
                row["namespace"],
                row["key"],
                row["generation"],
                present,
                read_raw_value(row["value"]) if present else None,
                row.get("deleted_at"),
                AccountID(row["deleted_by"]) if row.get("deleted_by") else None,
            )
            history = [
                CASRecord(
                    slot.namespace, slot.key, h["at_ms"], h["expected_gen"], h["outcome"], h["generation"], h["writer"]
                )
                for h in row["history"]
            ]
            out.append((slot, history, int(row.get("history_dropped", 0))))
        return out

    def matrix(self) -> PeersSessionsMatrix | None:
        data = self._json(MATRIX) if self.has(MATRIX) else None
        if not isinstance(data, dict) or "peers" not in data:
            return None
        return matrix_from_json(data)

    def matrix_note(self) -> str:
        data = self._json(MATRIX) if self.has(MATRIX) else {}
        return str(data.get("note", "")) if isinstance(data, dict) else ""

    def events(self) -> list[SyncEvent]:
        out = []
        for row in self._lines(EVENTS):
            try:
                out.append(SyncEvent.from_json(row))
            except KintsugiError:
                continue
        return out

    def peers(self) -> tuple[list[PeerInfo] | None, list[PeerLogEntry] | None]:
        data = self._json(PEERS) if self.has(PEERS) else {}
        peers = data.get("peers")
        log = data.get("log")
        return (
            [peer_info_from_json(p) for p in peers] if isinstance(peers, list) else None,
            peer_log_from_json(log) if isinstance(log, list) else None,
        )

    def anomalies(self) -> list[Anomaly]:
        return anomalies_from_json(self._json(ANOMALIES)) if self.has(ANOMALIES) else []

    def tombstones(self) -> list[dict[str, Any]]:
        data = self._json(TOMBSTONES) if self.has(TOMBSTONES) else []
        return list(data) if isinstance(data, list) else []

    def audit(self) -> list[AuditRecord]:
        return [
            AuditRecord(bytes.fromhex(r["body"]), bytes.fromhex(r["hash"]), bytes.fromhex(r["sig"]))
            for r in self._lines(AUDIT)
        ]

    def config(self) -> dict[str, Any]:
        return dict(self._json(CONFIG)) if self.has(CONFIG) else {}

    def logs(self) -> list[dict[str, Any]]:
        return list(self._lines(LOGS))

    # -- raw rows -----------------------------------------------------------------------------

    def _data_offset(self, name: str) -> int:
        """Where the bytes of stored member ``name`` start in the file."""
        info = self.zip.getinfo(name)
        if info.compress_type != zipfile.ZIP_STORED:
            raise _bad(self.path, f"{name} is compressed; row files are stored")
        self._raw.seek(info.header_offset)
        header = self._raw.read(_LOCAL_HEADER)
        if len(header) != _LOCAL_HEADER or header[:4] != b"PK\x03\x04":
            raise _bad(self.path, f"{name}: bad local header")
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        return info.header_offset + _LOCAL_HEADER + name_len + extra_len

    def _read_at(self, offset: int, size: int) -> bytes:
        self._raw.seek(offset)
        return self._raw.read(size)


def _session(record: dict[str, Any] | None, session: str) -> dict[str, Any] | None:
    if record is None:
        return None
    return next((s for s in record["sessions"] if s["id"] == session), None)


def _break(obj: dict[str, Any] | None) -> ChainBreak | None:
    return ChainBreak(int(obj["index"]), str(obj["code"]), str(obj["reason"])) if obj else None


def summary_of(record: dict[str, Any]) -> CoValueSummary:
    """A record as a viewer's summary (the ``forked`` badge comes from sync events)."""
    sessions = []
    for s in record["sessions"]:
        parsed = parse_session_id(s["id"])
        sessions.append(
            SessionSummary(
                SessionID(s["id"]), parsed.kind, parsed.account, int(s["count"]), parsed.conflict_n, _break(s["broken"])
            )
        )
    invalid = tuple(InvalidTx(SessionID(i["session"]), int(i["index"]), str(i["reason"])) for i in record["invalid"])
    tombstones = tuple(
        TombstoneInfo(
            CoValueID(record["id"]),
            SessionID(t["session"]),
            AccountID(t["by"]),
            t["at"],
            bool(t["valid"]),
            t["problem"],
        )
        for t in record["tombstones"]
    )
    badges = set()
    if record["deleted"]:
        badges.add(Badge.DELETED)
    if any(s.kind is SessionKind.CONFLICT for s in sessions):
        badges.add(Badge.CONFLICT_SESSION)
    if any(s.corrupt is not None for s in sessions):
        badges.add(Badge.CORRUPT)
    if invalid and not record["deleted"]:
        badges.add(Badge.INVALID_TRANSACTIONS)
    return CoValueSummary(
        id=CoValueID(record["id"]),
        type=str(record["type"]),
        name=record.get("name"),
        deleted=bool(record["deleted"]),
        sessions=tuple(order_lanes(sessions)),
        badges=frozenset(badges),
        invalid=invalid,
        tombstones=tombstones,
        transactions=int(record["transactions"]),
        analysed=bool(record["analysed"]),
    )


def content_of(row: dict[str, Any], record: dict[str, Any] | None) -> ContentSnapshot:
    """A ``content.jsonl`` line as a content snapshot (tokens stay tokens)."""
    entries = {}
    for key, value, deleted, made_at, session, index, change in row["entries"]:
        entries[str(key)] = Entry(
            read_raw_value(value), bool(deleted), (int(made_at), str(session), int(index), int(change))
        )
    summary = summary_of(record) if record is not None else None
    return ContentSnapshot(
        covalue=CoValueID(row["id"]),
        type=str(row["type"]),
        name=summary.name if summary else None,
        deleted=summary.deleted if summary else False,
        entries=entries,
        tombstones=summary.tombstones if summary else (),
        transactions=int(row.get("transactions", 0)),
    )


class BundleSessionSource:
    """A session's raw rows read from a bundle by window (a
    :class:`~engine.diagnostics.session_rows.SessionSource`). Rows past the first break are
    not in the bundle (the export stopped reading there)."""

    may_hold_pending = False

    def __init__(self, bundle: Bundle, covalue: CoValueID, session: dict[str, Any]) -> None:
        self.bundle = bundle
        self.covalue = covalue
        self.session = SessionID(session["id"])
        self.rows_read = 0
        self._count = int(session.get("rows_written", 0))
        self._stored_count = int(session["count"])
        self._head = bytes.fromhex(session["head"]) if session.get("head") else None
        self._sigs = {int(n): bytes.fromhex(sig) for n, _h, sig in session["checkpoints"]}
        self._checkpoints = sorted(self._sigs)
        bin_name = str(session["rows"])
        self._start = bundle._data_offset(bin_name)
        idx_name = bin_name[: -len(".bin")] + ".idx"
        with bundle.zip.open(idx_name) as fh:
            data = fh.read()
        self._index = [INDEX_ENTRY.unpack_from(data, i)[0] for i in range(0, len(data), INDEX_ENTRY.size)]

    @property
    def count(self) -> int:
        return self._count

    def window(self, offset: int, limit: int) -> list[RawRow]:
        offset = max(0, offset)
        stop = min(self._count, offset + max(0, limit))
        if offset >= stop:
            return []
        block = offset // ROW_INDEX_STRIDE
        position = self._start + self._index[block]
        index = block * ROW_INDEX_STRIDE
        raw = self.bundle._raw
        raw.seek(position)
        out: list[RawRow] = []
        while index < stop:
            size = ROW_HEADER.unpack(raw.read(ROW_HEADER.size))[0]
            tx = raw.read(size)
            stored = raw.read(32)
            if index >= offset:
                out.append((index, tx, stored))
            index += 1
        self.rows_read += len(out)
        return out

    def row_hash(self, index: int) -> bytes | None:
        rows = self.window(index, 1)
        return rows[0][2] if rows else None

    def checkpoints(self) -> Sequence[int]:
        return self._checkpoints

    def signature(self, n: int) -> bytes | None:
        return self._sigs.get(n)

    def base(self) -> bytes:
        return chain_base(self.covalue, self.session)

    def stored_head(self) -> tuple[int, bytes] | None:
        if self._head is None or self._count != self._stored_count:
            return None
        return (self._stored_count, self._head)

    def identity(self) -> object:
        return (self.covalue, self.session)

    def reload(self) -> None:
        return None
