"""engine.model.audit: the hash-chained, signed audit log finds any edit (DESIGN §10)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model.audit import AuditAction, AuditRecord, append_record, verify_chain
from tests.engine.factories import T0, account

OPERATOR, OTHER = account(1), account(2)


def chain(n: int) -> list[AuditRecord]:
    out: list[AuditRecord] = []
    for i in range(n):
        details = {"plan": bytes([i]) * 32, "before": {"s": [i, "00"]}, "peer": "ws://127.0.0.1:1"}
        out.append(
            append_record(
                out[-1] if out else None, OPERATOR, AuditAction.RECOVER, "store", details=details, at_ms=T0 + i
            )
        )
    return out


def test_a_fresh_chain_verifies_and_reads_back() -> None:
    records = chain(4)
    assert verify_chain(records) is None
    assert [r.to_json()["seq"] for r in records] == [1, 2, 3, 4]
    assert records[2].to_json()["actor"] == OPERATOR.account_id
    assert records[2].to_json()["prev"] == records[1].hash.hex()


def test_removing_or_reordering_a_record_is_found() -> None:
    records = chain(4)
    assert "removed or moved" in str(verify_chain(records[:1] + records[2:]))
    assert verify_chain([records[1], records[0], *records[2:]]) is not None


def test_a_record_signed_by_someone_else_is_found() -> None:
    records = chain(2)
    forged = AuditRecord(records[1].body, records[1].hash, OTHER.sign(b"kintsugi/audit-sig/v1" + records[1].hash))
    assert "signature" in str(verify_chain([records[0], forged]))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_changing_any_byte_of_any_record_is_found(data: st.DataObject) -> None:
    records = chain(3)
    which = data.draw(st.integers(0, 2))
    part = data.draw(st.sampled_from(["body", "hash", "sig"]))
    raw = bytearray(getattr(records[which], part))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    fields = {"body": records[which].body, "hash": records[which].hash, "sig": records[which].sig, part: bytes(raw)}
    records[which] = AuditRecord(**fields)
    assert verify_chain(records) is not None


def test_long_texts_are_refused() -> None:
    from engine.errors import AuditError

    with pytest.raises(AuditError):
        append_record(None, OPERATOR, "x" * 3000, "store", details={}, at_ms=T0)
