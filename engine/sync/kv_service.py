"""CAS slots served to peers (DESIGN §8; docs/protocol.md "CAS slots"), sans-I/O: one
request in, the messages it causes out.

:class:`KvService` answers ``kv_get``, ``kv_cas``, ``kv_list`` and ``kv_watch`` from the
replica's :class:`~engine.kv.store.KVStore`; the sync manager hands it every such request
and sends what it returns. The rules:

1. A peer reaches its own account's namespace (the namespace *is* the AccountID). An admin
   peer — one of the node's admin accounts, as for admin requests — may also read any other
   (get, list, watch); writes go to one's own namespace only, admins included. This is
   :class:`~engine.kv.store.AccountKV`'s rule, and the service goes through it.
2. ``kv_cas`` stores only if the key is at the expected generation, and then at the next
   one (the store decides, atomically): generations only grow. Deleting stores a tombstone,
   which the service stamps with the replica's clock and the requester's account.
3. Every request gets exactly one reply with its ``rid`` — ``kv_value``, ``kv_result``,
   ``kv_keys`` — or ``kv_error{rid, code}`` with a stable code (``kv_bad_key``,
   ``kv_value_too_large``, ``kv_access_denied``, ``kv_too_many_watches``, ``invalid_message``,
   or the store's own, such as ``storage_unavailable``). A refusal changes nothing.
4. A watch — at most :data:`MAX_WATCHES_PER_CONNECTION` per connection — is answered with
   the first page of the slots under its prefix, then gets one ``kv_event`` for every change
   this service stores under that prefix, whichever connection made it, in the order the
   changes were stored; the writer's ``kv_result`` comes first. A watch ends when its
   connection goes (:meth:`KvService.drop_peer`); there is no other way to end one.
5. Every reply fits in one frame: a listing is cut to ``reply_budget`` bytes and says
   ``more``. A slot value is at most :data:`~engine.kv.envelope.MAX_SLOT_VALUE_SIZE`.

On a store other nodes share (a cluster on PostgreSQL), the changes they store reach the
watches here too, once this node's follower reads them in the store's change log
(:meth:`KvService.stored_elsewhere`): as the slot is at that moment, so several changes of one
key stored elsewhere between two catch-ups arrive as the newest. The generations a watch is
told of a key only grow. Changes a watch does not see: those written to the store without
this service or a node's — by the replica's own code (its session lease) or by another process
sharing the store file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from engine import codec
from engine.errors import (
    KintsugiError,
    KVBadKey,
    KVError,
    KVTooManyWatches,
    KVValueTooLarge,
    ProtocolError,
    StorageBugError,
    StorageError,
)
from engine.ids import AccountID
from engine.kv.envelope import MAX_SLOT_VALUE_SIZE, Present, Slot, Tombstone
from engine.kv.store import MAX_KEY_LENGTH, AccountKV, CASResult, KVStore, Listing, Stored, check_address
from engine.protocol.messages import (
    MAX_KV_LIST_PAGE,
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
from engine.sync.admin import Requester, first_within

__all__ = [
    "KV_REPLIES",
    "KV_REPLY_HEADROOM",
    "KV_REQUESTS",
    "MAX_WATCHES_PER_CONNECTION",
    "KvRequest",
    "KvService",
    "KvStep",
    "KvWork",
    "Watch",
    "cas_slot_to_wire",
    "check_key",
    "check_value",
    "slot_from_wire",
    "slot_to_wire",
]

logger = logging.getLogger(__name__)

#: Watches one connection may hold at once; one more is refused with
#: ``kv_error{kv_too_many_watches}``. Each costs the node a few hundred bytes and a check
#: on every write to its namespace.
MAX_WATCHES_PER_CONNECTION = 64
#: Bytes of a frame kept free around a ``kv_keys`` page's items (envelope, rid, namespace).
KV_REPLY_HEADROOM = 4096

#: The requests the service answers, and the replies a requester receives.
KvRequest: TypeAlias = KvGet | KvCas | KvList | KvWatch
KV_REQUESTS: tuple[type[Message], ...] = (KvGet, KvCas, KvList, KvWatch)
KV_REPLIES: tuple[type[Message], ...] = (KvValue, KvResult, KvKeys, KvEvent, KvError)

Outgoing: TypeAlias = list[tuple[str, Message]]


def slot_to_wire(slot: Slot | None) -> dict[str, Any] | None:
    """A stored slot as the wire carries it: the envelope's payload map (None: never written)."""
    if slot is None:
        return None
    if isinstance(slot, Present):
        return {"present": slot.value}
    return {"tombstone": {"at": slot.at, "by": slot.by}}


def slot_from_wire(obj: dict[str, Any] | None) -> Slot | None:
    """The slot a decoded ``kv_value``/``kv_result``/``kv_event`` carries (None: never written)."""
    if obj is None:
        return None
    if "present" in obj:
        return Present(obj["present"])
    tombstone = obj["tombstone"]
    return Tombstone(tombstone["at"], AccountID(tombstone["by"]))


def cas_slot_to_wire(slot: Slot) -> dict[str, Any]:
    """What a ``kv_cas`` sends to store ``slot``: a tombstone's time and author are the
    node's to stamp, so it goes as ``{"tombstone": {}}``."""
    return {"present": slot.value} if isinstance(slot, Present) else {"tombstone": {}}


def check_key(namespace: str, key: str) -> None:
    """Raise :class:`KVBadKey` unless ``namespace`` and ``key`` (or a prefix) are an address
    the CAS store takes: a non-empty namespace, at most
    :data:`~engine.kv.store.MAX_KEY_LENGTH` characters each, no NUL."""
    try:
        check_address(namespace, key)
    except KVError as exc:
        raise KVBadKey(f"{exc.detail} (at most {MAX_KEY_LENGTH} characters, no NUL)") from exc


def check_value(wire: dict[str, Any]) -> None:
    """Raise :class:`KVValueTooLarge` when a ``{"present": value}`` slot's CBOR payload is
    over :data:`~engine.kv.envelope.MAX_SLOT_VALUE_SIZE` (the envelope's own limit)."""
    if "present" in wire:
        size = len(codec.encode(wire))
        if size > MAX_SLOT_VALUE_SIZE:
            raise KVValueTooLarge(f"a slot value of {size} bytes exceeds {MAX_SLOT_VALUE_SIZE}")


def _items(listing: Iterable[tuple[str, int, Slot]]) -> list[dict[str, Any]]:
    return [
        {"key": key, "generation": gen, "state": "present" if isinstance(slot, Present) else "tombstone"}
        for key, gen, slot in listing
    ]


@dataclass(frozen=True, slots=True)
class Watch:
    """Watch ``rid`` of connection ``peer_id``: slots of ``namespace`` under ``prefix``."""

    peer_id: str
    rid: int
    namespace: str
    prefix: str


@dataclass(frozen=True, slots=True)
class KvWork:
    """The store call a request needs (:meth:`KvService.plan`), to be made wherever the host
    likes — on the loop, or on a thread of its own — and then, back on the loop, handed to
    :meth:`KvService.finish` with its outcome. ``peer`` and ``msg`` are None for a slot
    another node stored (:meth:`KvService.stored_elsewhere`)."""

    peer: Requester | None
    msg: KvRequest | None
    call: Callable[[], Any]
    then: Callable[[Any], Outgoing]

    def run(self) -> tuple[bool, Any]:
        """Make the store call: ``(True, result)`` or ``(False, error)``; never raises."""
        try:
            return True, self.call()
        except KintsugiError as exc:
            return False, exc
        except Exception as exc:  # a bug below the store's contract: the requester still hears
            return False, StorageBugError(f"the CAS store failed: {exc!r}")


#: What a request leads to: messages at once (a refusal), or a store call to make first.
KvStep: TypeAlias = "KvWork | Outgoing"


class KvService:
    """Answers CAS-slot requests from the peers of one replica (see the module docstring).

    ``kv`` is the replica's store of slots; ``clock_ms`` stamps tombstones; ``reply_budget``
    is how many bytes a ``kv_keys`` page's items may take. Not thread-safe: the loop that
    drives the sync manager drives this too. Each request is checked first, then its one
    store call is made (:class:`KvWork`), then its reply and events are built: a host that
    makes the store calls off its loop (:mod:`engine.net.kv_worker`) makes them in the order
    it was handed them and finishes them in that order, so replies and events keep the order
    the slots were stored in.
    """

    def __init__(
        self,
        kv: KVStore,
        clock_ms: Callable[[], int],
        *,
        reply_budget: int,
        max_watches: int = MAX_WATCHES_PER_CONNECTION,
    ) -> None:
        self.kv = kv
        self.clock_ms = clock_ms
        self.reply_budget = reply_budget
        self.max_watches = max_watches
        #: the live watches, by namespace, in the order they started
        self._watches: dict[str, dict[tuple[str, int], Watch]] = {}
        #: the namespace of each live watch, by connection and rid
        self._rids: dict[str, dict[int, str]] = {}
        #: the newest generation told to the watches, by watched namespace and key
        self._told: dict[str, dict[str, int]] = {}

    def handle(self, peer: Requester, msg: KvRequest) -> Outgoing:
        """The messages ``msg`` from ``peer`` causes, as ``(peer id, message)`` in sending
        order: its reply (or ``kv_error``) to ``peer``, then, for a stored change, the
        ``kv_event`` of every watch that covers it. The store call is made here and now."""
        step = self.plan(peer, msg)
        return step if isinstance(step, list) else self.finish(step, step.run())

    def plan(self, peer: Requester, msg: KvRequest) -> KvStep:
        """Check ``msg``: its refusal at once, or the store call it needs (see :meth:`handle`)."""
        try:
            if isinstance(msg, KvGet):
                return self._get(peer, msg)
            if isinstance(msg, KvCas):
                return self._cas(peer, msg)
            if isinstance(msg, KvList):
                return self._list(peer, msg)
            return self._watch(peer, msg)
        except KintsugiError as exc:
            return self._refused(peer, msg, exc)

    def finish(self, work: KvWork, outcome: tuple[bool, Any]) -> Outgoing:
        """The messages a store call's ``outcome`` (:meth:`KvWork.run`) leads to."""
        ok, value = outcome
        try:
            if not ok:
                raise value
            return work.then(value)
        except KintsugiError as exc:
            if work.peer is None or work.msg is None:
                logger.warning(
                    "could not read a slot stored elsewhere to tell its watches: %s %s", exc.code, exc.detail
                )
                return []
            return self._refused(work.peer, work.msg, exc)

    @staticmethod
    def _refused(peer: Requester, msg: KvRequest, exc: KintsugiError) -> Outgoing:
        level = logging.WARNING if isinstance(exc, StorageError) else logging.INFO
        logger.log(level, "%s %s from %s refused: %s %s", msg.T, msg.rid, peer.id, exc.code, exc.detail)
        return [(peer.id, KvError(msg.rid, exc.code, exc.detail or exc.code))]

    def drop_peer(self, peer_id: str) -> None:
        """The connection ``peer_id`` is gone: its watches end."""
        for rid, namespace in self._rids.pop(peer_id, {}).items():
            watches = self._watches[namespace]
            del watches[(peer_id, rid)]
            if not watches:
                del self._watches[namespace]
                self._told.pop(namespace, None)

    def stored_elsewhere(self, namespace: str, key: str) -> KvStep:
        """The ``kv_event`` s for a slot another node sharing the store stored (its change
        log named it): the slot as it is now (one store call, :class:`KvWork`), to every
        watch that covers it, unless the watches were told of this generation or a newer one
        already. Generations told only grow; several changes stored elsewhere between two
        catch-ups arrive as the last. Nothing when no watch covers it."""
        if not self._covering(namespace, key):
            return []

        def then(got: tuple[int, Slot | None]) -> Outgoing:
            generation, slot = got
            wire = slot_to_wire(slot)
            watches = self._covering(namespace, key)
            if wire is None or not watches or not self._tell(namespace, key, generation):
                return []
            return [(w.peer_id, KvEvent(w.rid, namespace, key, generation, wire)) for w in watches]

        return KvWork(None, None, lambda: self.kv.get(namespace, key), then)

    def _covering(self, namespace: str, key: str) -> list[Watch]:
        return [w for w in self._watches.get(namespace, {}).values() if key.startswith(w.prefix)]

    def _tell(self, namespace: str, key: str, generation: int) -> bool:
        """Note that the watches of ``namespace`` hear of ``key`` at ``generation``; False
        when they heard of it or a newer one already."""
        told = self._told.setdefault(namespace, {})
        if told.get(key, 0) >= generation:
            return False
        told[key] = generation
        return True

    def watch_count(self, peer_id: str | None = None) -> int:
        """Live watches of connection ``peer_id`` (None: of every connection)."""
        if peer_id is not None:
            return len(self._rids.get(peer_id, {}))
        return sum(map(len, self._rids.values()))

    # -- requests --------------------------------------------------------------------------

    def _view(self, peer: Requester, namespace: str, key: str) -> AccountKV:
        """The slots ``peer`` may reach, once ``namespace`` and ``key`` are known to be
        addresses the store takes. Raises :class:`KVBadKey`."""
        check_key(namespace, key)
        return AccountKV(self.kv, peer.account, admin=peer.admin)

    def _get(self, peer: Requester, msg: KvGet) -> KvWork:
        view = self._view(peer, msg.namespace, msg.key)

        def then(got: tuple[int, Slot | None]) -> Outgoing:
            return [(peer.id, KvValue(msg.rid, msg.namespace, msg.key, got[0], slot_to_wire(got[1])))]

        return KvWork(peer, msg, lambda: view.get(msg.namespace, msg.key), then)

    def _cas(self, peer: Requester, msg: KvCas) -> KvWork:
        view = self._view(peer, msg.namespace, msg.key)
        slot = self._requested_slot(peer.account, msg.slot)

        def then(result: CASResult) -> Outgoing:
            if not isinstance(result, Stored):
                logger.debug("kv_cas %s/%s from %s lost at %d", msg.namespace, msg.key, peer.id, result.generation)
                return [(peer.id, KvResult(msg.rid, "conflict", result.generation, slot_to_wire(result.slot)))]
            wire = slot_to_wire(slot)
            assert wire is not None
            out: Outgoing = [(peer.id, KvResult(msg.rid, "stored", result.generation, wire))]
            watches = self._covering(msg.namespace, msg.key)
            if watches and self._tell(msg.namespace, msg.key, result.generation):
                out.extend(
                    (w.peer_id, KvEvent(w.rid, msg.namespace, msg.key, result.generation, wire)) for w in watches
                )
            return out

        return KvWork(peer, msg, lambda: view.cas(msg.namespace, msg.key, msg.expect, slot), then)

    def _requested_slot(self, account: AccountID, wire: dict[str, Any]) -> Slot:
        """The slot a ``kv_cas`` asks to store: its value (at most the envelope's size), or a
        tombstone stamped now by ``account``. Raises :class:`KVValueTooLarge`."""
        if "present" not in wire:
            return Tombstone(self.clock_ms(), account)
        check_value(wire)
        return Present(wire["present"])

    def _list(self, peer: Requester, msg: KvList) -> KvWork:
        view = self._view(peer, msg.namespace, msg.prefix)
        return KvWork(
            peer,
            msg,
            lambda: view.list(msg.namespace, msg.prefix),
            lambda listing: [(peer.id, self._page(msg, listing))],
        )

    def _page(self, msg: KvList, listing: Listing) -> KvKeys:
        """One page: at most ``limit`` keys under ``prefix`` sorted after ``after``, cut to
        the reply budget; ``more`` when keys were left out."""
        if msg.after is not None:
            listing = [row for row in listing if row[0] > msg.after]
        page = min(msg.limit or MAX_KV_LIST_PAGE, MAX_KV_LIST_PAGE)
        items, dropped = first_within(_items(listing[:page]), self.reply_budget)
        return KvKeys(msg.rid, msg.namespace, items, more=bool(dropped) or len(listing) > page)

    def _watch(self, peer: Requester, msg: KvWatch) -> KvWork:
        view = self._view(peer, msg.namespace, msg.prefix)
        self._check_room(peer, msg)

        def then(listing: Listing) -> Outgoing:
            # Checked again: another watch of this connection may have started meanwhile.
            self._check_room(peer, msg)
            first_page = self._page(KvList(msg.rid, msg.namespace, msg.prefix), listing)
            self._rids.setdefault(peer.id, {})[msg.rid] = msg.namespace
            self._watches.setdefault(msg.namespace, {})[(peer.id, msg.rid)] = Watch(
                peer.id, msg.rid, msg.namespace, msg.prefix
            )
            return [(peer.id, first_page)]

        return KvWork(peer, msg, lambda: view.list(msg.namespace, msg.prefix), then)

    def _check_room(self, peer: Requester, msg: KvWatch) -> None:
        rids = self._rids.get(peer.id, {})
        if msg.rid in rids:
            raise ProtocolError(f"watch {msg.rid} is already running on this connection", code="invalid_message")
        if len(rids) >= self.max_watches:
            raise KVTooManyWatches(f"a connection holds at most {self.max_watches} watches")
