"""``kintsugi recover``: REPLACE a scope of a store (or a node) from one chosen peer.

- ``recover plan STORE --from URL --key KEYFILE [--covalue ID ...] [--group ID]``: fetch the
  scope from the peer, compute the plan against the store, print it; nothing changes.
- ``recover apply STORE --from URL --key KEYFILE [--covalue ID ...] [--group ID] --yes``:
  the same, then apply it in one transaction and print the signed receipt.
- ``recover apply ws://NODE --key ADMINKEY --from URL ... --yes``: the node at NODE does it
  (an admin request); the receipt comes back from the node.

``--session SID`` (repeatable, with one ``--covalue``) recovers just those sessions. Exit
codes: 0 success, 1 the recovery failed or was aborted (nothing changed), 2 bad usage
(including ``apply`` without ``--yes``: the plan is printed and nothing is changed).

The store is read-only while the scope is fetched, verified and planned; it is opened for
writing only to apply, after ``--yes`` and the last verified page, so an aborted fetch leaves
every byte of it as it was. A peer that goes away mid-exchange (or a node that goes away
before answering an admin's request) ends the command at once with exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from engine.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Output, add_json_flag
from engine.cli.stores import open_readonly, store_location
from engine.cli.urls import resolve_node
from engine.crypto import AccountKey
from engine.errors import InvalidId, KintsugiError, RecoveryAborted, UsageError
from engine.ids import SessionID, new_session_id, parse_covalue_id, parse_session_id
from engine.protocol.messages.recovery import RecoveryScope

#: Seconds the CLI waits for each page, and for a node's answer to an admin recover.
RECOVER_TIMEOUT = 60.0
NODE_RECOVER_TIMEOUT = 600.0


def _scope(args: argparse.Namespace) -> RecoveryScope:
    """The scope the arguments name; a malformed id is a :class:`UsageError`."""
    try:
        return _parse_scope(args)
    except InvalidId as exc:
        raise UsageError(exc.detail) from None


def _parse_scope(args: argparse.Namespace) -> RecoveryScope:
    if bool(args.covalue) == bool(args.group):
        raise UsageError("name the scope: --covalue ID (repeatable) or --group ID")
    if args.session and len(args.covalue) != 1:
        raise UsageError("--session goes with exactly one --covalue")
    if args.group:
        return RecoveryScope(group=parse_covalue_id(args.group))
    covalues = tuple(parse_covalue_id(c) for c in args.covalue)
    sessions = None
    if args.session:
        for sid in args.session:
            parse_session_id(sid)
        sessions = tuple(SessionID(s) for s in args.session)
    return RecoveryScope(covalues=covalues, sessions=sessions)


def _check_peer(url: str, what: str) -> None:
    if not url.startswith(("ws://", "wss://")):
        raise UsageError(f"{what} must be a node's ws:// URL, not {url!r}")


def plan_text(plan: dict[str, Any]) -> list[str]:
    """The plan as lines: one per CoValue that changes, one per session that does."""
    lines = []
    for cv in plan["plan"]:
        lines.append(f"{cv['id']}  {cv['action']}")
        for s in cv["sessions"]:
            if s["action"] in ("unchanged",):
                continue
            extra = []
            for name in ("dropped", "at_risk", "preserved", "archived", "unverifiable"):
                if s[name]:
                    extra.append(f"{name} {s[name]}")
            if s["preserved_as"]:
                extra.append(f"kept in {s['preserved_as']}")
            local = "-" if s["local"] is None else s["local"][0]
            remote = "-" if s["remote"] is None else s["remote"][0]
            lines.append(f"    {s['action']:<9} {local!s:>7} -> {remote!s:<7} {s['session']}  {', '.join(extra)}")
    summary = plan["summary"]
    lines.append(
        "summary: {covalues} CoValues change, {replaced} sessions replaced, {dropped} transactions dropped "
        "({at_risk} at risk: {preserved} preserved, {archived} archived; {unverifiable} unverifiable)".format(**summary)
    )
    return lines


def _progress(out: Output) -> Any:
    def report(pages: int, transactions: int) -> None:
        if out.interactive or not out.as_json:
            out.progress(f"page {pages}: {transactions} transactions fetched")

    return report


def _open_node(store: str, key: AccountKey, *, writable: bool) -> Any:
    from engine.node.facade import LocalNode

    location = store_location(store)
    if writable:
        return LocalNode.open(location, key)
    # read-only: a session of its own that is never leased nor written
    return LocalNode(key, open_readonly(str(location)), session=new_session_id(key.account_id))


async def _plan(args: argparse.Namespace, out: Output) -> tuple[Any, AccountKey]:
    """Fetch the scope and plan it against the store opened read-only: until the operator's
    ``--yes`` and the last verified page, nothing in the store is written (not even a
    session lease)."""
    from engine.net.recover import recover_from

    _check_peer(args.source, "--from")
    key = AccountKey.load(args.key)
    scope = _scope(args)
    await resolve_node(args.source, args.timeout)
    node = _open_node(args.store, key, writable=False)
    try:
        out.progress(f"fetching the scope from {args.source}")
        recovery = await recover_from(node, args.source, key, scope, timeout=args.timeout, progress=_progress(out))
    finally:
        node.close()
    return recovery, key


def cmd_plan(args: argparse.Namespace, out: Output) -> int:
    if args.store.startswith(("ws://", "wss://")):
        raise UsageError("recover plan takes a store; to have a node recover, use recover apply ws://NODE")

    async def run() -> int:
        recovery, _key = await _plan(args, out)
        data = recovery.plan.to_json() | {"hash": recovery.plan.digest().hex()}
        out.result(data, "\n".join(plan_text(data)))
        return EXIT_OK

    return asyncio.run(run())


def cmd_apply(args: argparse.Namespace, out: Output) -> int:
    if args.store.startswith(("ws://", "wss://")):
        return _apply_on_node(args, out)

    async def run() -> int:
        from engine.net.recover import apply

        recovery, key = await _plan(args, out)
        data = recovery.plan.to_json() | {"hash": recovery.plan.digest().hex()}
        if not args.yes:
            lines = [*plan_text(data), "nothing changed: add --yes to apply"]
            out.result(data | {"applied": False}, "\n".join(lines))
            return EXIT_USAGE
        # Opened for writing only now; the apply plans again against it and refuses
        # (nothing changed) if the store moved on since the plan above.
        node = _open_node(args.store, key, writable=True)
        try:
            receipt = apply(node, recovery, key)
        finally:
            node.close()
        body = receipt.to_json()
        text = [
            *plan_text(data),
            f"applied; receipt {body['id']} signed by {body['operator']}",
            f"archived {sum(a['count'] for a in body['archived'])} transactions with the receipt",
        ]
        out.result({"applied": True, "summary": data["summary"], "receipt": body}, "\n".join(text))
        return EXIT_OK

    return asyncio.run(run())


def _apply_on_node(args: argparse.Namespace, out: Output) -> int:
    from engine.net.remote import RemoteSession
    from engine.protocol.messages import Admin, AdminResult
    from engine.protocol.messages.admin import intent_message

    _check_peer(args.source, "--from")
    scope = _scope(args)
    if not args.yes:
        raise UsageError("a node changes its store only with --yes")
    key = AccountKey.load(args.key)

    async def run() -> int:
        await resolve_node(args.store, args.timeout)
        session = RemoteSession(args.store, key)
        out.progress(f"connecting to {args.store}")
        await session.open(args.timeout)
        try:
            request = {"from": args.source, "scope": scope.to_obj()}
            node_name = session.client.challenge.node if session.client.challenge else ""
            intent = key.sign(intent_message(node_name, "recover", request))
            out.progress(f"asking {args.store} to recover from {args.source}")
            admin = Admin(session.next_rid(), "recover", request, intent)
            reply = await _node_answer(session, admin, NODE_RECOVER_TIMEOUT)
        finally:
            await session.close()
            session.node.close()
        if not isinstance(reply, AdminResult):
            raise KintsugiError(f"the node answered {reply.T}")
        if not reply.ok:
            result = reply.result if isinstance(reply.result, dict) else {}
            out.result(
                {"applied": False, "error": result},
                f"the node did not recover: {result.get('detail') or result.get('code')} [{result.get('code')}]",
            )
            return EXIT_FAILED
        result = reply.result
        receipt = result.get("receipt", {})
        text = [f"{args.store} applied the recovery: {result.get('summary')}", f"receipt {receipt.get('id')}"]
        out.result({"applied": True, **result}, "\n".join(text))
        return EXIT_OK

    return asyncio.run(run())


async def _node_answer(session: Any, request: Any, timeout: float) -> Any:
    """The node's answer to ``request``. Raises :class:`RecoveryAborted` when none comes
    within ``timeout`` seconds, or as soon as the connection is gone (then whether the node
    applied the recovery is in its audit log, not known here)."""
    from engine.net.recover import CONNECTION_CHECK

    peer_id = session.peer_id
    asking = asyncio.ensure_future(session.request(request, timeout))
    try:
        while True:
            done, _pending = await asyncio.wait({asking}, timeout=CONNECTION_CHECK)
            if done:
                try:
                    return asking.result()
                except TimeoutError:
                    raise RecoveryAborted(f"{session.url} did not answer within {timeout:g} s") from None
            if peer_id not in session.shell.connections:
                raise RecoveryAborted(
                    f"{session.url} closed the connection before answering; "
                    "its audit log tells whether it applied the recovery"
                )
    finally:
        if not asking.done():
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)


def _usage_exits_2(func: Any) -> Any:
    """``func`` with a :class:`UsageError` (no scope, a bad URL or id, ``apply`` of a node
    without ``--yes``) reported with exit code 2, before anything was fetched or changed."""

    def run(args: argparse.Namespace, out: Output) -> int:
        try:
            code: int = func(args, out)
        except UsageError as exc:
            out.error(exc)
            return EXIT_USAGE
        return code

    return run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recover = sub.add_parser(
        "recover",
        help="replace a stale or corrupt copy with one chosen peer's (plan, then apply)",
        description="Pull the current state of a scope from one chosen node and replace the local copy "
        "with it (REPLACE, never a union). Local-only signed transactions are never lost: the operator's "
        "own are kept as conflict sessions, others archived in the signed receipt.",
    )
    actions = recover.add_subparsers(dest="recover_command", metavar="ACTION", required=True)
    for name, func, help_text in (
        ("plan", cmd_plan, "show what a recovery would change; changes nothing"),
        ("apply", cmd_apply, "recover: apply the plan (with --yes) and print the signed receipt"),
    ):
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=_usage_exits_2(func))
        p.add_argument(
            "store",
            help="store directory or file, or a postgresql:// store (apply: or a node's ws:// URL, which recovers)",
        )
        p.add_argument("--from", dest="source", required=True, metavar="URL", help="the node to pull from (ws://)")
        p.add_argument("--key", required=True, type=Path, help="the operator's account key file")
        p.add_argument("--covalue", action="append", default=[], metavar="ID", help="a CoValue in scope (repeatable)")
        p.add_argument("--group", metavar="ID", help="a group: it and every CoValue it owns are in scope")
        p.add_argument(
            "--session", action="append", default=[], metavar="SID", help="recover only this session (repeatable)"
        )
        p.add_argument("--timeout", type=float, default=RECOVER_TIMEOUT, help="seconds to wait for each page")
        if name == "apply":
            p.add_argument("--yes", action="store_true", help="really change the store (without it: plan only)")
        add_json_flag(p)
