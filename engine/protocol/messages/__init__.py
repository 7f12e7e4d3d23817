"""Wire messages (DESIGN §6, normative): frozen dataclasses that validate on decoding, one
module per family.

- :mod:`~engine.protocol.messages.base`: the :class:`Message` base, ``error``, the shared
  field validators and the session-chunk codec.
- :mod:`~engine.protocol.messages.handshake`: ``challenge``, ``hello``, ``welcome``.
- :mod:`~engine.protocol.messages.sync`: ``load``, ``known``, ``content``, ``done``,
  ``deleted``, ``correction``.
- :mod:`~engine.protocol.messages.admin`: ``admin`` and ``admin_result``.
- :mod:`~engine.protocol.messages.kv`: CAS slots, ``kv_get``, ``kv_cas``, ``kv_list``,
  ``kv_watch`` and their replies ``kv_value``, ``kv_result``, ``kv_keys``, ``kv_event``,
  ``kv_error``.
- :mod:`~engine.protocol.messages.recovery`: ``recover_open``, ``recover_page`` and
  ``recover_next``, the REPLACE exchange (DESIGN §7.2).

Each message is a CBOR map with ``"t"`` naming its type. :func:`decode_message` turns a
decoded map into a message or raises :class:`engine.errors.ProtocolError` (code
``unknown_message`` or ``invalid_message``) or an id/header/content error with its own code;
it never returns something half-checked. ``to_obj`` gives the map to encode.

Every public name of every family is importable from this package, so callers never need to
know which family a message belongs to.
"""

from __future__ import annotations

from engine.errors import ProtocolError
from engine.protocol.messages.admin import (
    MAX_ADMIN_EVENTS,
    MAX_ADMIN_HISTORY,
    Admin,
    AdminArgs,
    AdminResult,
    EventsArgs,
    KvSlotArgs,
    NoArgs,
    admin_args,
)
from engine.protocol.messages.base import (
    MAX_CHUNK_TRANSACTIONS,
    MAX_TEXT,
    Error,
    Message,
    chunk_from_obj,
    chunk_to_obj,
)
from engine.protocol.messages.handshake import HELLO_DOMAIN, NONCE_SIZE, Challenge, Hello, Welcome, hello_message
from engine.protocol.messages.kv import (
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
)
from engine.protocol.messages.recovery import RecoverItem, RecoverNext, RecoverOpen, RecoverPage, RecoveryScope
from engine.protocol.messages.sync import Content, Correction, Deleted, Done, Known, Load

__all__ = [
    "HELLO_DOMAIN",
    "MAX_ADMIN_EVENTS",
    "MAX_ADMIN_HISTORY",
    "MAX_CHUNK_TRANSACTIONS",
    "MAX_KV_LIST_PAGE",
    "MAX_TEXT",
    "MESSAGE_TYPES",
    "NONCE_SIZE",
    "Admin",
    "AdminArgs",
    "AdminResult",
    "Challenge",
    "Content",
    "Correction",
    "Deleted",
    "Done",
    "Error",
    "EventsArgs",
    "Hello",
    "Known",
    "KvCas",
    "KvError",
    "KvEvent",
    "KvGet",
    "KvKeys",
    "KvList",
    "KvResult",
    "KvSlotArgs",
    "KvValue",
    "KvWatch",
    "Load",
    "Message",
    "NoArgs",
    "RecoverItem",
    "RecoverNext",
    "RecoverOpen",
    "RecoverPage",
    "RecoveryScope",
    "Welcome",
    "admin_args",
    "chunk_from_obj",
    "chunk_to_obj",
    "decode_message",
    "hello_message",
]

#: Every message type by its ``"t"`` tag (the decoder's table).
MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.T: cls
    for cls in (
        Challenge,
        Hello,
        Welcome,
        Error,
        Load,
        Known,
        Content,
        Done,
        Deleted,
        Correction,
        Admin,
        AdminResult,
        KvList,
        KvKeys,
        KvGet,
        KvValue,
        KvCas,
        KvResult,
        KvWatch,
        KvEvent,
        KvError,
        RecoverOpen,
        RecoverPage,
        RecoverNext,
    )
}

#: Characters of an unknown type tag quoted back in the error.
_QUOTED_TAG = 40


def decode_message(obj: object) -> Message:
    """Validate a decoded CBOR map as a message. Raises :class:`KintsugiError` subclasses."""
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ProtocolError("a message is a map with a type t", code="invalid_message")
    cls = MESSAGE_TYPES.get(obj["t"])
    if cls is None:
        raise ProtocolError(f"unknown message type {obj['t'][:_QUOTED_TAG]!r}", code="unknown_message")
    return cls.from_obj(obj)
