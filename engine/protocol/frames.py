"""The frame envelope (DESIGN §6): one CBOR map per WebSocket binary frame.

``{"v": 1, "k": "bulk", "msgs": [msg, ...]}`` carries the initial exchange after the
handshake; ``{"v": 1, "k": "op", "msg": msg}`` one live message. ``v`` is the version of this
envelope, :data:`ENVELOPE_VERSION`, not of the protocol: the protocol version
(:data:`~engine.protocol.limits.PROTOCOL_VERSION`, what messages and transactions mean) is
stated in the handshake's challenge, so a peer of another protocol version is refused there
with ``unsupported_version`` while it can still read the refusal. The size limit is checked
before anything is decoded. A frame whose messages are partly invalid is reported message by
message: :func:`decode_frame` returns the good ones and the errors of the others, so one bad
message never hides the rest and nothing of a bad message reaches the sync layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine import codec
from engine.errors import FrameTooLarge, InvalidCBOR, KintsugiError, ProtocolError, UnsupportedVersion
from engine.protocol.messages import Message, decode_message

BULK = "bulk"
OP = "op"
#: Version of the frame envelope (the ``v`` of every frame). Protocol 2 changed what group
#: transactions mean (docs/protocol.md, "Group authority"), not how frames are built, so the
#: envelope stays at 1 and the handshake's ``proto`` carries the protocol version.
ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str
    messages: list[Message]
    #: messages of the frame that did not validate (their errors, in order)
    errors: list[KintsugiError] = field(default_factory=list)


def encode_frame(kind: str, messages: Sequence[Message]) -> bytes:
    """One frame holding ``messages`` (exactly one for ``op``)."""
    if kind == OP:
        if len(messages) != 1:
            raise ProtocolError("an op frame holds exactly one message")
        return codec.encode({"v": ENVELOPE_VERSION, "k": OP, "msg": messages[0].to_obj()})
    return codec.encode({"v": ENVELOPE_VERSION, "k": BULK, "msgs": [m.to_obj() for m in messages]})


def decode_frame(data: bytes, *, max_size: int, max_messages: int) -> Frame:
    """Decode and validate a frame.

    Raises :class:`FrameTooLarge` (before decoding), :class:`InvalidCBOR`,
    :class:`UnsupportedVersion` or :class:`ProtocolError` for the frame as a whole. Message-level
    problems are returned in :attr:`Frame.errors`.
    """
    if len(data) > max_size:
        raise FrameTooLarge(len(data), max_size)
    obj = codec.decode(data)
    if not isinstance(obj, dict):
        raise ProtocolError("a frame is a CBOR map", code="malformed_frame")
    if type(obj.get("v")) is not int or obj["v"] != ENVELOPE_VERSION:
        version = codec.short_repr(obj.get("v"))
        raise UnsupportedVersion(f"envelope version {version}; this node speaks {ENVELOPE_VERSION}")
    kind = obj.get("k")
    if kind == OP and set(obj) == {"v", "k", "msg"}:
        raw = [obj["msg"]]
    elif kind == BULK and set(obj) == {"v", "k", "msgs"} and isinstance(obj["msgs"], list):
        raw = obj["msgs"]
        if len(raw) > max_messages:
            raise ProtocolError(f"{len(raw)} messages in one frame; at most {max_messages}", code="malformed_frame")
    else:
        raise ProtocolError("frame must be {v, k: op, msg} or {v, k: bulk, msgs}", code="malformed_frame")
    messages: list[Message] = []
    errors: list[KintsugiError] = []
    for item in raw:
        try:
            messages.append(decode_message(item))
        except KintsugiError as exc:
            errors.append(exc)
    return Frame(kind, messages, errors)


def pack_frames(messages: Iterable[Message], *, max_size: int, sizes: dict[int, int] | None = None) -> list[bytes]:
    """Encode ``messages`` into as few bulk frames as fit under ``max_size`` each.

    A single message too large for any frame raises :class:`FrameTooLarge` (content is split
    at checkpoints before it gets here, so this means a limit is set too low).
    """
    frames: list[bytes] = []
    batch: list[bytes] = []
    batch_size = _BULK_OVERHEAD
    for message in messages:
        encoded = codec.encode(message.to_obj())
        if len(encoded) + _BULK_OVERHEAD > max_size:
            raise FrameTooLarge(len(encoded), max_size)
        if batch and batch_size + len(encoded) > max_size:
            frames.append(_bulk_from_encoded(batch))
            batch, batch_size = [], _BULK_OVERHEAD
        batch.append(encoded)
        batch_size += len(encoded)
    if batch:
        frames.append(_bulk_from_encoded(batch))
    return frames


#: Bytes of a bulk frame besides its messages (map, keys, version, array header).
_BULK_OVERHEAD = 32
#: Canonical CBOR of the map head {"k": "bulk", "v": 1, "msgs": ...}: keys sort by length,
#: then bytewise, so "k" and "v" come before "msgs".
_BULK_HEAD = b"\xa3\x61k\x64bulk\x61v\x01\x64msgs"


def _bulk_from_encoded(encoded: list[bytes]) -> bytes:
    """A bulk frame from canonically encoded messages, each encoded exactly once."""
    n = len(encoded)
    if n < 24:
        head = bytes([0x80 + n])
    elif n < 256:
        head = bytes([0x98, n])
    elif n < 65536:
        head = b"\x99" + n.to_bytes(2, "big")
    else:
        head = b"\x9a" + n.to_bytes(4, "big")
    return _BULK_HEAD + head + b"".join(encoded)


__all__ = ["BULK", "OP", "Frame", "InvalidCBOR", "decode_frame", "encode_frame", "pack_frames"]
