"""Receipts (DESIGN §7.2): what one applied recovery did, signed by the operator.

A receipt names the plan it followed by hash, the peer it pulled from, when, the heads of
every session in scope before and after, where owned divergent tails were preserved, and a
copy of every other local-only transaction that the replace removed (the *archive*), with
the signatures that make it verifiable on its own: no signed transaction leaves a replica
without a copy.

Its ``body`` is canonical CBOR; ``sig = Ed25519(operator, "kintsugi/receipt/v1" ‖ body)``.
:meth:`SignedReceipt.verify` checks the signature under the operator's AccountID and that
every archived stretch still verifies as a piece of its session's chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine import codec
from engine.crypto import AccountKey, chain_extend, hash_bytes, signed_message, verify_signature
from engine.errors import InvalidCBOR, RecoveryError
from engine.ids import AccountID, CoValueID, SessionID, session_account

__all__ = ["ArchivedStretch", "Heads", "Receipt", "SignedReceipt"]

RECEIPT_VERSION = 1
SIG_DOMAIN = b"kintsugi/receipt/v1"

#: ``{covalue: {session: (count, head hash)}}``
Heads = Mapping[CoValueID, Mapping[SessionID, tuple[int, bytes]]]


@dataclass(frozen=True, slots=True)
class ArchivedStretch:
    """Transactions ``[start, start + len(txs))`` of a session that the replace removed.

    ``base`` is ``h(start)`` of that session's old chain and ``sigs`` its checkpoints in the
    stretch: enough to check, from the receipt alone, that these are the signed transactions
    the session's owner wrote."""

    covalue: CoValueID
    session: SessionID
    start: int
    base: bytes
    txs: Sequence[bytes]
    sigs: Mapping[int, bytes]

    def verify(self) -> bool:
        """Do the transactions chain from ``base`` and does every checkpoint verify under
        the session owner's key?"""
        hashes = chain_extend(self.base, self.txs)
        account = session_account(self.session)
        for n, sig in self.sigs.items():
            i = n - self.start
            if not 0 < i <= len(hashes):
                return False
            if not verify_signature(account, signed_message(self.covalue, self.session, n, hashes[i - 1]), sig):
                return False
        return True

    def to_obj(self) -> dict[str, Any]:
        return {
            "covalue": self.covalue,
            "session": self.session,
            "start": self.start,
            "base": self.base,
            "txs": list(self.txs),
            "sigs": dict(self.sigs),
        }


def _heads_obj(heads: Heads) -> dict[str, dict[str, list[Any]]]:
    return {cid: {sid: [n, h] for sid, (n, h) in sorted(s.items())} for cid, s in sorted(heads.items())}


def _heads_json(obj: Any) -> dict[str, dict[str, list[Any]]]:
    return {cid: {sid: [v[0], v[1].hex()] for sid, v in s.items()} for cid, s in obj.items()}


@dataclass(frozen=True, slots=True)
class Receipt:
    """What one apply did. ``preserved`` maps an origin session to the conflict session its
    owned tail was kept in (per CoValue)."""

    plan_hash: bytes
    peer: str
    operator: AccountID
    at_ms: int
    before: Heads
    after: Heads
    preserved: Mapping[CoValueID, Mapping[SessionID, SessionID]]
    archived: Sequence[ArchivedStretch]

    def body(self) -> bytes:
        return codec.encode(
            {
                "v": RECEIPT_VERSION,
                "plan": self.plan_hash,
                "peer": self.peer,
                "operator": self.operator,
                "at": self.at_ms,
                "before": _heads_obj(self.before),
                "after": _heads_obj(self.after),
                "preserved": {c: dict(sorted(m.items())) for c, m in sorted(self.preserved.items())},
                "archived": [a.to_obj() for a in self.archived],
            }
        )

    def sign(self, key: AccountKey) -> SignedReceipt:
        """Sign as ``key``, which must be the operator named in the receipt."""
        if key.account_id != self.operator:
            raise RecoveryError(f"{key.account_id} cannot sign a receipt for operator {self.operator}")
        body = self.body()
        return SignedReceipt(body, key.sign(SIG_DOMAIN + body))


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    body: bytes
    sig: bytes

    @property
    def id(self) -> bytes:
        """The receipt's hash: what the audit record of the apply names."""
        return hash_bytes(SIG_DOMAIN + self.body)

    def fields(self) -> dict[str, Any]:
        try:
            obj = codec.decode(self.body, require_canonical=True)
        except InvalidCBOR as exc:
            raise RecoveryError(f"receipt is not canonical CBOR: {exc.detail}") from exc
        if not isinstance(obj, dict) or obj.get("v") != RECEIPT_VERSION:
            raise RecoveryError("not a receipt this build can read")
        return obj

    def archived(self) -> list[ArchivedStretch]:
        return [
            ArchivedStretch(a["covalue"], a["session"], a["start"], a["base"], a["txs"], a["sigs"])
            for a in self.fields()["archived"]
        ]

    def verify(self) -> bool:
        """Signed by the operator it names, and every archived stretch verifies."""
        try:
            obj = self.fields()
            ok = verify_signature(obj["operator"], SIG_DOMAIN + self.body, self.sig)
            return ok and all(a.verify() for a in self.archived())
        except (RecoveryError, KeyError, TypeError, ValueError):
            return False

    def to_json(self) -> dict[str, Any]:
        """The receipt as the CLI prints it: heads and hashes in hex, archived transactions
        counted (their bytes stay in the stored receipt)."""
        obj = self.fields()
        return {
            "id": self.id.hex(),
            "plan": obj["plan"].hex(),
            "peer": obj["peer"],
            "operator": obj["operator"],
            "at": obj["at"],
            "before": _heads_json(obj["before"]),
            "after": _heads_json(obj["after"]),
            "preserved": obj["preserved"],
            "archived": [
                {"covalue": a["covalue"], "session": a["session"], "start": a["start"], "count": len(a["txs"])}
                for a in obj["archived"]
            ],
            "signature": self.sig.hex(),
        }
