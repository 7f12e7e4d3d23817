"""CAS slots (DESIGN §8): envelope bytes, stores, read-modify-write and session leases.

- :mod:`engine.kv.envelope` — the normative ``0x01 ‖ u64le(generation) ‖ CBOR`` slot bytes.
- :mod:`engine.kv.store` — the :class:`KVStore` protocol, :class:`MemoryKV` and
  :class:`AccountKV` (the SQLite implementation is :mod:`engine.storage.sqlite.kv`).
- :mod:`engine.kv.rmw` — read, merge, CAS, retry.
- :mod:`engine.kv.lease` — one writer per session across processes (DESIGN §5).
"""

from engine.kv.envelope import (
    MAX_SLOT_VALUE_SIZE,
    Present,
    Slot,
    Tombstone,
    decode_envelope,
    encode_envelope,
)
from engine.kv.lease import (
    DEFAULT_LEASE_TTL_MS,
    Lease,
    LeaseState,
    SessionLeases,
    lease_key,
    lease_slot,
    parse_lease,
)
from engine.kv.rmw import DEFAULT_RMW_ATTEMPTS, read_modify_write, read_modify_write_many
from engine.kv.store import KV_LOG_KEEP_PER_KEY, AccountKV, CASRecord, CASResult, Conflict, KVStore, MemoryKV, Stored

__all__ = [
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_RMW_ATTEMPTS",
    "KV_LOG_KEEP_PER_KEY",
    "MAX_SLOT_VALUE_SIZE",
    "AccountKV",
    "CASRecord",
    "CASResult",
    "Conflict",
    "KVStore",
    "Lease",
    "LeaseState",
    "MemoryKV",
    "Present",
    "SessionLeases",
    "Slot",
    "Stored",
    "Tombstone",
    "decode_envelope",
    "encode_envelope",
    "lease_key",
    "lease_slot",
    "parse_lease",
    "read_modify_write",
    "read_modify_write_many",
]
