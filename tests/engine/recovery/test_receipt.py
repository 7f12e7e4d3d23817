"""engine.recovery.receipt: a signed record of one apply, with a verifiable archive."""

from __future__ import annotations

from engine.recovery.receipt import ArchivedStretch, Receipt, SignedReceipt
from tests.engine.factories import T0, account, covalue_id, session, signed_log, tx

OPERATOR, ALICE = account(1), account(2)
CID = covalue_id("receipt")


def stretch() -> ArchivedStretch:
    log = signed_log(CID, ALICE, [tx(T0 + i, ["set", "k", i]) for i in range(6)], [2, 4])
    return ArchivedStretch(CID, log.session, 2, log.hash_at(2), log.txs[2:], {n: log.sigs[n] for n in (4, 6)})


def receipt() -> Receipt:
    sid = session(ALICE)
    return Receipt(
        plan_hash=b"\x01" * 32,
        peer="ws://127.0.0.1:9",
        operator=OPERATOR.account_id,
        at_ms=T0,
        before={CID: {sid: (6, b"\x02" * 32)}},
        after={CID: {sid: (2, b"\x03" * 32)}},
        preserved={},
        archived=[stretch()],
    )


def test_a_signed_receipt_verifies_and_reads_back() -> None:
    signed = receipt().sign(OPERATOR)
    assert signed.verify()
    out = signed.to_json()
    assert out["plan"] == "01" * 32 and out["operator"] == OPERATOR.account_id
    assert out["archived"] == [{"covalue": CID, "session": session(ALICE), "start": 2, "count": 4}]
    assert out["before"][CID][session(ALICE)] == [6, "02" * 32]
    assert signed.archived()[0].verify()


def test_a_changed_receipt_or_archive_does_not_verify() -> None:
    signed = receipt().sign(OPERATOR)
    body = bytearray(signed.body)
    body[-5] ^= 1
    assert not SignedReceipt(bytes(body), signed.sig).verify()
    bad = stretch()
    forged = ArchivedStretch(
        bad.covalue, bad.session, bad.start, bad.base, [tx(T0, ["set", "k", 99]), *bad.txs[1:]], bad.sigs
    )
    assert not forged.verify()


def test_only_the_named_operator_signs() -> None:
    import pytest

    from engine.errors import RecoveryError

    with pytest.raises(RecoveryError):
        receipt().sign(ALICE)
