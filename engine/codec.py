"""Canonical CBOR (DESIGN §3: cbor2 with ``canonical=True``) and its decoding limits.

Everything hashed or signed is canonical CBOR. Decoding takes bytes from outside, so it is
bounded (:data:`MAX_DECODE_SIZE`) and raises :class:`engine.errors.InvalidCBOR`, never the
decoder's own exception types.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from engine.errors import InvalidCBOR

#: Largest CBOR document :func:`decode` accepts (a whole wire frame is checked before this).
MAX_DECODE_SIZE = 8 * 1024 * 1024
#: Deepest nesting of arrays/maps accepted; deeper input is rejected, not recursed into.
MAX_DECODE_DEPTH = 64


def _reject_tag(_decoder: Any, _value: Any) -> Any:
    raise cbor2.CBORDecodeError("value-sharing tags (28, 29) are not accepted")


#: Tags refused on decoding: 28/29 (value sharing) could build cycles or unbounded nesting.
REJECTED_TAGS: dict[int, Any] = {28: _reject_tag, 29: _reject_tag}


def encode(value: Any) -> bytes:
    """Canonical CBOR of ``value`` (sorted map keys, shortest forms)."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise InvalidCBOR(f"cannot encode: {exc}") from exc


def decode(data: bytes, *, require_canonical: bool = False) -> Any:
    """Decode one CBOR item from ``data``.

    Raises :class:`InvalidCBOR` for undecodable data, trailing bytes, oversized input or
    (with ``require_canonical``) an encoding that is not the canonical one.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidCBOR(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DECODE_SIZE:
        raise InvalidCBOR(f"{len(data)} bytes exceed the {MAX_DECODE_SIZE}-byte decode limit")
    raw = bytes(data)
    stream = io.BytesIO(raw)
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            max_depth=MAX_DECODE_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            semantic_decoders=REJECTED_TAGS,
        )
        value = decoder.decode()
    except Exception as exc:  # cbor2 raises many types (ValueError, Recursion, ...)
        raise InvalidCBOR(f"undecodable CBOR: {type(exc).__name__}") from exc
    if stream.tell() != len(raw):
        raise InvalidCBOR(f"{len(raw) - stream.tell()} trailing bytes after the CBOR item")
    if require_canonical and encode(value) != raw:
        raise InvalidCBOR("CBOR is not in canonical form")
    return value
