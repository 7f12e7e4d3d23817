"""``kintsugi bundle export``: a diagnostic bundle of a store, a node or the embedded demo.

``kintsugi bundle export TARGET --out FILE.zip [--key KEYFILE] [--include-content]
[--salt-file FILE] [--json]``. TARGET is a store directory or file, a PostgreSQL store's
``postgresql://`` URL, a node's ``ws://`` URL
(with ``--key``: an admin account sees everything), or ``demo`` (the embedded demo, started
here, exported once its story has played, then stopped). Progress goes to stderr; Ctrl-C or
SIGTERM stops the export and leaves no file behind. ``--salt-file`` keeps the redaction salt
in a file (created if missing), so bundles of one incident cross-reference; without it each
bundle gets a fresh salt. The salt and the key file never enter the bundle.

This module also gathers what a bundle shows of a target (:func:`open_inputs`), which
``kintsugi anomalies`` reuses: from a store through the Store interface; from a node over the
wire through :class:`~engine.net.remote.RemoteSession` (the CLI may import net; diagnostics
may not): its CoValues loaded into an in-memory replica, its peers, peer log, sync events and
CAS slots with their histories; from the embedded demo through its in-process node and shell.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from engine import __version__
from engine.cli.output import EXIT_OK, Output, add_json_flag
from engine.cli.stores import open_readonly, store_location
from engine.cli.urls import resolve_node
from engine.crypto import AccountKey
from engine.diagnostics.bundle import BundleInputs, BundleResult, ExportProgress, NodeDescription, export_steps
from engine.diagnostics.bundle_gather import SlotDump
from engine.diagnostics.bundle_logs import install_log_ring
from engine.diagnostics.bundle_read import is_bundle_path
from engine.diagnostics.export_audit import node_export_recorder, record_export
from engine.diagnostics.matrix import (
    REMOTE_MATRIX_NOTE,
    MatrixColumn,
    PeersSessionsMatrix,
    matrix_from_json,
    matrix_of,
    partial_matrix,
)
from engine.diagnostics.redact import Redaction, RedactionPolicy, Tokenizer, load_or_create_salt
from engine.errors import AdminRefused, InvalidInput, KintsugiError, ProtocolError, UsageError
from engine.ids import CoValueID
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION
from engine.protocol.ratelimit import TokenBucket

__all__ = ["fetch_matrix", "list_slots", "open_inputs", "register", "remote_matrix", "run_steps"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds to wait for a node (connecting, each request) unless ``--timeout`` says otherwise.
DEFAULT_TIMEOUT = 60.0
#: ``events`` requests made to read a node's recent sync events, at most.
MAX_EVENT_READS = 8
#: Share of an export between two progress lines on stderr.
PROGRESS_STEP = 0.1
#: ``admin{kv_slot}`` requests an export sends per second, at most (and in one burst): half a
#: node's default rate limit (:attr:`~engine.protocol.limits.Limits.rate_per_second`,
#: ``rate_burst``), so reading thousands of slots one request each never gets the export's
#: connection closed for flooding (4429).
SLOT_REQUESTS_PER_SECOND = 250.0
SLOT_REQUEST_BURST = 100


# -- gathering a target --------------------------------------------------------------------------


@contextlib.contextmanager
def _store_inputs(path: str, key: AccountKey | None) -> Iterator[BundleInputs]:
    location = store_location(path)
    store = open_readonly(str(location))
    try:
        inputs = BundleInputs("store", store.location, store=store)
        if key is not None:

            async def record(result: BundleResult) -> dict[str, Any]:
                return record_export(location, key, result, target=store.location).to_json()

            inputs.record = record
        yield inputs
    finally:
        store.close()


def remote_matrix(session: Any, peers: list[Any] | None) -> PeersSessionsMatrix | None:
    """The matrix of a node seen over the wire that does not answer ``admin{matrix}``: its
    peers' rows (with their total lag) and the sessions of the CoValues loaded from it; no
    cells (see
    :data:`~engine.diagnostics.matrix.REMOTE_MATRIX_NOTE`). None without peers (not an admin)."""
    if peers is None:
        return None
    columns = [
        MatrixColumn(cid, sid, log.signed_count)
        for cid, core in sorted(session.node.covalues.items())
        for sid, log in sorted(core.sessions.items())
    ]
    return partial_matrix([(p.peer_id, p.account, p.kind, p.behind) for p in peers], columns, REMOTE_MATRIX_NOTE)


async def fetch_matrix(session: Any, peers: list[Any] | None, timeout: float) -> PeersSessionsMatrix | None:
    """The peers × sessions matrix of a node over the wire: its ``admin{matrix}`` answer
    (feature ``admin_matrix``: every cell), else :func:`remote_matrix` (rows and their total
    lag only). None without peers (the account is not an admin)."""
    if peers is None:
        return None
    challenge = session.client.challenge
    if challenge is not None and "admin_matrix" in challenge.features:
        try:
            return matrix_from_json(await session.admin("matrix", None, timeout))
        except (AdminRefused, ProtocolError, InvalidInput) as exc:
            logger.info("the node did not send its matrix: %s", exc)
    return remote_matrix(session, peers)


async def list_slots(session: Any, namespace: str, timeout: float, *, page: int | None = None) -> list[dict[str, Any]]:
    """Every CAS slot of ``namespace`` on the node of ``session`` (a
    :class:`~engine.net.remote.RemoteSession`) as ``{key, generation, state}``, sorted by key:
    ``kv_list`` page after page (``page`` keys each; None: the node's page,
    :data:`~engine.protocol.messages.kv.MAX_KV_LIST_PAGE` at most) until one says no ``more``.
    An answer other than ``kv_keys`` (a refusal) ends the listing with what came before it.
    Raises ``TimeoutError`` when a page does not come within ``timeout`` seconds."""
    from engine.protocol.messages import KvKeys, KvList

    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        reply = await session.request(KvList(session.next_rid(), namespace, "", after, page), timeout)
        if not isinstance(reply, KvKeys):
            return items
        items += reply.items
        if not reply.more or not reply.items:
            return items
        after = str(reply.items[-1]["key"])


@contextlib.asynccontextmanager
async def _remote_inputs(url: str, key: AccountKey, timeout: float) -> AsyncIterator[BundleInputs]:
    from engine.net.remote import EventCursor, RemoteSession

    await resolve_node(url, timeout)
    session = RemoteSession(url, key)
    await session.open(timeout)
    try:
        challenge = session.client.challenge
        features = tuple(challenge.features) if challenge is not None else ()
        try:
            listing = await session.admin("list", None, timeout)
        except (AdminRefused, ProtocolError) as exc:
            raise ProtocolError(f"the node refused to list CoValues ({exc})", code="admin_refused") from None
        ids = [CoValueID(c) for c in listing.get("covalues", [])]
        await session.load_all(ids, timeout)
        notes = {"audit": "a node's audit log is not readable over the wire", "logs": "a node's log lines stay with it"}
        peers = peer_log = None
        try:
            peers, peer_log = await session.peers(timeout)
        except AdminRefused as exc:
            notes["peers"] = f"the node did not show its peers ({exc.detail or exc.code})"
        events = []
        if "admin_events" in features and peers is not None:
            cursor = EventCursor()
            for _ in range(MAX_EVENT_READS):
                events += await session.events(cursor, timeout)
                if not cursor.more:
                    break
        dumps: list[SlotDump] = []
        pace = TokenBucket(SLOT_REQUESTS_PER_SECOND, SLOT_REQUEST_BURST, time.monotonic())
        for namespace in listing.get("namespaces", []):
            for item in await list_slots(session, namespace, timeout):
                if "admin_kv_slot" in features:
                    while not pace.take(time.monotonic()):
                        await asyncio.sleep(1 / SLOT_REQUESTS_PER_SECOND)
                    detail = await session.kv_slot(namespace, str(item["key"]), timeout)
                    dumps.append(SlotDump(detail.row, tuple(detail.history), detail.history_dropped))
        matrix = await fetch_matrix(session, peers, timeout)
        node = None
        if challenge is not None:
            node = NodeDescription(challenge.node, challenge.version, challenge.proto, features, url)
        yield BundleInputs(
            "node",
            url,
            cores=dict(session.node.covalues),
            node=node,
            peers=peers,
            peer_log=peer_log,
            events=events,
            matrix=matrix,
            record=node_export_recorder(session, key, timeout),
            slots=lambda: dumps,
            notes={**notes, "matrix": matrix.note if matrix is not None else notes.get("peers", "")},
        )
    finally:
        await session.close()
        with contextlib.suppress(KintsugiError):
            session.node.close()


@contextlib.asynccontextmanager
async def _demo_inputs(out: Output) -> AsyncIterator[BundleInputs]:
    from engine.demo.embedded import EMBEDDED_LIMITS, EmbeddedDemo

    workdir = Path(tempfile.mkdtemp(prefix="kintsugi-demo-"))
    demo: EmbeddedDemo | None = None
    try:
        demo = EmbeddedDemo(workdir)
        out.progress("starting the embedded demo (its story plays first)")
        await demo.start()
        shell, node = demo.shell, demo.node
        ring = install_log_ring()
        yield BundleInputs(
            "demo",
            "embedded demo",
            store=node.store,
            node=NodeDescription(demo.server.name, __version__, PROTOCOL_VERSION, FEATURES, demo.url),
            peers=shell.peers(),
            peer_log=list(shell.peer_log),
            events=list(shell.manager.events),
            matrix=matrix_of(shell.manager, dict(node.covalues)),
            limits=asdict(EMBEDDED_LIMITS),
            logs=ring.lines,
        )
    finally:
        if demo is not None:
            await demo.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def open_inputs(target: str, key_file: Path | None, timeout: float, out: Output) -> AsyncIterator[BundleInputs]:
    """What a bundle shows of ``target`` (a store, ``ws://`` node, or ``demo``), open for the
    duration of the ``async with``. Raises :class:`UsageError` for a node without a key."""
    if target == "demo":
        async with _demo_inputs(out) as inputs:
            yield inputs
    elif target.startswith(("ws://", "wss://")):
        if key_file is None:
            raise UsageError("a node needs --key FILE (an admin account's key sees everything)")
        out.progress(f"connecting to {target}")
        async with _remote_inputs(target, AccountKey.load(key_file), timeout) as inputs:
            yield inputs
    elif is_bundle_path(target):
        raise UsageError(f"{target} is a bundle already: inspect, verify or compare it instead")
    else:
        with _store_inputs(target, AccountKey.load(key_file) if key_file is not None else None) as inputs:
            yield inputs


async def run_steps(steps: Generator[ExportProgress, None, T], out: Output) -> T:
    """Drive an export (or another stepped job) to the end, yielding to the loop between
    steps (a live demo keeps running) and printing progress to stderr every
    :data:`PROGRESS_STEP` of the way."""
    shown = -1.0
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if step.fraction - shown >= PROGRESS_STEP or (step.phase == "finishing" and shown < 1.0):
                shown = step.fraction
                out.progress(f"{step.phase}: {step.fraction:.0%} ({step.done:,} of {step.total:,} transactions)")
            await asyncio.sleep(0)
    finally:
        steps.close()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM raises :class:`KeyboardInterrupt` meanwhile (so an export cleans up after
    itself as for Ctrl-C)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the command -------------------------------------------------------------------------------


def cmd_bundle_export(args: argparse.Namespace, out: Output) -> int:
    out_path = Path(args.out).expanduser()
    if out_path.suffix.lower() != ".zip":
        raise UsageError("--out must name a .zip file")
    salt = load_or_create_salt(Path(args.salt_file).expanduser() if args.salt_file else None)
    redaction = Redaction(RedactionPolicy(redact=True, include_content=args.include_content), Tokenizer(salt))
    install_log_ring()
    started = time.perf_counter()

    async def export() -> tuple[BundleResult, dict[str, Any]]:
        async with open_inputs(args.target, args.key, args.timeout, out) as inputs:
            written = await run_steps(export_steps(inputs, out_path, redaction), out)
            if inputs.record is None:
                why = "no --key: an export record is signed by the operator's key"
                if inputs.kind == "demo":
                    why = "the embedded demo's store is temporary"
                return written, {"recorded": False, "where": inputs.location, "why": why}
            return written, await inputs.record(written)

    with interruptible():
        result, audit = asyncio.run(export())
    scope = result.manifest["scope"]
    data = {**result.to_json(), "audit": audit, "seconds": round(time.perf_counter() - started, 3)}
    text = (
        f"bundle written to {result.path} ({result.bytes:,} bytes) in {data['seconds']:.2f} s\n"
        f"  {scope['covalues']} CoValues, {scope['sessions']} sessions, {scope['transactions']:,} transactions, "
        f"{scope['kv_slots']} CAS slots, {scope['anomalies']} anomalies\n"
        f"  redaction: keys and values as tokens (salt id {result.manifest['redaction']['salt_id']})"
        + ("; raw content included" if args.include_content else "; content omitted")
        + (
            f"\n  recorded as export #{audit.get('seq')} in the audit log of {audit['where']}"
            if audit["recorded"]
            else f"\n  not recorded in an audit log: {audit['why']}"
        )
    )
    out.result(data, text)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "bundle", help="diagnostic bundles", description="Export diagnostic bundles (one zip per target)."
    )
    actions = group.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "export",
        help="export a diagnostic bundle of a store, a node or the embedded demo",
        description="Write a diagnostic bundle: manifest, CoValues (sessions, heads, the hash at every "
        "checkpoint, verification, forks), the peers × sessions matrix, CAS slots, tombstones, sync "
        "events, anomalies, the audit log, configuration and recent log lines. Keys and values are "
        "redacted to salted tokens; private keys and tokens never leave. Open it offline with "
        "kintsugi inspect/verify FILE.zip or kintsugi-inspector FILE.zip.",
    )
    p.set_defaults(func=cmd_bundle_export)
    add_json_flag(p)
    p.add_argument(
        "target", help="store directory or database file, a postgresql:// store, a node's ws:// URL, or 'demo'"
    )
    p.add_argument("--out", required=True, help="the bundle to write (FILE.zip)")
    p.add_argument(
        "--key",
        type=Path,
        help="the operator's account key file: connects to a ws:// target (the node then records the export "
        "in its own audit log, signed by the node, naming this account); for a store, the export is "
        "recorded in the store's audit log, signed by this key, if the store can be opened for writing "
        "(otherwise the bundle is still written and the output says why nothing was recorded). Without "
        "--key nothing is recorded.",
    )
    p.add_argument(
        "--include-content", action="store_true", help="also include the raw transactions (keys and values in clear)"
    )
    p.add_argument(
        "--salt-file",
        help="file holding the redaction salt (created if missing): bundles made with one salt cross-reference",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for a node (default {DEFAULT_TIMEOUT:g})",
    )
