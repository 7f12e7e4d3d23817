"""Canonical CBOR (DESIGN §3: cbor2 with ``canonical=True``) and its decoding limits.

Everything hashed or signed is canonical CBOR. Decoding takes bytes from outside, so it is
bounded (:data:`MAX_DECODE_SIZE` bytes, :data:`MAX_DECODE_DEPTH` levels of nesting,
:data:`MAX_BIGNUM_BYTES` bytes per bignum) and raises :class:`engine.errors.InvalidCBOR`
(:class:`engine.errors.IntegerTooLarge` for an oversized bignum), never the decoder's own
exception types.

Why integers are bounded: CBOR's native integers stop at 64 bits, but a bignum (tag 2 or 3)
may carry megabytes of digits. Such a value decodes quickly, but turning it into text (an
error message quoting a field, a log line) raises Python's own integer-string conversion
error past 4,300 digits, and arithmetic on it is slow. Nothing Kintsugi sends needs more than
:data:`MAX_BIGNUM_BYTES` bytes, so a larger bignum is refused while decoding, before anything
can format or compute with it. :func:`short_repr` quotes any decoded value in bounded text.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2

from engine.errors import IntegerTooLarge, InvalidCBOR

#: Largest CBOR document :func:`decode` accepts (a whole wire frame is checked before this).
MAX_DECODE_SIZE = 8 * 1024 * 1024
#: Deepest nesting of arrays/maps accepted; deeper input is rejected, not recursed into.
MAX_DECODE_DEPTH = 64


#: Largest bignum (CBOR tag 2 or 3) accepted, in bytes of magnitude: 256 bits, room for any
#: integer Kintsugi or an application stores, and far below the 4,300 decimal digits at which
#: Python refuses to turn an integer into text.
MAX_BIGNUM_BYTES = 32
#: Characters of a decoded value that :func:`short_repr` quotes.
MAX_QUOTED = 40


# Tag decoders are called with the tag's content and whether it must be immutable (cbor2 6).


def _reject_tag(_value: Any, _immutable: bool = False) -> Any:
    raise cbor2.CBORDecodeError("value-sharing tags (28, 29) are not accepted")


def _bignum(negative: bool) -> Any:
    def decode_bignum(value: Any, _immutable: bool = False) -> int:
        if not isinstance(value, bytes):
            raise cbor2.CBORDecodeError("a bignum holds a byte string")
        if len(value) > MAX_BIGNUM_BYTES:
            raise IntegerTooLarge(len(value), MAX_BIGNUM_BYTES)
        magnitude = int.from_bytes(value, "big")
        return -1 - magnitude if negative else magnitude

    return decode_bignum


#: Tags decoded by Kintsugi's own rules: 2/3 (bignums) are bounded by :data:`MAX_BIGNUM_BYTES`;
#: 28/29 (value sharing) are refused, as they could build cycles or unbounded nesting.
REJECTED_TAGS: dict[int, Any] = {2: _bignum(False), 3: _bignum(True), 28: _reject_tag, 29: _reject_tag}


def short_repr(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` cut to about ``limit`` characters, safe for any decoded value: an
    integer too long to print (and any container holding one) is described, never converted,
    so quoting hostile input in an error or a log line cannot raise."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, str | bytes):
        text = repr(value[:limit])
    elif isinstance(value, bool | int | float | type(None)):
        text = repr(value)
    else:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Longest decoder message quoted in an ``InvalidCBOR`` detail.
MAX_REASON = 160


def _reason(exc: BaseException) -> str:
    """The exception's message, cut short; never raises (a message may quote hostile values)."""
    try:
        text = str(exc)
    except Exception:  # an integer too long to print, say
        return "(message not shown)"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def encode(value: Any) -> bytes:
    """Canonical CBOR of ``value`` (sorted map keys, shortest forms)."""
    try:
        return cbor2.dumps(value, canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise InvalidCBOR(f"cannot encode: {exc}") from exc


def decode(data: bytes, *, require_canonical: bool = False) -> Any:
    """Decode one CBOR item from ``data``.

    Raises :class:`InvalidCBOR` for undecodable data, trailing bytes, oversized input or
    (with ``require_canonical``) an encoding that is not the canonical one;
    :class:`IntegerTooLarge` (an ``InvalidCBOR``) for a bignum over :data:`MAX_BIGNUM_BYTES`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidCBOR(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_DECODE_SIZE:
        raise InvalidCBOR(f"{len(data)} bytes exceed the {MAX_DECODE_SIZE}-byte decode limit")
    raw = bytes(data)
    stream = io.BytesIO(raw)
    # Made outside the ``try``: a decoder that cannot be set up is this installation's
    # problem (a cbor2 older than the floor in pyproject.toml), not the input's.
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=MAX_DECODE_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        semantic_decoders=REJECTED_TAGS,
    )
    try:
        value = decoder.decode()
    except Exception as exc:  # cbor2 raises many types for bad input (ValueError, Recursion, ...)
        cause = _integer_too_large(exc)
        if cause is not None:
            raise cause from None
        raise InvalidCBOR(f"undecodable CBOR: {type(exc).__name__}: {_reason(exc)}") from exc
    if stream.tell() != len(raw):
        raise InvalidCBOR(f"{len(raw) - stream.tell()} trailing bytes after the CBOR item")
    if require_canonical and encode(value) != raw:
        raise InvalidCBOR("CBOR is not in canonical form")
    return value


def _integer_too_large(exc: BaseException) -> IntegerTooLarge | None:
    """The :class:`IntegerTooLarge` a tag decoder raised, when cbor2 wrapped it in its own
    error (it wraps every tag decoder's exception)."""
    seen: BaseException | None = exc
    for _ in range(MAX_DECODE_DEPTH + 2):
        if seen is None:
            return None
        if isinstance(seen, IntegerTooLarge):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
