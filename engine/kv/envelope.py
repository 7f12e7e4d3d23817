"""CAS-slot envelope v1 (DESIGN §8, normative bytes).

A stored slot value is::

    0x01 ‖ u64le(generation) ‖ payload

where ``payload`` is canonical CBOR of exactly one of::

    {"present": value}
    {"tombstone": {"at": ms, "by": AccountID}}

Decoding takes bytes that may come from disk or from a peer, so it is strict: the version
byte, the generation range, the payload size (:data:`MAX_SLOT_VALUE_SIZE`), canonical CBOR,
the payload shape (no extra keys) and the AccountID are all checked, and every failure raises
:class:`engine.errors.InvalidEnvelope` with a reason. Because the payload must be canonical,
two different byte strings never decode to the same ``(generation, slot)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, TypeAlias

from engine.codec import decode, encode
from engine.errors import InvalidCBOR, InvalidEnvelope, InvalidId
from engine.ids import AccountID, parse_account_id

__all__ = [
    "ENVELOPE_VERSION",
    "MAX_GENERATION",
    "MAX_SLOT_VALUE_SIZE",
    "Present",
    "Slot",
    "Tombstone",
    "decode_envelope",
    "encode_envelope",
]

#: First byte of every envelope of this format.
ENVELOPE_VERSION = 0x01
#: Largest CBOR payload (the ``{"present": ...}`` or ``{"tombstone": ...}`` map, in bytes)
#: accepted by :func:`encode_envelope` and :func:`decode_envelope`.
MAX_SLOT_VALUE_SIZE = 64 * 1024
#: Largest generation. The wire field is a u64, but generations are also stored in SQLite
#: ``INTEGER`` columns (signed 64-bit), so anything above 2**63 - 1 is refused on both sides.
MAX_GENERATION = 2**63 - 1
#: Largest tombstone timestamp (ms), for the same reason.
MAX_TIMESTAMP_MS = 2**63 - 1

_HEADER = struct.Struct("<BQ")


@dataclass(frozen=True, slots=True)
class Present:
    """A live slot holding ``value`` (anything canonical CBOR can encode)."""

    value: Any


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted slot: deleted at ``at`` (Unix ms) by account ``by``.

    Deleting writes a tombstone at the next generation instead of removing the row, so a
    generation is never reused (no ABA).
    """

    at: int
    by: AccountID


Slot: TypeAlias = Present | Tombstone


def _check_generation(generation: object) -> int:
    if type(generation) is not int:
        raise InvalidEnvelope(f"generation must be an int, got {type(generation).__name__}")
    if not 1 <= generation <= MAX_GENERATION:
        raise InvalidEnvelope(f"generation {generation} outside 1..{MAX_GENERATION}")
    return generation


def _payload(slot: Slot) -> dict[str, Any]:
    if isinstance(slot, Present):
        return {"present": slot.value}
    if isinstance(slot, Tombstone):
        return {"tombstone": {"at": slot.at, "by": slot.by}}
    raise InvalidEnvelope(f"slot must be Present or Tombstone, got {type(slot).__name__}")


def _check_tombstone(fields: object) -> Tombstone:
    if not isinstance(fields, dict) or set(fields) != {"at", "by"}:
        raise InvalidEnvelope('tombstone must be a map with exactly "at" and "by"')
    at = fields["at"]
    if type(at) is not int or not 0 <= at <= MAX_TIMESTAMP_MS:
        raise InvalidEnvelope(f"tombstone time must be an int in 0..{MAX_TIMESTAMP_MS}")
    try:
        by = parse_account_id(fields["by"])
    except InvalidId as exc:
        raise InvalidEnvelope(f"tombstone author: {exc.detail}") from exc
    return Tombstone(at, by)


def encode_envelope(generation: int, slot: Slot, *, max_size: int = MAX_SLOT_VALUE_SIZE) -> bytes:
    """The envelope bytes for ``slot`` at ``generation`` (1 or more).

    Raises :class:`InvalidEnvelope` if the generation is out of range, the slot is not a
    :class:`Present`/:class:`Tombstone`, a tombstone's fields are invalid, the value cannot be
    encoded as CBOR, or the payload exceeds ``max_size`` bytes.
    """
    _check_generation(generation)
    if isinstance(slot, Tombstone):
        _check_tombstone({"at": slot.at, "by": slot.by})
    try:
        payload = encode(_payload(slot))
    except InvalidCBOR as exc:
        raise InvalidEnvelope(f"slot value: {exc.detail}") from exc
    if len(payload) > max_size:
        raise InvalidEnvelope(f"slot payload of {len(payload)} bytes exceeds {max_size}")
    return _HEADER.pack(ENVELOPE_VERSION, generation) + payload


def decode_envelope(data: bytes, *, max_size: int = MAX_SLOT_VALUE_SIZE) -> tuple[int, Slot]:
    """Parse envelope bytes into ``(generation, slot)``.

    Raises :class:`InvalidEnvelope` (never anything else) for a non-bytes argument, a wrong
    version byte, a truncated header, a generation of 0 or above :data:`MAX_GENERATION`, a
    payload over ``max_size`` bytes, undecodable or non-canonical CBOR, a payload that is not
    exactly one of the two shapes, or a tombstone with a bad time or AccountID.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidEnvelope(f"expected bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) < _HEADER.size + 1:
        raise InvalidEnvelope(f"{len(raw)} bytes is shorter than any envelope")
    version, generation = _HEADER.unpack_from(raw)
    if version != ENVELOPE_VERSION:
        raise InvalidEnvelope(f"unknown envelope version {version:#04x}")
    _check_generation(generation)
    payload_size = len(raw) - _HEADER.size
    if payload_size > max_size:
        raise InvalidEnvelope(f"slot payload of {payload_size} bytes exceeds {max_size}")
    try:
        payload = decode(raw[_HEADER.size :], require_canonical=True)
    except InvalidCBOR as exc:
        raise InvalidEnvelope(f"payload: {exc.detail}") from exc
    if not isinstance(payload, dict) or len(payload) != 1:
        raise InvalidEnvelope("payload must be a map with exactly one key")
    ((kind, body),) = payload.items()
    if kind == "present":
        return generation, Present(body)
    if kind == "tombstone":
        return generation, _check_tombstone(body)
    raise InvalidEnvelope(f'payload key must be "present" or "tombstone", got {kind!r}')
