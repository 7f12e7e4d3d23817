"""``kintsugi verify`` and ``kintsugi inspect``: check and report on a store, a node or a bundle.

Stores are opened read-only: these commands never change what they look at. A path that
holds no Kintsugi store is told so (:mod:`engine.cli.stores`); ``verify`` given a node's URL
says what it takes instead. ``inspect``'s text lists, per session, its kind, count, head
(first 16 hex digits), verification and id, with ``-`` for what a corrupt session lacks.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

from engine.cli.output import EXIT_FAILED, EXIT_OK, AddCommand, Output
from engine.cli.stores import open_readonly, refuse_url
from engine.cli.urls import is_node_url, resolve_node
from engine.crypto import AccountKey
from engine.errors import UsageError
from engine.ids import CoValueID
from engine.storage import Store

#: Transactions from which a CoValue counts as large: ``inspect`` says when it starts and
#: finishes loading one (on a terminal, or with ``-v``).
LARGE_COVALUE = 10_000
#: Seconds between the lines saying a large CoValue is still loading (reading and verifying
#: every transaction of one session is a single step of the store).
LOAD_TICK = 1.0
#: What ``verify`` takes, as its usage errors say.
VERIFY_TAKES = (
    "a store directory or database file, a postgresql:// store, or a bundle FILE.zip (to look at a node, use "
    "'kintsugi inspect URL --key FILE' or 'kintsugi anomalies URL --key FILE')"
)


def _own_words(corrupt: dict[str, Any]) -> str:
    """The reason of a corrupt-session entry without the session and index it restates
    (an engine error's detail starts with ``SESSION@INDEX:`` or ``SESSION:``)."""
    reason = str(corrupt["reason"])
    session = corrupt.get("session")
    if session:
        for prefix in (f"{session}@{corrupt.get('index')}: ", f"{session}: "):
            if reason.startswith(prefix):
                return reason[len(prefix) :]
    return reason


def corrupt_line(corrupt: dict[str, Any]) -> str:
    """One corrupt-session entry of ``verify``, naming the session once."""
    where = corrupt["covalue"]
    if corrupt.get("session"):
        where += f" {corrupt['session']}"
    if corrupt.get("index") is not None:
        where += f" at {corrupt['index']}"
    return f"  {where}: {_own_words(corrupt)}"


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from engine.diagnostics.bundle_read import is_bundle_path
    from engine.diagnostics.report import verify_store

    refuse_url(args.store, VERIFY_TAKES)
    if is_bundle_path(args.store):
        return _verify_bundle(args.store, out)
    store = open_readonly(args.store)
    try:
        report = verify_store(store, out.counter("verifying"))
    finally:
        store.close()
    lines = [
        f"{'OK' if report['ok'] else 'CORRUPT'}: {report['covalues']} CoValues, "
        f"{report['sessions']} sessions, {report['transactions']} transactions"
    ]
    lines += [corrupt_line(c) for c in report["corrupt"]]
    out.result(report, "\n".join(lines))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _verify_bundle(path: str, out: Output) -> int:
    """``kintsugi verify FILE.zip`` (see :func:`engine.diagnostics.bundle_read.verify_bundle`)."""
    from engine.diagnostics.bundle_verify import verify_bundle

    report = verify_bundle(path)
    head = f"OK: {report['files']} files match the manifest" if report["ok"] else "DAMAGED"
    lines = [
        head,
        f"  {report['covalues']} CoValues, {report['sessions']} sessions, {report['checkpoints']} checkpoint "
        f"signatures verified, {report['chains_verified']} chains re-derived from raw rows",
        f"  audit log {report['audit']}",
    ]
    for p in report["problems"]:
        lines.append(f"  {p.get('file') or p.get('covalue')} {p.get('session') or ''}: {p['problem']}")
    for b in report["recorded_breaks"]:
        lines.append(f"  recorded break: {b['covalue']} {b['session']} at {b['index']}: {b['reason']}")
    out.result(report, "\n".join(lines))
    return EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    from engine.diagnostics.bundle_read import is_bundle_path
    from engine.diagnostics.bundle_verify import inspect_bundle
    from engine.diagnostics.report import inspect_store

    if is_node_url(args.target):
        import asyncio

        if args.key is None:
            raise UsageError("inspecting a node needs --key FILE (the account to connect as)")
        key = AccountKey.load(args.key)
        out.progress(f"connecting to {args.target}")
        report = asyncio.run(inspect_remote(args.target, key, timeout=args.timeout))
    elif is_bundle_path(args.target):
        report = inspect_bundle(args.target)
    else:
        store = open_readonly(args.target)
        try:
            report = inspect_store(cast(Store, LoadProgress(store, out)), out.counter("loading"))
        finally:
            store.close()
        report["matrix"] = None  # a store has no peers: the matrix belongs to a running node
    out.result(report, inspect_text(report))
    return EXIT_OK


#: Columns of a session line of ``inspect``'s text output.
SESSION_COLUMNS = f"    {'kind':<8} {'count':>8}  {'head':<16}  {'verified':<8}  session"


def inspect_text(report: dict[str, Any]) -> str:
    """``inspect``'s text: per CoValue its sessions' kind, count, head (the first 16 hex
    digits of the head hash) and verification; ``-`` where a corrupt session has none."""
    lines = []
    for cv in report["covalues"]:
        flags = f" [{', '.join(cv['flags'])}]" if cv["flags"] else ""
        lines.append(f"{cv['id']}  {cv['type']}{flags}")
        if cv["sessions"]:
            lines.append(SESSION_COLUMNS)
        for s in cv["sessions"]:
            count = "-" if s.get("count") is None else str(s["count"])
            head = "-" if not s.get("head") else str(s["head"])[:16]
            verified = "yes" if s.get("verified") else "CORRUPT"
            lines.append(f"    {s['kind']:<8} {count:>8}  {head:<16}  {verified:<8}  {s['id']}")
    lines.append(f"{len(report['kv'])} CAS slots")
    lines += [f"    {k['namespace']} {k['key']} gen {k['generation']} {k['state']}" for k in report["kv"]]
    return "\n".join(lines)


class LoadProgress:
    """A read-only store that reports on stderr (on a terminal, or with ``-v``) when it
    starts and finishes loading a large CoValue (:data:`LARGE_COVALUE` transactions or
    more), with its size, and every ``tick`` seconds (:data:`LOAD_TICK`) while it loads, so a
    long load inside one CoValue is never silent. Everything else is the store's own."""

    def __init__(self, store: Store, out: Output, *, tick: float = LOAD_TICK) -> None:
        self._store = store
        self._out = out
        self._tick = tick

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def load_covalue(self, covalue: CoValueID) -> Any:
        if not self._out.shows_progress:
            return self._store.load_covalue(covalue)
        sessions = self._store.stored_sessions(covalue)
        total = sum(s.count for s in sessions)
        if total < LARGE_COVALUE:
            return self._store.load_covalue(covalue)
        started = time.monotonic()
        plural = "" if len(sessions) == 1 else "s"
        sys.stderr.write(f"loading {covalue}: {total} transactions in {len(sessions)} session{plural}\n")
        done = threading.Event()

        def tick() -> None:
            while not done.wait(self._tick):
                elapsed = time.monotonic() - started
                sys.stderr.write(f"  still loading {covalue} ({total} transactions): {elapsed:.0f} s\n")

        ticker = threading.Thread(target=tick, name="kintsugi-load-progress", daemon=True)
        ticker.start()
        try:
            loaded = self._store.load_covalue(covalue)
        finally:
            done.set()
            ticker.join()
        sys.stderr.write(f"loaded {covalue} in {time.monotonic() - started:.1f} s\n")
        return loaded


async def inspect_remote(url: str, key: AccountKey, timeout: float) -> dict[str, Any]:
    """The ``inspect`` report of what ``key``'s account may see on the node at ``url``."""
    import contextlib

    from engine.cli.bundle import fetch_matrix, list_slots
    from engine.diagnostics.report import describe_covalue
    from engine.errors import AdminRefused, KintsugiError, ProtocolError
    from engine.ids import CoValueID
    from engine.net.remote import RemoteSession

    await resolve_node(url, timeout)
    session = RemoteSession(url, key)
    await session.open(timeout)
    try:
        try:
            listing = await session.admin("list", None, timeout)
        except (AdminRefused, ProtocolError) as exc:
            raise ProtocolError(f"the node refused to list CoValues ({exc})", code="admin_refused") from None
        ids = [CoValueID(c) for c in listing.get("covalues", [])]
        await session.load_all(ids, timeout)
        covalues = []
        for cid in sorted(ids):
            core = session.node.get_or_none(cid)
            if core is not None:
                covalues.append(describe_covalue(core))
        kv: list[dict[str, Any]] = []
        for namespace in listing.get("namespaces", []):
            kv += [{"namespace": namespace, **item} for item in await list_slots(session, namespace, timeout)]
        try:
            peers: list[Any] | None = (await session.peers(timeout))[0]
        except AdminRefused:
            peers = None
        matrix = await fetch_matrix(session, peers, timeout)
        return {
            "covalues": covalues,
            "kv": kv,
            "matrix": matrix.to_json() if matrix is not None else None,
            "node": session.client.challenge.node if session.client.challenge else None,
        }
    finally:
        await session.close()
        with contextlib.suppress(KintsugiError):
            session.node.close()


def register(command: AddCommand) -> None:
    p = command(
        "verify",
        cmd_verify,
        "Check every hash chain and signature in a store. Exit 1 when anything is corrupt.",
    )
    p.add_argument("store", help="store directory or database file, a postgresql:// store, or a bundle FILE.zip")

    p = command(
        "inspect",
        cmd_inspect,
        "List the CoValues of a store (sessions, kinds, counts, heads, verification, flags) and its CAS slots.",
    )
    p.add_argument(
        "target",
        help="store directory or database file, a postgresql:// store, a node's ws:// URL, or a bundle FILE.zip",
    )
    p.add_argument("--key", type=Path, help="account key file to connect with (for a ws:// target)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a node (default 60)")
