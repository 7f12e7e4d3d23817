"""Read-modify-write over CAS slots (DESIGN §8): read, merge, CAS, retry on conflict."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeAlias

from engine.errors import CASRetriesExhausted, KintsugiError, UsageError
from engine.kv.envelope import Slot
from engine.kv.store import KVStore, Stored

__all__ = ["DEFAULT_RMW_ATTEMPTS", "Merge", "read_modify_write", "read_modify_write_many"]

#: CAS attempts a read-modify-write makes before giving up with CASRetriesExhausted.
DEFAULT_RMW_ATTEMPTS = 8

#: ``merge(current)`` gets the current slot (None: never written) and returns the slot to
#: store, or None to leave the key as it is.
Merge: TypeAlias = Callable[[Slot | None], Slot | None]


def read_modify_write(
    store: KVStore,
    namespace: str,
    key: str,
    merge: Merge,
    *,
    attempts: int = DEFAULT_RMW_ATTEMPTS,
) -> tuple[int, Slot | None]:
    """Replace the slot at ``key`` with ``merge(current)``, retrying when another writer wins.

    After a conflict ``merge`` is called again with the value that won, so it must be a pure
    function of its argument. Returns ``(generation, slot)`` as stored, or the current ones
    unchanged if ``merge`` returned None. Raises :class:`CASRetriesExhausted` after
    ``attempts`` lost races; whatever ``merge`` or the store raise passes through.
    """
    if attempts < 1:
        raise UsageError(f"attempts must be at least 1, got {attempts}")
    generation, current = store.get(namespace, key)
    for _ in range(attempts):
        new = merge(current)
        if new is None:
            return generation, current
        result = store.cas(namespace, key, generation, new)
        if isinstance(result, Stored):
            return result.generation, new
        # The conflict carries the winner's value: merge against that, no extra read.
        generation, current = result.generation, result.slot
    raise CASRetriesExhausted(key, attempts)


def read_modify_write_many(
    store: KVStore,
    namespace: str,
    keys: Iterable[str],
    merge: Merge,
    *,
    attempts: int = DEFAULT_RMW_ATTEMPTS,
) -> dict[str, tuple[int, Slot | None] | KintsugiError]:
    """:func:`read_modify_write` each of ``keys`` (duplicates once) with the same ``merge``.

    A :class:`KintsugiError` on one key (raised by ``merge`` or the store, or retries
    exhausted) becomes that key's entry in the result and never stops the other keys. Other
    exceptions are bugs and propagate at once.
    """
    if attempts < 1:
        raise UsageError(f"attempts must be at least 1, got {attempts}")
    results: dict[str, tuple[int, Slot | None] | KintsugiError] = {}
    for key in keys:
        if key in results:
            continue
        try:
            results[key] = read_modify_write(store, namespace, key, merge, attempts=attempts)
        except KintsugiError as exc:
            results[key] = exc
    return results
