"""CAS slots of a node over the network (DESIGN §8; docs/protocol.md "CAS slots"): the
client side of ``kv_get``, ``kv_cas``, ``kv_list`` and ``kv_watch``, and the
read-modify-write helper on top of them.

:class:`RemoteKV` is one authenticated connection (a :class:`~engine.net.remote.RemoteSession`
with the role ``client``) to a node that announces the ``kv`` feature. What it promises:

- Each request waits for the reply with its ``rid`` for at most ``timeout`` seconds; a
  refusal (``kv_error``) raises the typed error of its code (:data:`REFUSALS`, else
  :class:`~engine.errors.KVRefused`). Keys and values are checked here first, by the node's
  own rules (:func:`~engine.sync.kv_service.check_key`, :func:`~engine.sync.kv_service.check_value`),
  so a request the node would not even decode is never sent.
- A request whose connection goes away before its reply fails at once with
  ``ProtocolError(connection_lost)``: whether a ``kv_cas`` was stored is then unknown — read
  the key again. The client reconnects in the background (backoff as for sync); requests
  made after that use the new connection.
- Requests made in one turn of the event loop leave together, packed into as few frames as
  they fit, so a batch costs the node's rate limit a frame or a few, not one per key.
- A :class:`RemoteWatch` yields every change the node stores under its prefix after the
  watch started (its :attr:`~RemoteWatch.initial` page is the state then). It ends with
  ``connection_lost`` when its connection goes — the node forgets watches with their
  connection — and with ``lagged`` when its reader leaves more than
  :data:`MAX_PENDING_EVENTS` changes unread.

:func:`read_modify_write` and :func:`read_modify_write_many` are :mod:`engine.kv.rmw` over the
network: the same merge contract, :data:`~engine.kv.rmw.DEFAULT_RMW_ATTEMPTS` attempts, and
errors isolated per key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.crypto import AccountKey
from engine.errors import (
    CASRetriesExhausted,
    KintsugiError,
    KVAccessDenied,
    KVBadKey,
    KVBusy,
    KVError,
    KVRefused,
    KVTooManyWatches,
    KVValueTooLarge,
    ProtocolError,
    UsageError,
)
from engine.ids import AccountID
from engine.kv.envelope import Slot
from engine.kv.rmw import DEFAULT_RMW_ATTEMPTS, Merge
from engine.kv.store import CASResult, Conflict, Stored
from engine.net.recover import CONNECTION_CHECK
from engine.net.remote import RemoteSession
from engine.protocol.messages import (
    KvCas,
    KvError,
    KvEvent,
    KvGet,
    KvKeys,
    KvList,
    KvResult,
    KvValue,
    KvWatch,
    Message,
)
from engine.sync.kv_service import cas_slot_to_wire, check_key, check_value, slot_from_wire

__all__ = [
    "KV_FEATURE",
    "KV_TIMEOUT",
    "MAX_PENDING_EVENTS",
    "REFUSALS",
    "RemoteKV",
    "RemoteWatch",
    "SlotChange",
    "read_modify_write",
    "read_modify_write_many",
]

#: The handshake feature of a node that serves CAS slots.
KV_FEATURE = "kv"
#: Seconds a request waits for its reply by default.
KV_TIMEOUT = 30.0
#: Changes a watch keeps for its reader; one more ends the watch with ``lagged`` (the reader
#: would otherwise hold an unbounded backlog of a busy prefix).
MAX_PENDING_EVENTS = 10_000

#: The typed error raised for each ``kv_error`` code (others: :class:`KVRefused`).
REFUSALS: dict[str, type[KVError]] = {
    KVAccessDenied.code: KVAccessDenied,
    KVBadKey.code: KVBadKey,
    KVValueTooLarge.code: KVValueTooLarge,
    KVTooManyWatches.code: KVTooManyWatches,
    KVBusy.code: KVBusy,
}


def refusal(reply: KvError) -> KVError:
    """The typed error of a node's ``kv_error``."""
    cls = REFUSALS.get(reply.code)
    return cls(reply.detail) if cls is not None else KVRefused(reply.code, reply.detail)


@dataclass(frozen=True, slots=True)
class SlotChange:
    """A change a watch saw: ``key`` of ``namespace`` now at ``generation`` holding ``slot``."""

    namespace: str
    key: str
    generation: int
    slot: Slot


@dataclass(slots=True)
class _Pending:
    """A request waiting for its reply on connection ``peer_id``."""

    peer_id: str
    future: asyncio.Future[Message]


class RemoteWatch:
    """The changes the node stores under :attr:`prefix` of :attr:`namespace`, in order.

    Iterate it (``async for change in watch``) or call :meth:`next`; :attr:`initial` holds
    the slots (``{key, generation, state}``) as they were when the watch started, and
    :attr:`initial_more` says that page was cut (list the rest with :meth:`RemoteKV.list`).
    Iteration ends after :meth:`close`; it raises the error that ended the watch otherwise.
    """

    def __init__(self, rid: int, namespace: str, prefix: str, peer_id: str) -> None:
        self.rid = rid
        self.namespace = namespace
        self.prefix = prefix
        self.peer_id = peer_id
        self.initial: list[dict[str, Any]] = []
        self.initial_more = False
        self._changes: deque[SlotChange] = deque()
        self._wakeup = asyncio.Event()
        self._error: KintsugiError | None = None
        self._closed = False

    @property
    def ended(self) -> bool:
        return self._closed or self._error is not None

    def _deliver(self, event: KvEvent) -> None:
        if self.ended:
            return
        if len(self._changes) >= MAX_PENDING_EVENTS:
            self._end(ProtocolError(f"more than {MAX_PENDING_EVENTS} changes left unread", code="lagged"))
            return
        slot = slot_from_wire(event.slot)
        assert slot is not None
        self._changes.append(SlotChange(event.namespace, event.key, event.gen, slot))
        self._wakeup.set()

    def _end(self, error: KintsugiError) -> None:
        if self._error is None:
            self._error = error
        self._wakeup.set()

    def close(self) -> None:
        """Stop delivering (the node keeps sending until the connection ends; they are
        dropped here)."""
        self._closed = True
        self._changes.clear()
        self._wakeup.set()

    async def next(self) -> SlotChange:
        """The next change, waiting for it. Raises ``StopAsyncIteration`` after :meth:`close`,
        the error that ended the watch (``connection_lost``, ``lagged``) once the changes
        before it were read."""
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._changes:
                return self._changes.popleft()
            if self._error is not None:
                raise self._error
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> AsyncIterator[SlotChange]:
        return self

    async def __anext__(self) -> SlotChange:
        return await self.next()


@dataclass(slots=True)
class _Requests:
    """Requests in flight and live watches, by rid."""

    pending: dict[int, _Pending] = field(default_factory=dict)
    watches: dict[int, RemoteWatch] = field(default_factory=dict)


class RemoteKV:
    """CAS slots of the node at the other end of ``session`` (connected, see :meth:`open`).

    ``namespace`` defaults to the session's account everywhere: a client reaches only its
    own; an admin of the node may read (get, list, watch) any.
    """

    def __init__(self, session: RemoteSession, account: AccountID, *, timeout: float = KV_TIMEOUT) -> None:
        self.session = session
        self.account = account
        self.timeout = timeout
        self._requests = _Requests()
        manager = session.shell.manager
        self._previous = manager.on_reply
        manager.on_reply = self._on_reply
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str | Sequence[str], key: AccountKey, *, timeout: float = KV_TIMEOUT) -> RemoteKV:
        """Connect to the node at ``url`` (or the first of several that answers) as ``key``'s
        account within ``timeout`` seconds.

        Raises what :meth:`RemoteSession.open` raises, and ``ProtocolError(unsupported_op)``
        (after closing) when the node does not announce the ``kv`` feature.
        """
        session = RemoteSession(url, key)
        session.client.role = "client"
        await session.open(timeout)
        challenge = session.client.challenge
        if challenge is None or KV_FEATURE not in challenge.features:
            await session.close()
            session.node.close()
            raise ProtocolError(
                f"{session.url} does not serve CAS slots (no {KV_FEATURE!r} feature)", code="unsupported_op"
            )
        kv = cls(session, key.account_id, timeout=timeout)
        kv._monitor = asyncio.get_running_loop().create_task(kv._watch_connection(), name=f"kintsugi-kv-{session.url}")
        return kv

    async def close(self) -> None:
        """Close the connection; pending requests and watches end with ``connection_lost``."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await self.session.close()
        self.session.node.close()
        self._fail(lambda _peer: True, "the client closed the connection")
        self.session.shell.manager.on_reply = self._previous

    async def __aenter__(self) -> RemoteKV:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- requests --------------------------------------------------------------------------

    async def get(self, key: str, *, namespace: str | None = None) -> tuple[int, Slot | None]:
        """``(generation, slot)`` of ``key``; ``(0, None)`` for a key never written."""
        ns = namespace or self.account
        check_key(ns, key)
        reply = await self._ask(KvGet(self._rid(), ns, key), KvValue)
        assert isinstance(reply, KvValue)
        return reply.gen, slot_from_wire(reply.slot)

    async def cas(self, key: str, expected_gen: int, slot: Slot, *, namespace: str | None = None) -> CASResult:
        """Store ``slot`` at ``expected_gen + 1`` if ``key`` is at ``expected_gen``:
        :class:`Stored` or :class:`Conflict` (with the current generation and slot). A
        :class:`~engine.kv.envelope.Tombstone` deletes; its time and author are stamped by
        the node (its clock, this account), whatever ``slot`` says."""
        result, _stored = await self.cas_stored(key, expected_gen, slot, namespace=namespace)
        return result

    async def cas_stored(
        self, key: str, expected_gen: int, slot: Slot, *, namespace: str | None = None
    ) -> tuple[CASResult, Slot | None]:
        """:meth:`cas`, and the slot the node stored (a tombstone as the node stamped it;
        None on a conflict)."""
        ns = namespace or self.account
        check_key(ns, key)
        if type(expected_gen) is not int or expected_gen < 0:
            raise UsageError(f"expected generation must be an int >= 0, got {expected_gen!r}")
        wire = cas_slot_to_wire(slot)
        check_value(wire)
        reply = await self._ask(KvCas(self._rid(), ns, key, expected_gen, wire), KvResult)
        assert isinstance(reply, KvResult)
        current = slot_from_wire(reply.slot)
        if reply.status == "stored":
            return Stored(reply.gen), current
        return Conflict(reply.gen, current), None

    async def list(self, prefix: str = "", *, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every slot under ``prefix`` as ``{key, generation, state}`` (never values), sorted
        by key, asking page after page."""
        ns = namespace or self.account
        check_key(ns, prefix)
        items: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            reply = await self._ask(KvList(self._rid(), ns, prefix, after), KvKeys)
            assert isinstance(reply, KvKeys)
            items.extend(reply.items)
            if not reply.more or not reply.items:
                return items
            after = str(reply.items[-1]["key"])

    async def watch(self, prefix: str = "", *, namespace: str | None = None) -> RemoteWatch:
        """Start following the changes under ``prefix``; returns once the node confirmed the
        watch (so every change stored after this returns is delivered)."""
        ns = namespace or self.account
        check_key(ns, prefix)
        rid = self._rid()
        watch = RemoteWatch(rid, ns, prefix, self.session.peer_id)
        # Registered before the request leaves: events may follow the first page in the
        # same frame, before this coroutine runs again.
        self._requests.watches[rid] = watch
        try:
            reply = await self._ask(KvWatch(rid, ns, prefix), KvKeys)
        except BaseException:
            self._requests.watches.pop(rid, None)
            raise
        assert isinstance(reply, KvKeys)
        watch.initial, watch.initial_more = list(reply.items), reply.more
        return watch

    # -- plumbing --------------------------------------------------------------------------

    def _rid(self) -> int:
        return self.session.next_rid()

    async def _ask(self, message: KvGet | KvCas | KvList | KvWatch, expected: type[Message]) -> Message:
        """Send ``message`` (packed with the other requests of this loop turn) and
        return its reply. Raises the typed refusal, ``ProtocolError`` ``connection_lost``,
        ``not_connected`` or ``timeout``."""
        peer_id = self.session.peer_id
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._requests.pending[message.rid] = _Pending(peer_id, future)
        try:
            self.session.shell.manager.send_to(peer_id, message)
            self.session.shell.schedule_dispatch()
            try:
                reply = await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                raise ProtocolError(
                    f"{self.session.url} did not answer {message.T} within {self.timeout:g} s", code="timeout"
                ) from None
        finally:
            self._requests.pending.pop(message.rid, None)
        if isinstance(reply, KvError):
            raise refusal(reply)
        if not isinstance(reply, expected):
            raise ProtocolError(f"the node answered {message.T} with {reply.T}", code="unexpected_message")
        return reply

    def _on_reply(self, peer_id: str, message: Message) -> None:
        if isinstance(message, KvEvent):
            watch = self._requests.watches.get(message.rid)
            if watch is not None and watch.peer_id == peer_id:
                watch._deliver(message)
            return
        rid = getattr(message, "rid", None)
        pending = self._requests.pending.get(rid) if isinstance(rid, int) else None
        if pending is not None and isinstance(message, KvValue | KvResult | KvKeys | KvError):
            if not pending.future.done():
                pending.future.set_result(message)
        elif self._previous is not None:
            self._previous(peer_id, message)

    async def _watch_connection(self) -> None:
        """End what waits on a connection that is gone (checked every CONNECTION_CHECK s)."""
        connections = self.session.shell.connections
        while True:
            await asyncio.sleep(CONNECTION_CHECK)
            self._fail(lambda peer: peer not in connections, f"the connection to {self.session.url} closed")

    def _fail(self, gone: Callable[[str], bool], why: str) -> None:
        for pending in self._requests.pending.values():
            if gone(pending.peer_id) and not pending.future.done():
                pending.future.set_exception(ProtocolError(f"{why} before the reply", code="connection_lost"))
        for rid, watch in list(self._requests.watches.items()):
            if gone(watch.peer_id) or watch._closed:
                watch._end(ProtocolError(why, code="connection_lost"))
                del self._requests.watches[rid]


async def read_modify_write(
    kv: RemoteKV,
    key: str,
    merge: Merge,
    *,
    attempts: int = DEFAULT_RMW_ATTEMPTS,
    namespace: str | None = None,
) -> tuple[int, Slot | None]:
    """:func:`engine.kv.rmw.read_modify_write` against a node: replace ``key`` with
    ``merge(current)``, retrying when another writer wins.

    After a conflict ``merge`` is called again with the value that won (carried by the
    conflict, no extra read), so it must be a pure function of its argument. Returns
    ``(generation, slot)`` as the node stored them (a tombstone as the node stamped it), or
    the current ones unchanged if ``merge`` returned None. Raises
    :class:`~engine.errors.CASRetriesExhausted` after ``attempts`` lost races; refusals,
    connection errors and whatever ``merge`` raises pass through.
    """
    if attempts < 1:
        raise UsageError(f"attempts must be at least 1, got {attempts}")
    generation, current = await kv.get(key, namespace=namespace)
    for _ in range(attempts):
        new = merge(current)
        if new is None:
            return generation, current
        result, stored = await kv.cas_stored(key, generation, new, namespace=namespace)
        if isinstance(result, Stored):
            return result.generation, stored
        generation, current = result.generation, result.slot
    raise CASRetriesExhausted(key, attempts)


async def read_modify_write_many(
    kv: RemoteKV,
    keys: Iterable[str],
    merge: Merge,
    *,
    attempts: int = DEFAULT_RMW_ATTEMPTS,
    namespace: str | None = None,
) -> dict[str, tuple[int, Slot | None] | KintsugiError]:
    """:func:`read_modify_write` each of ``keys`` (duplicates once) with the same ``merge``,
    all at once: each round of requests leaves in one frame.

    A :class:`KintsugiError` on one key (a refusal, retries exhausted, the connection lost,
    or raised by ``merge``) becomes that key's entry and never stops the other keys. Other
    exceptions are bugs and propagate. The result is in the order of ``keys``.
    """
    if attempts < 1:
        raise UsageError(f"attempts must be at least 1, got {attempts}")
    unique = list(dict.fromkeys(keys))

    async def one(key: str) -> tuple[int, Slot | None] | KintsugiError:
        try:
            return await read_modify_write(kv, key, merge, attempts=attempts, namespace=namespace)
        except KintsugiError as exc:
            return exc

    results = await asyncio.gather(*(one(key) for key in unique))
    return dict(zip(unique, results, strict=True))
