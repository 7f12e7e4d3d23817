"""CAS slots as readers see them: a slot as a row, and one slot with its history as an
admin's ``kv_slot`` request carries it (see docs/protocol.md).

:func:`slot_rows` turns a listing into :class:`SlotRow` values. Over the wire one slot
travels as :func:`slot_detail_json` writes it — value and newest CAS records, cut to fit a
frame — and :func:`slot_detail_from_json` reads it back as a :class:`SlotDetail`, rejecting
anything else with :class:`~engine.errors.ProtocolError` (``invalid_message``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine import codec
from engine.errors import InvalidId, ProtocolError
from engine.ids import AccountID, parse_account_id
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.store import CASRecord

__all__ = ["SlotDetail", "SlotRow", "slot_detail_from_json", "slot_detail_json", "slot_row", "slot_rows"]

#: Bytes set aside in :func:`slot_detail_json` for the reply map's own keys and small fields
#: (generation, state, counts), on top of the namespace and key.
_DETAIL_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One CAS slot. ``value`` is None for a tombstone; ``deleted_at``/``deleted_by`` only
    for a tombstone."""

    namespace: str
    key: str
    generation: int
    present: bool
    value: Any = None
    deleted_at: int | None = None
    deleted_by: AccountID | None = None

    @property
    def state(self) -> str:
        return "present" if self.present else "tombstone"


def slot_row(namespace: str, key: str, generation: int, slot: Slot) -> SlotRow:
    if isinstance(slot, Tombstone):
        return SlotRow(namespace, key, generation, False, None, slot.at, slot.by)
    assert isinstance(slot, Present)
    return SlotRow(namespace, key, generation, True, slot.value)


def slot_rows(namespace: str, listing: list[tuple[str, int, Slot]]) -> list[SlotRow]:
    """:meth:`KVStore.list` output as rows."""
    return [slot_row(namespace, key, generation, slot) for key, generation, slot in listing]


@dataclass(frozen=True, slots=True)
class SlotDetail:
    """One slot as a node sent it. ``row.value`` is the value, except when ``value_omitted``
    (the value alone would not fit in a frame): then it is a text saying so. ``history`` is
    the newest CAS records, oldest first; ``history_dropped`` counts older records the node
    keeps but left out (the request's limit or the frame size)."""

    row: SlotRow
    history: list[CASRecord] = field(default_factory=list)
    history_dropped: int = 0
    value_omitted: bool = False


def _record_json(record: CASRecord) -> dict[str, Any]:
    return {
        "at_ms": record.at_ms,
        "expected_gen": record.expected_gen,
        "outcome": record.outcome,
        "generation": record.generation,
        "writer": record.writer,
    }


def slot_detail_json(
    namespace: str,
    key: str,
    generation: int,
    slot: Slot | None,
    history: list[CASRecord],
    *,
    max_records: int,
    max_bytes: int,
) -> dict[str, Any]:
    """The ``kv_slot`` reply for one slot, whose canonical CBOR takes at most ``max_bytes``.

    ``{namespace, key, generation, state, value?, value_size?, value_omitted, deleted_at?,
    deleted_by?, history, history_dropped}``: ``state`` is ``present``, ``tombstone`` or
    ``absent`` (never written: generation 0). A present value is left out
    (``value_omitted: true``, its size still given) when it would not fit; ``history`` holds
    the newest of ``history`` records that fit, at most ``max_records``, oldest first.
    """
    out: dict[str, Any] = {"namespace": namespace, "key": key, "generation": generation, "value_omitted": False}
    if slot is None:
        out["state"] = "absent"
    elif isinstance(slot, Tombstone):
        out.update(state="tombstone", deleted_at=slot.at, deleted_by=slot.by)
    else:
        assert isinstance(slot, Present)
        value_size = len(codec.encode(slot.value))
        out.update(state="present", value_size=value_size)
        if len(codec.encode(out)) + value_size + _DETAIL_OVERHEAD <= max_bytes:
            out["value"] = slot.value
        else:
            out["value_omitted"] = True
    budget = max_bytes - len(codec.encode(out)) - _DETAIL_OVERHEAD
    kept: list[dict[str, Any]] = []
    for record in reversed(history[len(history) - max_records :] if max_records else []):
        row = _record_json(record)
        budget -= len(codec.encode(row))
        if budget < 0:
            break
        kept.append(row)
    kept.reverse()
    out["history"] = kept
    out["history_dropped"] = len(history) - len(kept)
    return out


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ProtocolError(f"kv_slot reply: {what}", code="invalid_message")


def _nonneg(value: object) -> bool:
    return type(value) is int and value >= 0


def slot_detail_from_json(obj: object) -> SlotDetail:
    """Read a ``kv_slot`` reply. Raises :class:`ProtocolError` (``invalid_message``) for any
    other shape; CAS records that are not records make the whole reply invalid."""
    _need(isinstance(obj, dict), "not a map")
    assert isinstance(obj, dict)
    namespace, key, generation, state = obj.get("namespace"), obj.get("key"), obj.get("generation"), obj.get("state")
    _need(isinstance(namespace, str) and isinstance(key, str), "namespace and key must be text")
    _need(_nonneg(generation), "generation must be a non-negative integer")
    _need(state in ("present", "tombstone", "absent"), f"unknown state {state!r}")
    assert isinstance(namespace, str) and isinstance(key, str) and isinstance(generation, int)
    omitted = obj.get("value_omitted") is True
    if state == "tombstone":
        at, by = obj.get("deleted_at"), obj.get("deleted_by")
        _need(_nonneg(at), "deleted_at must be a non-negative integer")
        try:
            row = SlotRow(namespace, key, generation, False, None, at, parse_account_id(by))
        except InvalidId as exc:
            raise ProtocolError(f"kv_slot reply: deleted_by: {exc.detail}", code="invalid_message") from exc
    elif state == "present" and omitted:
        size = obj.get("value_size")
        row = SlotRow(namespace, key, generation, True, f"(a value of {size} bytes, too large to send)")
    else:
        row = SlotRow(namespace, key, generation, state == "present", obj.get("value"))
    history = obj.get("history", [])
    _need(isinstance(history, list), "history must be a list")
    records = []
    for item in history:
        _need(isinstance(item, dict), "a CAS record is a map")
        at_ms, expected, outcome, gen, writer = (
            item.get(k) for k in ("at_ms", "expected_gen", "outcome", "generation", "writer")
        )
        _need(_nonneg(at_ms) and _nonneg(expected) and _nonneg(gen), "CAS record times and generations")
        _need(outcome in ("stored", "conflict"), f"unknown CAS outcome {outcome!r}")
        _need(writer is None or isinstance(writer, str), "CAS record writer must be text or null")
        records.append(CASRecord(namespace, key, at_ms, expected, outcome, gen, writer))
    dropped = obj.get("history_dropped", 0)
    _need(_nonneg(dropped), "history_dropped must be a non-negative integer")
    assert isinstance(dropped, int)
    return SlotDetail(row, records, dropped, omitted)
