"""REPLACE recovery over the network (DESIGN §7.2): fetching a scope from one chosen peer, and
serving an admin's ``recover`` request on a node.

:func:`fetch_scope` opens a connection to the chosen peer as the operator's account, runs one
exchange (:class:`~engine.recovery.exchange.RecoveryFetch`) with a fresh ``xid``, and returns
the verified scope, or raises with nothing handed out: :class:`RecoveryAborted` when the peer
refuses, goes away or does not answer a page within the timeout (a retry is a new exchange),
:class:`RecoveryError` when what it sent does not verify. It never touches the incremental
sync state of any connection.

:class:`AdminRecoverer` is what a node's shell installs as the sync manager's
``on_admin_action``: for ``admin{op: "recover", args: {from, scope}, intent}`` from an admin,
the node itself fetches from ``from`` (as its own account, which the other node must serve:
a member of the owner group or one of its admins), plans, applies, and answers with the
plan's summary and the signed receipt; its audit log records which admin asked, with the
operator's signed intent.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.crypto import AccountKey, verify_signature
from engine.errors import KintsugiError, PermissionDenied, RecoveryAborted
from engine.ids import AccountID, CoValueID
from engine.net.remote import RemoteSession
from engine.node.facade import LocalNode
from engine.node.recovery import apply_recovery, plan_recovery, scope_ids
from engine.protocol.messages import Admin, AdminResult, Error, Message, RecoverPage, RecoveryScope
from engine.protocol.messages.admin import RecoverArgs, admin_args, intent_message
from engine.protocol.messages.recovery import XID_SIZE
from engine.recovery.exchange import RecoveryFetch
from engine.recovery.plan import FetchedCoValue, Plan
from engine.recovery.receipt import SignedReceipt

__all__ = ["CONNECTION_CHECK", "PAGE_TIMEOUT", "AdminRecoverer", "Recovery", "fetch_scope", "recover_from"]

logger = logging.getLogger(__name__)

#: Seconds to wait for each page before the exchange is abandoned.
PAGE_TIMEOUT = 30.0
#: Seconds between checks, while waiting for a page, that the connection is still there.
CONNECTION_CHECK = 0.05

Progress = Callable[[int, int], None]


async def fetch_scope(
    url: str,
    key: AccountKey,
    scope: RecoveryScope,
    *,
    timeout: float = PAGE_TIMEOUT,
    progress: Progress | None = None,
) -> list[FetchedCoValue]:
    """The scope as the peer at ``url`` holds it, every session verified; see the module's
    docstring for what is raised. ``progress(pages, transactions)`` after every page."""
    session = RemoteSession(url, key)
    await session.open(timeout)
    try:
        return await _exchange(session, scope, timeout=timeout, progress=progress)
    finally:
        await session.close()
        session.node.close()


async def _exchange(
    session: RemoteSession, scope: RecoveryScope, *, timeout: float, progress: Progress | None
) -> list[FetchedCoValue]:
    fetch = RecoveryFetch(scope, rid=session.next_rid(), xid=os.urandom(XID_SIZE), progress=progress)
    answers: asyncio.Queue[Message] = asyncio.Queue()
    manager = session.shell.manager
    previous_reply, previous_error = manager.on_reply, manager.on_error

    def on_reply(peer: str, message: Message) -> None:
        if isinstance(message, RecoverPage) and message.xid == fetch.xid:
            answers.put_nowait(message)
        elif previous_reply is not None:
            previous_reply(peer, message)

    def on_error(_peer: str, message: Error) -> None:
        answers.put_nowait(message)  # any error while the exchange runs ends it

    manager.on_reply, manager.on_error = on_reply, on_error
    peer_id = session.peer_id
    try:
        request: Message | None = fetch.open_message()
        while request is not None:
            manager.send_to(peer_id, request)
            session.shell.dispatch()
            answer = await _next_answer(answers, session, peer_id, timeout)
            if not isinstance(answer, RecoverPage | Error):
                continue
            request = fetch.receive(answer)
        return fetch.result()
    finally:
        manager.on_reply, manager.on_error = previous_reply, previous_error


async def _next_answer(
    answers: asyncio.Queue[Message], session: RemoteSession, peer_id: str, timeout: float
) -> Message:
    """The next answer of the exchange. Raises :class:`RecoveryAborted` when none comes
    within ``timeout`` seconds, or as soon as the connection it was asked on is gone (the
    peer died or closed it: the exchange cannot go on, even if the client reconnects)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    getting = asyncio.ensure_future(answers.get())
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise RecoveryAborted(f"no page from {session.url} within {timeout:g} s")
            done, _pending = await asyncio.wait({getting}, timeout=min(left, CONNECTION_CHECK))
            if done:
                return getting.result()
            if peer_id not in session.shell.connections:
                raise RecoveryAborted(f"{session.url} closed the connection before the last page")
    finally:
        if not getting.done():
            getting.cancel()


@dataclass(frozen=True, slots=True)
class Recovery:
    """A planned recovery: what was fetched, from where, for which scope, and the plan."""

    peer: str
    scope: RecoveryScope
    fetched: list[FetchedCoValue]
    plan: Plan
    local_ids: list[CoValueID]

    @property
    def only(self) -> frozenset[str] | None:
        return None if self.scope.sessions is None else frozenset(self.scope.sessions)


async def recover_from(
    node: LocalNode,
    url: str,
    key: AccountKey,
    scope: RecoveryScope,
    *,
    timeout: float = PAGE_TIMEOUT,
    progress: Progress | None = None,
) -> Recovery:
    """Fetch ``scope`` from ``url`` (as ``key``'s account) and plan it against ``node``;
    nothing is changed (see :func:`engine.node.recovery.apply_recovery` for that)."""
    local_ids = scope_ids(node, scope.covalues, scope.group)
    fetched = await fetch_scope(url, key, scope, timeout=timeout, progress=progress)
    only = None if scope.sessions is None else frozenset(scope.sessions)
    plan = plan_recovery(node, fetched, peer=url, operator=key, scope=local_ids, only=only)
    return Recovery(url, scope, fetched, plan, local_ids)


def apply(
    node: LocalNode, recovery: Recovery, key: AccountKey, *, audit_details: Mapping[str, object] | None = None
) -> SignedReceipt:
    """Apply a planned recovery to ``node`` and its store (one transaction); the receipt.
    ``audit_details`` are added to the audit record (who asked, their signed intent)."""
    only = None if recovery.scope.sessions is None else frozenset(recovery.scope.sessions)
    return apply_recovery(
        node,
        recovery.plan,
        recovery.fetched,
        operator=key,
        scope=recovery.local_ids,
        only=only,
        audit_details=audit_details,
    )


class AdminRecoverer:
    """Serves ``admin{op: "recover"}`` on a node (install it as the manager's
    ``on_admin_action``). One recovery runs at a time; another request meanwhile is refused
    with ``busy``."""

    def __init__(
        self,
        node: LocalNode,
        send: Callable[[str, Message], None],
        *,
        node_name: str,
        timeout: float = PAGE_TIMEOUT,
    ) -> None:
        self.node = node
        self.node_name = node_name
        self.send = send
        self.timeout = timeout
        self._running: asyncio.Task[None] | None = None

    def __call__(self, peer_id: str, account: AccountID, msg: Admin) -> None:
        if self._running is not None and not self._running.done():
            self.send(peer_id, AdminResult(msg.rid, False, {"code": "busy", "detail": "a recovery is running"}))
            return
        self._running = asyncio.get_running_loop().create_task(self._run(peer_id, account, msg))

    async def _run(self, peer_id: str, account: AccountID, msg: Admin) -> None:
        try:
            args = admin_args(msg)
            assert isinstance(args, RecoverArgs)
            signed = intent_message(self.node_name, msg.op, msg.args)
            if msg.intent is None or not verify_signature(account, signed, msg.intent):
                raise PermissionDenied("a recover request needs the operator's signed intent for this node")
            planned = await recover_from(self.node, args.source, self.node.account, args.scope, timeout=self.timeout)
            asked = {"requested_by": account, "intent": msg.intent.hex() if msg.intent else None}
            receipt = apply(self.node, planned, self.node.account, audit_details=asked)
            logger.warning(
                "recovery from %s asked by admin %s applied: %s", args.source, account, planned.plan.summary()
            )
            result = {"summary": planned.plan.summary(), "receipt": receipt.to_json()}
            self.send(peer_id, AdminResult(msg.rid, True, result))
        except KintsugiError as exc:
            logger.warning("recovery asked by admin %s failed: %s", account, exc)
            self.send(peer_id, AdminResult(msg.rid, False, {"code": exc.code, "detail": exc.detail[:500]}))
        except Exception:  # a bug: the admin still gets an answer instead of waiting it out
            logger.exception("recovery asked by admin %s failed", account)
            detail = "the node failed while recovering; see its log"
            self.send(peer_id, AdminResult(msg.rid, False, {"code": "internal_error", "detail": detail}))
