"""The diagnostic bundle's format (DESIGN §10): member names, versions, row files, JSON forms.

A bundle is one zip file. ``manifest.json`` is written last and names every other member
with its size and SHA-256 (of the member's bytes as stored in the zip, uncompressed):

- ``covalues.jsonl``: one CoValue per line — header (metadata as tokens when redacted),
  deleted flag, and each session's kind, count, head, the hash and signature at every
  checkpoint, verification state (verified rows, first broken link), newest ``madeAt``;
  fork points; invalid transactions and tombstones when ``analysed``.
- ``content.jsonl``: one analysed CoValue per line — each key's winning change with
  provenance (keys and values as tokens when redacted; CBOR in hex otherwise).
- ``kv.jsonl``: one CAS slot per line — key (a token), generation, state, value (a token),
  history with lost races.
- ``matrix.json`` (peers × sessions), ``tombstones.json`` (with who acknowledged each),
  ``events.jsonl`` (recent sync events), ``peers.json`` (peers and the peer log),
  ``anomalies.json``, ``audit.jsonl``, ``config.json``, ``logs.jsonl``.
- With raw content only: ``rows/<n>.bin`` per session — each row ``u32le(len) ‖ tx ‖
  h(i+1)`` — stored uncompressed so a reader can seek, and ``rows/<n>.idx``, the ``u64le``
  offset of every :data:`ROW_INDEX_STRIDE`-th row.

Readers accept :data:`BUNDLE_VERSION` and refuse a newer major version. The JSON helpers here
(hex for bytes, CBOR-in-hex for raw values) are shared by the writer and the reader.
"""

from __future__ import annotations

import struct
from typing import Any

from engine import codec
from engine.errors import InvalidCBOR

__all__ = [
    "ANOMALIES",
    "AUDIT",
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "CONFIG",
    "CONTENT",
    "COVALUES",
    "EVENTS",
    "KV",
    "LOGS",
    "MANIFEST",
    "MATRIX",
    "PEERS",
    "ROW_HEADER",
    "ROW_INDEX_STRIDE",
    "TOMBSTONES",
    "raw_value",
    "read_raw_value",
    "rows_member",
]

#: What a manifest's ``format`` says, and the version this build writes (and reads up to).
BUNDLE_FORMAT = "kintsugi-bundle"
BUNDLE_VERSION = 1

MANIFEST = "manifest.json"
COVALUES = "covalues.jsonl"
CONTENT = "content.jsonl"
KV = "kv.jsonl"
MATRIX = "matrix.json"
TOMBSTONES = "tombstones.json"
EVENTS = "events.jsonl"
PEERS = "peers.json"
ANOMALIES = "anomalies.json"
AUDIT = "audit.jsonl"
CONFIG = "config.json"
LOGS = "logs.jsonl"

#: Rows between two entries of a ``rows/<n>.idx`` index.
ROW_INDEX_STRIDE = 1000
#: A row's length prefix in a ``rows/<n>.bin`` member.
ROW_HEADER = struct.Struct("<I")
#: One entry of a row index.
INDEX_ENTRY = struct.Struct("<Q")


def rows_member(n: int) -> tuple[str, str]:
    """Names of the row file and its index for the ``n``-th session with raw content."""
    return f"rows/{n}.bin", f"rows/{n}.idx"


def raw_value(value: Any) -> dict[str, str]:
    """A value in clear, as JSON can carry any CBOR value: ``{"cbor": hex}``."""
    try:
        return {"cbor": codec.encode(value).hex()}
    except InvalidCBOR:
        return {"cbor": codec.encode(repr(value)).hex()}


def read_raw_value(obj: Any) -> Any:
    """The value of :func:`raw_value`'s form; anything else (a token) as it is."""
    if isinstance(obj, dict) and isinstance(obj.get("cbor"), str):
        try:
            return codec.decode(bytes.fromhex(obj["cbor"]))
        except (ValueError, InvalidCBOR):
            return obj["cbor"]
    return obj
