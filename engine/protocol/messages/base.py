"""What every wire message shares: the :class:`Message` base, the ``error`` message, the
field validators each family decodes with, and the session-chunk codec.

Rules this module keeps (DESIGN §6, normative):

- A message is a frozen, slotted dataclass whose class attribute ``T`` is its ``"t"`` tag;
  ``to_obj`` gives the CBOR map to encode, ``from_obj`` validates a decoded map.
- Validation never returns something half-checked: a field that does not hold raises
  :class:`engine.errors.ProtocolError` with code ``invalid_message`` (ids, headers and
  content raise their own typed errors with their own codes).
- A map must hold exactly the fields of its type (plus ``"t"``): missing or unexpected
  fields are ``invalid_message`` (:func:`exact_keys`).
- Free text is at most :data:`MAX_TEXT` characters; integers are non-negative and below
  2**63.
- A session chunk on the wire is ``{"after": n, "txs": [bytes...], "sigs": {n: sig}}`` with
  at most :data:`MAX_CHUNK_TRANSACTIONS` transactions, each at most the transaction size
  limit, and 64-byte checkpoint signatures (whether it ends at a checkpoint is checked where
  it is applied).

``error{code, detail, id?}`` lives here rather than in a family because every family
answers with it: the handshake (``auth_failed``), sync, and frame-level problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.codec import short_repr
from engine.crypto import SIGNATURE_SIZE
from engine.errors import KintsugiError, ProtocolError
from engine.ids import CoValueID, SessionID, parse_covalue_id, parse_session_id
from engine.model.known_state import MAX_KNOWN_SESSIONS
from engine.model.session_log import Chunk
from engine.model.transaction import MAX_TRANSACTION_SIZE

__all__ = [
    "MAX_CHUNK_TRANSACTIONS",
    "MAX_FEATURES",
    "MAX_FEATURE_NAME",
    "MAX_TEXT",
    "Error",
    "Message",
    "chunk_from_obj",
    "chunk_to_obj",
    "exact_keys",
    "features_field",
    "need",
    "nonneg_int",
    "sessions_map",
    "text_field",
]

#: Longest free-text field (error details, versions, names).
MAX_TEXT = 2000
#: Most transactions in one session chunk of one content message.
MAX_CHUNK_TRANSACTIONS = 100_000
#: Unexpected keys of a message quoted back in its error (each cut by ``short_repr``).
MAX_QUOTED_KEYS = 8
#: Most feature names one handshake message announces ...
MAX_FEATURES = 64
#: ... and the longest of them.
MAX_FEATURE_NAME = 64


def need(cond: bool, what: str) -> None:
    """Raise ``ProtocolError(what, code="invalid_message")`` unless ``cond`` holds."""
    if not cond:
        raise ProtocolError(what, code="invalid_message")


def text_field(obj: dict[str, Any], key: str, *, optional: bool = False) -> str:
    """``obj[key]`` as text of at most :data:`MAX_TEXT` characters; ``""`` when ``optional``
    and the field is absent or null. Raises ``invalid_message`` otherwise."""
    value = obj.get(key)
    if value is None and optional:
        return ""
    need(isinstance(value, str) and len(value) <= MAX_TEXT, f"{key} must be text of at most {MAX_TEXT} characters")
    return str(value)


def nonneg_int(obj: dict[str, Any], key: str) -> int:
    """``obj[key]`` as an integer in ``0 .. 2**63 - 1`` (booleans are not integers here).
    Raises ``invalid_message`` otherwise."""
    value = obj.get(key)
    if type(value) is not int or not 0 <= value < 2**63:
        raise ProtocolError(f"{key} must be a non-negative integer", code="invalid_message")
    return value


def exact_keys(obj: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()) -> None:
    """Raise ``invalid_message`` unless ``obj`` holds every ``required`` key and nothing but
    those, the ``optional`` ones and ``"t"``."""
    keys = set(obj)
    missing = required - keys
    extra = keys - required - optional - {"t"}
    if missing or extra:
        # Quoted bounded: an unexpected key may be any decoded value (a huge string, an integer).
        quoted = sorted(map(short_repr, extra))[:MAX_QUOTED_KEYS]
        raise ProtocolError(f"fields missing {sorted(missing)} or unexpected {quoted}", code="invalid_message")


def features_field(obj: dict[str, Any]) -> tuple[str, ...]:
    """``obj["features"]``: a list of at most :data:`MAX_FEATURES` names of at most
    :data:`MAX_FEATURE_NAME` characters. Raises ``invalid_message`` otherwise."""
    value = obj.get("features")
    need(
        isinstance(value, list)
        and len(value) <= MAX_FEATURES
        and all(isinstance(f, str) and len(f) <= MAX_FEATURE_NAME for f in value),
        "features must be a list of short strings",
    )
    return tuple(value)  # type: ignore[arg-type]


def chunk_to_obj(chunk: Chunk) -> dict[str, Any]:
    """The wire map of a session chunk."""
    return {"after": chunk.after, "txs": list(chunk.txs), "sigs": dict(chunk.sigs)}


def chunk_from_obj(obj: object) -> Chunk:
    """A session chunk from its wire map (shape and sizes checked; chains and signatures are
    verified where the chunk is applied). Raises ``invalid_message``."""
    need(isinstance(obj, dict), "a session chunk is a map")
    assert isinstance(obj, dict)
    exact_keys(obj, {"after", "txs", "sigs"})
    after = nonneg_int(obj, "after")
    txs, sigs = obj["txs"], obj["sigs"]
    need(isinstance(txs, list) and len(txs) <= MAX_CHUNK_TRANSACTIONS, "txs must be a list")
    need(
        not txs or (set(map(type, txs)) == {bytes} and max(map(len, txs)) <= MAX_TRANSACTION_SIZE),
        "transactions are bytes of at most the transaction size limit",
    )
    need(isinstance(sigs, dict) and len(sigs) <= len(txs), "sigs must map checkpoints to signatures")
    for n, sig in sigs.items():
        need(type(n) is int and isinstance(sig, bytes) and len(sig) == SIGNATURE_SIZE, "bad checkpoint signature")
    return Chunk(after, txs, sigs)


def sessions_map(obj: object, what: str) -> dict[SessionID, Chunk]:
    """A map of SessionIDs to chunks (at most as many sessions as a known state may hold).
    Raises ``invalid_message`` or ``invalid_id``."""
    need(isinstance(obj, dict) and len(obj) <= MAX_KNOWN_SESSIONS, f"{what} must map sessions to chunks")
    assert isinstance(obj, dict)
    out: dict[SessionID, Chunk] = {}
    for sid, chunk in obj.items():
        parse_session_id(sid)
        out[SessionID(sid)] = chunk_from_obj(chunk)
    return out


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every wire message; ``T`` is the ``"t"`` tag of a concrete type."""

    T: ClassVar[str] = ""

    def to_obj(self) -> dict[str, Any]:
        """The CBOR map of this message, ``"t"`` included."""
        raise NotImplementedError

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Message:
        """Validate a decoded map of this type (its ``"t"`` already matched)."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Error(Message):
    """A problem with a stable ``code`` (docs/protocol.md lists them), about the CoValue ``id``
    when there is one. ``detail`` is for humans and is cut to :data:`MAX_TEXT` on encoding."""

    T: ClassVar[str] = "error"
    code: str
    detail: str = ""
    id: CoValueID | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"t": self.T, "code": self.code, "detail": self.detail[:MAX_TEXT]}
        if self.id is not None:
            obj["id"] = self.id
        return obj

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Error:
        exact_keys(obj, {"code", "detail"}, frozenset({"id"}))
        cid = parse_covalue_id(obj["id"]) if "id" in obj else None
        return cls(text_field(obj, "code"), text_field(obj, "detail"), cid)

    @classmethod
    def of(cls, exc: KintsugiError, covalue: CoValueID | None = None) -> Error:
        """The error message reporting ``exc`` (its code; its detail, or the code when empty)."""
        return cls(exc.code, exc.detail or exc.code, covalue)
