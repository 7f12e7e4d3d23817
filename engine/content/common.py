"""What every content view shares: the total order and the record of invalid transactions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from engine.errors import InvalidTransaction
from engine.ids import SessionID, is_delete_session
from engine.model.session_log import SessionLog
from engine.model.transaction import Transaction, decode_transaction

#: Order key of a change: (madeAt, sessionID, transaction index, change index). Total and the
#: same on every replica, so every replica computes byte-identical content.
OrderKey = tuple[int, str, int, int]


@dataclass(frozen=True, slots=True)
class InvalidTx:
    """A transaction kept in the log (it is signed history) but excluded from content."""

    session: SessionID
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class DecodedTx:
    session: SessionID
    index: int
    tx: Transaction


def ordered_transactions(
    logs: Iterable[SessionLog], invalid: list[InvalidTx], *, signed_only: bool = False
) -> Iterator[DecodedTx]:
    """All transactions of ``logs`` in (madeAt, sessionID, index) order, decoded.

    Undecodable transactions are appended to ``invalid`` and skipped.
    """
    decoded: list[tuple[int, str, int, DecodedTx]] = []
    for log in logs:
        stop = log.signed_count if signed_only else log.count
        for i in range(stop):
            try:
                tx = decode_transaction(log.txs[i])
            except InvalidTransaction as exc:
                invalid.append(InvalidTx(log.session, i, f"undecodable: {exc.detail}"))
                continue
            decoded.append((tx.made_at, log.session, i, DecodedTx(log.session, i, tx)))
    decoded.sort(key=lambda item: item[:3])
    return (item[3] for item in decoded)


def sessions_for_content(sessions: Mapping[SessionID, SessionLog]) -> list[SessionLog]:
    """Active and conflict sessions (delete sessions carry only delete markers)."""
    return [log for sid, log in sessions.items() if not is_delete_session(sid)]
