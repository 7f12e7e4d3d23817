"""Exporting a diagnostic bundle (DESIGN §10): streaming, redacted, cancellable, atomic.

:func:`export_steps` writes one zip (see :mod:`engine.diagnostics.bundle_format` for what is
in it) from :class:`BundleInputs` — a store, or a node's CoValues and what its sync shell
knows (peers, peer log, sync events, the peers × sessions matrix), gathered by the caller
(the CLI reads a remote node over the wire; diagnostics never imports net). It is a
generator: it yields an :class:`ExportProgress` after every verification step, so the CLI
prints progress and the inspector runs it in short slices on its loop and cancels by not
asking for more.

Rules kept here:

- Memory is bounded whatever the store's size: CoValues are read and verified a window at a
  time (:class:`~engine.diagnostics.bundle_gather.Gatherer`), members are written as they
  are produced, and the per-line members go through temporary spool files (a zip takes one
  member at a time) before they are copied in.
- Nothing is written at the destination until the bundle is complete: the zip is built in a
  temporary file beside it and renamed into place at the end. A cancelled or failed export
  (the generator closed early, an exception, Ctrl-C) removes the temporary file.
- Redaction (:mod:`engine.diagnostics.redact`) is applied here, to everything that holds user
  data; the manifest records the policy and the salt id, never the salt.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from engine import __version__
from engine.covalue import CoValueCore
from engine.diagnostics.anomalies import (
    Anomaly,
    CoValueFacts,
    Facts,
    NodeFacts,
    SlotFacts,
    find_anomalies,
    recovered_forks,
)
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
    rows_member,
)
from engine.diagnostics.bundle_gather import (
    ANALYSE_MAX_TRANSACTIONS,
    VERIFY_STEP_ROWS,
    CoValueRecord,
    Gatherer,
    RowSink,
    SlotDump,
    facts_of,
    owner_of,
    slot_facts,
    store_slots,
)
from engine.diagnostics.bundle_json import content_json, record_json, slot_json, tombstone_rows
from engine.diagnostics.covalue_summary import TombstoneInfo
from engine.diagnostics.matrix import STORE_MATRIX_NOTE, PeersSessionsMatrix
from engine.diagnostics.redact import Redaction, safe_location
from engine.ids import CoValueID, SessionID
from engine.model.audit import AuditRecord
from engine.protocol.limits import DEFAULT_LIMITS, FEATURES, PROTOCOL_VERSION
from engine.storage.interface import RawRow, Store
from engine.sync.events import PeerLogEntry, SyncEvent, peer_log_json
from engine.sync.peers import PeerInfo

__all__ = [
    "BundleInputs",
    "BundleResult",
    "ExportProgress",
    "NodeDescription",
    "export_bundle",
    "export_steps",
    "target_anomaly_steps",
]

#: Bytes of a spool kept in memory before it moves to a temporary file.
SPOOL_MEMORY = 4 * 1024 * 1024
#: Bytes copied at a time (spools into the zip, checksums).
COPY_CHUNK = 1024 * 1024
#: Compression of the JSON members (zlib level: fast, and JSON compresses well anyway).
COMPRESS_LEVEL = 6


@dataclass(frozen=True, slots=True)
class NodeDescription:
    """The node a bundle shows, as its handshake describes it."""

    name: str
    version: str
    proto: int
    features: tuple[str, ...] = ()
    url: str = ""


@dataclass
class BundleInputs:
    """What to export. CoValues come from ``store`` or, without one, from ``cores`` (held in
    memory). ``slots``: the CAS slots (None: the store's); ``audit``: the audit log (None: the
    store's, or none without a store). Everything a target does not have stays None and the
    bundle says so (``notes`` may say why)."""

    kind: str
    location: str
    store: Store | None = None
    cores: Mapping[CoValueID, CoValueCore] | None = None
    node: NodeDescription | None = None
    peers: Sequence[PeerInfo] | None = None
    peer_log: Sequence[PeerLogEntry] | None = None
    events: Sequence[SyncEvent] = ()
    matrix: PeersSessionsMatrix | None = None
    slots: Callable[[], Iterable[SlotDump]] | None = None
    audit: Sequence[AuditRecord] | None = None
    limits: Mapping[str, Any] | None = None
    logs: Callable[[Redaction], list[dict[str, Any]]] | None = None
    notes: dict[str, str] = field(default_factory=dict)
    #: CoValues up to this many transactions are loaded whole to analyse their content (a
    #: caller on a UI thread passes less: loading is one step that cannot be sliced)
    analyse_max: int = ANALYSE_MAX_TRANSACTIONS
    #: records the finished export as an operator action (the target's audit log, see
    #: :mod:`engine.diagnostics.export_audit`) and says how it went; None: nothing records it
    #: (no operator key). Called by whoever ran the export, after the bundle is written.
    record: Callable[[BundleResult], Awaitable[dict[str, Any]]] | None = None


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """Where an export is: ``phase`` (``covalues``, ``slots``, ``finishing``), transactions
    verified so far (``done``) of ``total``, and the CoValue being read."""

    phase: str
    done: int
    total: int
    covalue: str = ""

    @property
    def fraction(self) -> float:
        if self.phase == "finishing":
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0


@dataclass(frozen=True, slots=True)
class BundleResult:
    """A finished bundle: where, how big, and what is in it (the manifest's ``scope``)."""

    path: Path
    bytes: int
    manifest: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, **{k: self.manifest[k] for k in ("scope", "redaction")}}


# -- the zip ------------------------------------------------------------------------------------


class _Member(io.RawIOBase):
    """One member being written: counts bytes and hashes them on the way in."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.stream.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)


def _partial_prefix(out: Path) -> str:
    """What the temporary files of this process's exports to ``out`` are named from."""
    return f".{out.name}.{os.getpid()}."


def remove_partials(out: Path) -> None:
    """Remove the temporary files this process started for ``out``: an export interrupted
    (SIGTERM raises KeyboardInterrupt) before anything held the name of its file, even inside
    the call that created it, leaves none behind."""
    for partial in out.parent.glob(f"{glob.escape(_partial_prefix(out))}*.partial"):
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


class ZipBuilder:
    """A zip built in a temporary file next to ``out``; :meth:`finish` renames it into
    place, :meth:`abort` removes it. Every member's size and SHA-256 are recorded."""

    def __init__(self, out: Path, at: float) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        # Interrupted from here on, the caller removes what was made (remove_partials).
        fd, temp = tempfile.mkstemp(prefix=_partial_prefix(out), suffix=".partial", dir=out.parent)
        self.temp = Path(temp)
        os.close(fd)
        self.zip = zipfile.ZipFile(self.temp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
        self.date_time = time.localtime(at)[:6]
        self.files: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def member(self, name: str, *, stored: bool = False) -> Generator[_Member, None, None]:
        info = zipfile.ZipInfo(name, self.date_time)
        info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        with self.zip.open(info, "w", force_zip64=True) as stream:
            member = _Member(stream)
            yield member
        self.files[name] = {"bytes": member.size, "sha256": member.sha.hexdigest()}

    def add_json(self, name: str, obj: Any) -> None:
        with self.member(name) as m:
            m.write(json.dumps(obj, indent=1, sort_keys=False, ensure_ascii=False).encode())

    def add_lines(self, name: str, rows: Iterable[Any]) -> None:
        with self.member(name) as m:
            for row in rows:
                m.write(_line(row))

    def add_spool(self, name: str, spool: IO[bytes]) -> None:
        spool.seek(0)
        with self.member(name) as m:
            shutil.copyfileobj(spool, m, COPY_CHUNK)

    def finish(self) -> int:
        self.zip.close()
        size = self.temp.stat().st_size
        os.replace(self.temp, self.out)
        return size

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.zip.close()  # refuses while a member is open for writing: then close the file
        if self.zip.fp is not None:
            with contextlib.suppress(OSError):
                self.zip.fp.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp.unlink()


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class _ZipRows(RowSink):
    """Raw rows of each session into ``rows/<n>.bin`` (stored, seekable) and its index."""

    def __init__(self, builder: ZipBuilder) -> None:
        self.builder = builder
        self.sessions = 0
        self._member: contextlib.AbstractContextManager[_Member] | None = None
        self._out: _Member | None = None
        self._offsets: list[int] = []
        self._rows = 0
        self._names = ("", "")

    def start(self, covalue: CoValueID, session: SessionID) -> str | None:
        self._names = rows_member(self.sessions)
        self.sessions += 1
        self._member = self.builder.member(self._names[0], stored=True)
        self._out = self._member.__enter__()
        self._offsets, self._rows = [], 0
        return self._names[0]

    def rows(self, rows: Sequence[RawRow]) -> None:
        assert self._out is not None
        out = self._out
        for _index, tx, stored in rows:
            if self._rows % ROW_INDEX_STRIDE == 0:
                self._offsets.append(out.size)
            out.write(ROW_HEADER.pack(len(tx)) + tx + stored)
            self._rows += 1

    def end(self) -> int:
        assert self._member is not None
        self._member.__exit__(None, None, None)
        self._member = self._out = None
        with self.builder.member(self._names[1]) as index:
            index.write(b"".join(INDEX_ENTRY.pack(o) for o in self._offsets))
        return self._rows


# -- export -------------------------------------------------------------------------------------


def _spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)


def export_steps(
    inputs: BundleInputs, out: Path, redaction: Redaction, *, now_ms: int | None = None
) -> Generator[ExportProgress, None, BundleResult]:
    """Write the bundle of ``inputs`` to ``out``, yielding progress; returns the result.

    Closing the generator before it returns (cancelling) removes everything written, as
    does any exception (re-raised: :class:`~engine.errors.StorageError` for a store that
    fails, :class:`OSError` for the destination).
    """
    at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    builder: ZipBuilder | None = None
    spools: dict[str, IO[bytes]] = {}
    try:
        builder = ZipBuilder(out, at_ms / 1000)
        spools.update((name, _spool()) for name in (COVALUES, CONTENT, KV))
        result = yield from _export(inputs, builder, spools, redaction, at_ms)
    except BaseException:  # cancelled (GeneratorExit), interrupted or failed: leave nothing
        if builder is not None:
            builder.abort()
        remove_partials(out)  # interrupted before the builder was held
        raise
    finally:
        for spool in spools.values():
            spool.close()
    return result


def _export(
    inputs: BundleInputs, builder: ZipBuilder, spools: dict[str, IO[bytes]], redaction: Redaction, at_ms: int
) -> Generator[ExportProgress, None, BundleResult]:
    gatherer = _gatherer(inputs)
    ids = gatherer.ids()
    total = sum(gatherer.transactions(cid) for cid in ids)
    sink = _ZipRows(builder) if redaction.policy.include_content else None
    events_by_covalue: dict[CoValueID, list[SyncEvent]] = {}
    for event in inputs.events:
        events_by_covalue.setdefault(event.covalue, []).append(event)
    facts: list[CoValueFacts] = []
    records_tombstones: list[TombstoneInfo] = []
    owners: dict[CoValueID, CoValueID] = {}
    done = sessions = transactions = analysed = 0
    yield ExportProgress("covalues", 0, total)
    for cid in ids:
        steps = gatherer.gather(cid, sink)
        while True:
            try:
                done += next(steps)
            except StopIteration as stop:
                record: CoValueRecord | None = stop.value
                break
            yield ExportProgress("covalues", done, total, cid)
        if record is None:
            continue
        spools[COVALUES].write(_line(record_json(record, redaction, events_by_covalue.get(cid, ()))))
        if record.content is not None:
            spools[CONTENT].write(_line(content_json(record.content, redaction)))
        facts.append(facts_of(record))
        records_tombstones.extend(record.tombstones)
        owner = owner_of(record.header)
        if owner is not None:
            owners[cid] = owner
        sessions += len(record.sessions)
        transactions += record.transactions
        analysed += record.analysed
    yield ExportProgress("slots", done, total)
    slot_facts_list = []
    slots = 0
    slot_source = inputs.slots if inputs.slots is not None else _store_slots(inputs.store)
    for dump in slot_source():
        row = slot_json(dump, redaction)
        spools[KV].write(_line(row))
        slot_facts_list.append(slot_facts(dump, row["key"]))
        slots += 1
    yield ExportProgress("finishing", done, total)

    anomalies = find_anomalies(_facts(inputs, facts, slot_facts_list, at_ms))
    audit = inputs.audit if inputs.audit is not None else (inputs.store.audit_log() if inputs.store else None)
    matrix = inputs.matrix
    if matrix is not None and not matrix.owners and owners:
        matrix = PeersSessionsMatrix(matrix.peers, matrix.columns, matrix.cells, matrix.available, matrix.note, owners)

    for name, spool in spools.items():
        builder.add_spool(name, spool)
    builder.add_json(
        MATRIX, matrix.to_json() if matrix is not None else {"available": False, "note": _matrix_note(inputs)}
    )
    builder.add_json(TOMBSTONES, tombstone_rows(records_tombstones, matrix))
    builder.add_lines(EVENTS, (e.to_json() for e in inputs.events))
    builder.add_json(
        PEERS,
        {
            "peers": [p.to_json() for p in inputs.peers] if inputs.peers is not None else None,
            "log": peer_log_json(inputs.peer_log) if inputs.peer_log is not None else None,
        },
    )
    builder.add_json(ANOMALIES, [a.to_json() for a in anomalies])
    builder.add_lines(AUDIT, ({**r.to_json(), "body": r.body.hex()} for r in audit or ()))
    builder.add_json(CONFIG, _config(inputs))
    builder.add_lines(LOGS, inputs.logs(redaction) if inputs.logs is not None else ())

    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "kintsugi": __version__,
        "protocol": PROTOCOL_VERSION,
        "created_at": at_ms,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at_ms / 1000)),
        "target": {
            "kind": inputs.kind,
            "location": safe_location(inputs.location),
            "node": asdict(inputs.node) if inputs.node is not None else None,
        },
        "scope": {
            "covalues": len(facts),
            "analysed": analysed,
            "sessions": sessions,
            "transactions": transactions,
            "kv_slots": slots,
            "events": len(inputs.events),
            "peers": len(inputs.peers) if inputs.peers is not None else None,
            "audit_records": len(audit) if audit is not None else None,
            "anomalies": len(anomalies),
            "content": redaction.policy.include_content,
            "rows_sessions": sink.sessions if sink is not None else 0,
        },
        "redaction": redaction.describe(),
        "notes": dict(inputs.notes),
        "files": dict(sorted(builder.files.items())),
    }
    with builder.member(MANIFEST) as m:
        m.write(json.dumps(manifest, indent=1, ensure_ascii=False).encode())
    size = builder.finish()
    return BundleResult(builder.out, size, manifest)


def _facts(inputs: BundleInputs, covalues: Sequence[CoValueFacts], slots: Sequence[SlotFacts], at_ms: int) -> Facts:
    """What the anomaly rules read of a target (the same for a bundle and a live report)."""
    node_facts = None
    if inputs.node is not None:
        node = inputs.node
        node_facts = NodeFacts(node.name, node.version, node.proto, __version__, PROTOCOL_VERSION)
    return Facts(
        covalues=covalues,
        events=inputs.events,
        peers=inputs.peers,
        peer_log=inputs.peer_log,
        slots=slots,
        matrix=inputs.matrix,
        node=node_facts,
        now_ms=at_ms,
        recovered=recovered_forks(covalues),
    )


def target_anomaly_steps(
    inputs: BundleInputs, *, now_ms: int | None = None
) -> Generator[ExportProgress, None, list[Anomaly]]:
    """The anomalies of ``inputs`` as an export would record them, without writing anything
    and without redaction (CAS keys in clear); yields progress like :func:`export_steps`."""
    at_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    gatherer = _gatherer(inputs)
    ids = gatherer.ids()
    total = sum(gatherer.transactions(cid) for cid in ids)
    covalues: list[CoValueFacts] = []
    done = 0
    yield ExportProgress("covalues", 0, total)
    for cid in ids:
        steps = gatherer.gather(cid)
        while True:
            try:
                done += next(steps)
            except StopIteration as stop:
                record: CoValueRecord | None = stop.value
                break
            yield ExportProgress("covalues", done, total, cid)
        if record is not None:
            covalues.append(facts_of(record))
    yield ExportProgress("slots", done, total)
    slot_source = inputs.slots if inputs.slots is not None else _store_slots(inputs.store)
    slots = [slot_facts(dump) for dump in slot_source()]
    yield ExportProgress("finishing", done, total)
    return find_anomalies(_facts(inputs, covalues, slots, at_ms))


def _gatherer(inputs: BundleInputs) -> Gatherer:
    if inputs.store is not None:
        return Gatherer(store=inputs.store, analyse_max=inputs.analyse_max)
    return Gatherer(cores=inputs.cores or {}, analyse_max=inputs.analyse_max)


def _store_slots(store: Store | None) -> Callable[[], Iterable[SlotDump]]:
    return (lambda: store_slots(store)) if store is not None else (lambda: ())


def _matrix_note(inputs: BundleInputs) -> str:
    return inputs.notes.get("matrix", STORE_MATRIX_NOTE if inputs.kind == "store" else "no sync layer")


def _config(inputs: BundleInputs) -> dict[str, Any]:
    """Versions, limits and settings; never a key, a key file, a token or a salt."""
    store = inputs.store
    return {
        "kintsugi": __version__,
        "protocol": PROTOCOL_VERSION,
        "features": list(FEATURES),
        "node": asdict(inputs.node) if inputs.node is not None else None,
        "limits": dict(inputs.limits) if inputs.limits is not None else asdict(DEFAULT_LIMITS),
        "store": {"schema": list(store.version), "readonly": store.readonly} if store is not None else None,
        "bundle": {
            "analyse_max_transactions": inputs.analyse_max,
            "verify_step_rows": VERIFY_STEP_ROWS,
            "row_index_stride": ROW_INDEX_STRIDE,
        },
        "python": platform.python_version(),
        "platform": sys.platform,
    }


def export_bundle(
    inputs: BundleInputs,
    out: Path,
    redaction: Redaction,
    *,
    progress: Callable[[ExportProgress], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> BundleResult | None:
    """:func:`export_steps` run to the end: ``progress`` hears every step; when
    ``cancelled()`` turns true the export stops, removes what it wrote and returns None."""
    steps = export_steps(inputs, out, redaction)
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                result: BundleResult = stop.value
                return result
            if progress is not None:
                progress(step)
            if cancelled is not None and cancelled():
                return None
    finally:
        steps.close()
