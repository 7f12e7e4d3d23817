"""``kintsugi verify`` and ``kintsugi inspect``: check and report on a store, a node or a bundle.

Stores are opened read-only: these commands never change what they look at.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.output import EXIT_FAILED, EXIT_OK, AddCommand, Output
from engine.crypto import AccountKey
from engine.errors import UsageError
from engine.storage import Store, open_store


def _open_readonly(path: str) -> Store:
    return open_store(Path(path).expanduser(), readonly=True)


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from engine.diagnostics.bundle_read import is_bundle_path
    from engine.diagnostics.report import verify_store

    if is_bundle_path(args.store):
        return _verify_bundle(args.store, out)
    store = _open_readonly(args.store)
    try:
        report = verify_store(store, out.counter("verifying"))
    finally:
        store.close()
    lines = [
        f"{'OK' if report['ok'] else 'CORRUPT'}: {report['covalues']} CoValues, "
        f"{report['sessions']} sessions, {report['transactions']} transactions"
    ]
    lines += [f"  {c['covalue']} {c['session']} at {c['index']}: {c['reason']}" for c in report["corrupt"]]
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

    if is_bundle_path(args.target):
        report = inspect_bundle(args.target)
    elif args.target.startswith(("ws://", "wss://")):
        import asyncio

        if args.key is None:
            raise UsageError("inspecting a node needs --key FILE (the account to connect as)")
        out.progress(f"connecting to {args.target}")
        report = asyncio.run(inspect_remote(args.target, AccountKey.load(args.key), timeout=args.timeout))
    else:
        store = _open_readonly(args.target)
        try:
            report = inspect_store(store, out.counter("loading"))
        finally:
            store.close()
        report["matrix"] = None  # a store has no peers: the matrix belongs to a running node
    lines = []
    for cv in report["covalues"]:
        flags = f" [{', '.join(cv['flags'])}]" if cv["flags"] else ""
        lines.append(f"{cv['id']}  {cv['type']}{flags}")
        for s in cv["sessions"]:
            mark = "" if s["verified"] else "  CORRUPT"
            lines.append(f"    {s['kind']:<8} {s['count']!s:>8}  {s['id']}{mark}")
    lines.append(f"{len(report['kv'])} CAS slots")
    lines += [f"    {k['namespace']} {k['key']} gen {k['generation']} {k['state']}" for k in report["kv"]]
    out.result(report, "\n".join(lines))
    return EXIT_OK


async def inspect_remote(url: str, key: AccountKey, timeout: float) -> dict[str, Any]:
    """The ``inspect`` report of what ``key``'s account may see on the node at ``url``."""
    import contextlib

    from engine.diagnostics.report import describe_covalue
    from engine.errors import AdminRefused, KintsugiError, ProtocolError
    from engine.ids import CoValueID
    from engine.net.remote import RemoteSession
    from engine.protocol.messages import KvKeys, KvList

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
            reply = await session.request(KvList(session.next_rid(), namespace, ""), timeout)
            if isinstance(reply, KvKeys):
                kv += [{"namespace": namespace, **item} for item in reply.items]
        from engine.cli.bundle import fetch_matrix

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
    p.add_argument("store", help="store directory or database file, or a bundle FILE.zip")

    p = command(
        "inspect",
        cmd_inspect,
        "List the CoValues of a store (sessions, kinds, counts, heads, verification, flags) and its CAS slots.",
    )
    p.add_argument("target", help="store directory or database file, a node's ws:// URL, or a bundle FILE.zip")
    p.add_argument("--key", type=Path, help="account key file to connect with (for a ws:// target)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a node (default 60)")
