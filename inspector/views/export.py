"""File → Export bundle: a diagnostic bundle of the open target, with progress and Cancel.

:func:`bundle_inputs` says what a bundle shows of a target (the same as ``kintsugi bundle
export`` gathers): a store's CoValues and CAS slots; a node's CoValues (from its store, or in
memory), its peers, peer log, sync events, the peers × sessions matrix, limits and this
process's recent log lines; a remote node's replica with the node's peers, peer log, events
and CAS slots as read over the wire. A bundle is not exported again (None).

:class:`ExportJob` runs :func:`~engine.diagnostics.bundle.export_steps` on the loop in slices
of at most :data:`SLICE_SECONDS` (the UI keeps painting), and :meth:`ExportJob.cancel` stops
it between two slices: the export then removes everything it wrote. It emits
``progressed(int, str)`` (per mille, what is being read), then exactly one of
``finished(str)`` (the bundle's path), ``failed(str, str)`` (code, message) or
``cancelled()``. :class:`ExportDialog` is the progress dialog whose Cancel button cancels
the job (not modal: see its comment); it closes itself when the job ends.

CoValues bigger than :data:`APP_ANALYSE_MAX` are verified but not analysed here (their
records say so). Redaction is the CLI's default: keys and values become tokens under a fresh salt per export
(``salt`` may be given to make bundles cross-reference); raw content only when asked.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QProgressDialog, QWidget

from engine.crypto import AccountKey
from engine.diagnostics.bundle import BundleInputs, BundleResult, NodeDescription, export_steps
from engine.diagnostics.bundle_gather import SlotDump
from engine.diagnostics.bundle_logs import install_log_ring
from engine.diagnostics.export_audit import node_export_recorder, record_export
from engine.diagnostics.matrix import REMOTE_MATRIX_NOTE
from engine.diagnostics.redact import SALT_BYTES, Redaction, RedactionPolicy, Tokenizer
from inspector.models.matrix import target_matrix
from inspector.targets.base import Target, describe_error
from inspector.targets.bundle import BundleTarget
from inspector.targets.node import NodeTarget
from inspector.targets.remote import RemoteTarget
from inspector.targets.store import StoreTarget

__all__ = ["APP_ANALYSE_MAX", "PROGRESS_SCALE", "SLICE_SECONDS", "ExportDialog", "ExportJob", "bundle_inputs"]

#: Longest stretch (seconds) an export works before it lets the loop run.
SLICE_SECONDS = 0.02
#: Seconds a remote node may take to record an export (``admin{export}``).
RECORD_TIMEOUT = 10.0
#: Progress is reported in this many steps.
PROGRESS_SCALE = 1000
#: CoValues up to this many transactions have their content analysed in an export from the
#: window (loading one whole is a step that cannot be sliced: this keeps it to tens of ms);
#: ``kintsugi bundle export`` analyses bigger ones.
APP_ANALYSE_MAX = 25_000


def _target_slots(target: Target) -> list[SlotDump]:
    return [
        SlotDump(row, tuple(target.kv_history(namespace, row.key)))
        for namespace in target.kv_namespaces()
        for row in target.kv_slots(namespace)
    ]


def _node(target: Target) -> NodeDescription | None:
    info = target.node_info
    return NodeDescription(info.name, info.version, info.proto, info.features, info.url) if info is not None else None


def bundle_inputs(target: Target) -> BundleInputs | None:
    """What a bundle of ``target`` shows (None: this target cannot be exported), and who
    records the export as an operator action (``record``, see :func:`_recorder`)."""
    inputs = _inputs(target)
    if inputs is not None:
        inputs.analyse_max = APP_ANALYSE_MAX
        inputs.record = _recorder(target)
    return inputs


def _recorder(target: Target) -> Callable[[BundleResult], Awaitable[dict[str, Any]]] | None:
    """How an export of ``target`` is recorded in an audit log: a remote node records it
    itself (``admin{export}``, asked with the connecting key); the embedded node appends it to
    its own store, signed by its own key. A store opened read-only without a key records
    nothing (None): recording needs the operator's key and a writable store (as
    ``kintsugi bundle export STORE --key K`` does)."""
    if isinstance(target, RemoteTarget) and target.session is not None and target.spec.key_file:
        key = AccountKey.load(target.spec.key_file)
        return node_export_recorder(target.session, key, RECORD_TIMEOUT)
    if isinstance(target, NodeTarget) and not isinstance(target, RemoteTarget) and target.node is not None:
        node = target.node
        store = node.store
        if store is None or store.readonly:
            return None

        async def record(result: BundleResult) -> dict[str, Any]:
            await node.durable()
            return record_export(store, node.account, result, target=target.label).to_json()

        return record
    return None


def _inputs(target: Target) -> BundleInputs | None:
    if isinstance(target, BundleTarget):
        return None
    if isinstance(target, StoreTarget):
        return BundleInputs("store", target.spec.location, store=target.store) if target.store is not None else None
    if isinstance(target, RemoteTarget):
        node = target.node
        if node is None:
            return None
        slots = _target_slots(target)
        return BundleInputs(
            "node",
            target.spec.location,
            cores=dict(node.covalues),
            node=_node(target),
            peers=target.peers(),
            peer_log=target.peer_log(),
            events=[t.event for t in target.recorder.recent() if t.origin == "node"],
            matrix=target_matrix(target),
            slots=lambda: slots,
            notes={
                "audit": "a node's audit log is not readable over the wire",
                "logs": "a node's log lines stay with it",
                "matrix": REMOTE_MATRIX_NOTE,
            },
        )
    if isinstance(target, NodeTarget):
        node = target.node
        if node is None:
            return None
        shell = target.shell
        dumps = _target_slots(target) if node.store is None else None
        return BundleInputs(
            target.spec.kind if target.spec.kind == "demo" else "node",
            target.label,
            store=node.store,
            cores=dict(node.covalues) if node.store is None else None,
            node=_node(target),
            peers=target.peers(),
            peer_log=target.peer_log(),
            events=list(shell.manager.events) if shell is not None else [t.event for t in target.recorder.recent()],
            matrix=target_matrix(target),
            slots=(lambda: dumps) if dumps is not None else None,
            limits=asdict(shell.limits) if shell is not None else None,
            logs=install_log_ring().lines,
        )
    return None


class ExportJob(QObject):
    """One export of ``inputs`` to ``out`` (see the module docstring for its signals).
    Once the bundle is written, ``inputs.record`` (if any) records the export; ``audit`` is
    what it said (``{recorded, where, seq, head, why}``) and ``recorded(bool, str)`` is
    emitted (recorded, where or why not) just before ``finished``."""

    progressed = Signal(int, str)
    recorded = Signal(bool, str)
    finished = Signal(str)
    failed = Signal(str, str)
    cancelled = Signal()

    def __init__(
        self,
        inputs: BundleInputs,
        out: Path,
        *,
        include_content: bool = False,
        salt: bytes | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("exportJob")
        self.inputs = inputs
        self.out = out
        self.redaction = Redaction(
            RedactionPolicy(redact=True, include_content=include_content), Tokenizer(salt or os.urandom(SALT_BYTES))
        )
        self._cancel = False
        self.done = False
        self.result_path: Path | None = None
        self.audit: dict[str, Any] | None = None

    def cancel(self) -> None:
        """Stop at the next slice; what was written is removed."""
        self._cancel = True

    async def run(self) -> None:
        steps = export_steps(self.inputs, self.out, self.redaction)
        try:
            while True:
                started = time.perf_counter()
                while time.perf_counter() - started < SLICE_SECONDS:
                    step = next(steps)
                self.progressed.emit(int(step.fraction * PROGRESS_SCALE), step.covalue or step.phase)
                await asyncio.sleep(0)
                if self._cancel:
                    steps.close()
                    self.done = True
                    self.cancelled.emit()
                    return
        except StopIteration as stop:
            self.result_path = stop.value.path
            await self._record(stop.value)
            self.done = True
            self.finished.emit(str(self.result_path))
        except asyncio.CancelledError:
            steps.close()
            raise
        except Exception as exc:  # reported to the operator, never a traceback
            steps.close()
            code, message = describe_error(exc)
            self.done = True
            self.failed.emit(code, message)
        finally:
            steps.close()

    async def _record(self, result: BundleResult) -> None:
        record = self.inputs.record
        if record is None:
            return
        try:
            self.audit = await record(result)
        except Exception as exc:  # the bundle is written; only its record failed
            self.audit = {"recorded": False, "where": self.inputs.location, "why": describe_error(exc)[1]}
        audit = self.audit
        self.recorded.emit(bool(audit["recorded"]), str(audit["where"] if audit["recorded"] else audit["why"]))


class ExportDialog(QProgressDialog):
    """Progress of ``job``; Cancel cancels it. Closes when the job ends."""

    def __init__(self, job: ExportJob, parent: QWidget | None = None) -> None:
        super().__init__(f"Exporting a diagnostic bundle to {job.out.name}…", "Cancel", 0, PROGRESS_SCALE, parent)
        self.setObjectName("exportDialog")
        self.setWindowTitle("Export bundle")
        # Not modal: a modal progress dialog processes Qt events inside setValue(), which would
        # re-enter the loop from inside the export's own task.
        self.setWindowModality(Qt.WindowModality.NonModal)
        self.setMinimumDuration(0)
        self.setAutoClose(False)
        self.setAutoReset(False)
        self.job = job
        self.canceled.connect(job.cancel)
        job.progressed.connect(self._progressed)
        for signal in (job.finished, job.cancelled):
            signal.connect(self._done)
        job.failed.connect(self._done)

    def _progressed(self, value: int, what: str) -> None:
        self.setValue(min(value, PROGRESS_SCALE - 1))
        self.setLabelText(f"Exporting a diagnostic bundle to {self.job.out.name}…\n{what}")

    def _done(self, *_args: object) -> None:
        self.canceled.disconnect(self.job.cancel)
        self.reset()
        self.close()
