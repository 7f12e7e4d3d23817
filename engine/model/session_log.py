"""Session logs (DESIGN §4, normative): ordered transactions, hash chain, signed checkpoints.

``hashes[i]`` is ``h(i+1)``, the chain hash after transaction ``i``; ``h(0)`` is the chain
base that binds the log to its CoValue and session. ``sigs[n]`` is the owner's signature of
``h(n)``: a *checkpoint*. Only prefixes that end at a checkpoint are stored, advertised or
sent; transactions written locally and not yet signed are *pending*.

Verifying a received chunk costs one hash per new transaction and one signature check per
checkpoint in it, never one signature per transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import islice

from engine.crypto import HASH_SIZE, AccountKey, chain_base, chain_extend, signed_message, verify_signature
from engine.errors import ChainError, ForkError, InvalidContent, MissingPrefix, SignatureError, UsageError
from engine.ids import AccountID, CoValueID, SessionID, session_account
from engine.model.transaction import MAX_TRANSACTION_SIZE

_blake2b = hashlib.blake2b

#: A local writer signs at least this often (transactions) ...
MAX_BATCH_TRANSACTIONS = 1000
#: ... and at least this often (bytes of transactions).
MAX_BATCH_BYTES = 100 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    """Transactions ``after``, ``after+1``, … of a session and the checkpoints among them.

    ``sigs`` maps a checkpoint count ``n`` (``after < n <= after + len(txs)``) to the
    signature of ``h(n)``. A chunk sent or stored always ends at a checkpoint.
    """

    after: int
    txs: Sequence[bytes]
    sigs: Mapping[int, bytes]

    @property
    def end(self) -> int:
        return self.after + len(self.txs)


def sigs_between(sigs: Mapping[int, bytes], after: int, stop: int) -> dict[int, bytes]:
    """The signatures of checkpoints ``after < n <= stop``, ascending. Looked up one count at a
    time when the range is shorter than the map: passing on the newest transactions of a long
    session then costs what they are, not what the session is."""
    if stop - after < len(sigs):
        return {n: sigs[n] for n in range(after + 1, stop + 1) if n in sigs}
    return dict(sorted((n, s) for n, s in sigs.items() if after < n <= stop))


class SessionLog:
    """One session of one CoValue: its transactions, chain hashes and checkpoints."""

    __slots__ = ("_signed", "_signed_seen", "account", "base", "covalue", "hashes", "session", "sigs", "txs")

    def __init__(self, covalue: CoValueID, session: SessionID) -> None:
        self.covalue = covalue
        self.session = session
        self.account: AccountID = session_account(session)
        self.base = chain_base(covalue, session)
        self.txs: list[bytes] = []
        self.hashes: list[bytes] = []
        self.sigs: dict[int, bytes] = {}
        # signed_count, as of the first ``_signed_seen`` keys of ``sigs`` (see signed_count)
        self._signed = 0
        self._signed_seen = 0

    # -- reading -----------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Transactions held, including pending (unsigned) ones."""
        return len(self.txs)

    @property
    def signed_count(self) -> int:
        """Length of the longest prefix that ends at a checkpoint.

        Asked on every write and every apply, so kept up to date from the keys added to
        ``sigs`` since the last call (a dict iterates newest last): checkpoints are only
        ever added, never removed; if some were, it is counted afresh."""
        sigs = self.sigs
        seen = len(sigs)
        if seen != self._signed_seen:
            if seen > self._signed_seen:
                newest = max(islice(reversed(sigs), seen - self._signed_seen))
                self._signed = max(self._signed, newest)
            else:
                self._signed = max(sigs, default=0)
            self._signed_seen = seen
        return self._signed

    @property
    def pending(self) -> int:
        return len(self.txs) - self.signed_count

    def hash_at(self, n: int) -> bytes:
        """``h(n)``; ``h(0)`` is the chain base."""
        return self.hashes[n - 1] if n else self.base

    def head(self) -> tuple[int, bytes]:
        """``(n, h(n))`` at the last checkpoint: what this replica advertises."""
        n = self.signed_count
        return n, self.hash_at(n)

    def checkpoints(self) -> list[int]:
        return sorted(self.sigs)

    def chunk(self, after: int = 0, end: int | None = None) -> Chunk:
        """Transactions ``[after, end)`` (``end`` defaults to the last checkpoint)."""
        stop = self.signed_count if end is None else end
        if stop not in self.sigs and stop != 0:
            raise UsageError(f"a chunk must end at a checkpoint, not {stop}")
        return Chunk(after, self.txs[after:stop], sigs_between(self.sigs, after, stop))

    # -- local writing -----------------------------------------------------------------------

    def append_pending(self, tx: bytes) -> None:
        """Append a locally made transaction; it stays pending until :meth:`sign`."""
        if len(tx) > MAX_TRANSACTION_SIZE:
            raise UsageError("transaction too large")
        head = self.hashes[-1] if self.hashes else self.base
        self.hashes.append(_blake2b(head + len(tx).to_bytes(4, "little") + tx, digest_size=HASH_SIZE).digest())
        self.txs.append(tx)

    def sign(self, key: AccountKey) -> int | None:
        """Sign the pending transactions as one checkpoint; returns its count or None."""
        n = len(self.txs)
        if n == self.signed_count:
            return None
        if key.account_id != self.account:
            raise UsageError(f"{key.account_id} cannot sign session {self.session}")
        self.sigs[n] = key.sign(signed_message(self.covalue, self.session, n, self.hash_at(n)))
        return n

    def drop_pending(self) -> int:
        """Forget unsigned transactions (a write batch that was abandoned)."""
        n = self.signed_count
        dropped = len(self.txs) - n
        del self.txs[n:], self.hashes[n:]
        return dropped

    # -- receiving ---------------------------------------------------------------------------

    def verify_chunk(self, chunk: Chunk) -> list[bytes]:
        """Check that ``chunk`` extends this log; return the chain hashes of its new part.

        Raises :class:`MissingPrefix` when it starts after our end, :class:`ForkError` when a
        correctly signed chunk disagrees with transactions we hold (the fork index is the
        first that differs), :class:`SignatureError` or :class:`ChainError` when the chunk
        itself does not verify, and :class:`InvalidContent` when it is ill-formed. Nothing is
        changed; call :meth:`apply_verified` with the result.
        """
        after, txs, sigs, end = chunk.after, chunk.txs, chunk.sigs, chunk.end
        held = len(self.txs)
        if after < 0:
            raise InvalidContent(f"{self.session}: negative start {after}")
        if after > held:
            raise MissingPrefix(self.session, held, after)
        if not txs:
            if sigs:
                raise InvalidContent(f"{self.session}: signatures without transactions")
            return []
        if end not in sigs:
            raise InvalidContent(f"{self.session}: chunk ending at {end} has no checkpoint there")
        for n in sigs:
            if type(n) is not int or not after < n <= end:
                raise InvalidContent(f"{self.session}: checkpoint {n} outside chunk ({after}, {end}]")
        if set(map(type, txs)) != {bytes} or max(map(len, txs)) > MAX_TRANSACTION_SIZE:
            raise InvalidContent(f"{self.session}: transaction not bytes or too large")
        overlap = min(held, end) - after
        fork = None
        if overlap > 0 and self.txs[after : after + overlap] != list(txs[:overlap]):
            fork = next(i for i in range(overlap) if self.txs[after + i] != txs[i]) + after
        if fork is None:
            new = chain_extend(self.hash_at(held), txs[overlap:]) if end > held else []

            def hash_of(n: int) -> bytes:
                return self.hash_at(n) if n <= held else new[n - held - 1]
        else:
            theirs = chain_extend(self.hash_at(after), txs)

            def hash_of(n: int) -> bytes:
                return theirs[n - after - 1]

        for n, sig in sigs.items():
            if fork is None and n <= held and self.sigs.get(n) == sig:
                continue
            if not isinstance(sig, bytes) or not verify_signature(
                self.account, signed_message(self.covalue, self.session, n, hash_of(n)), sig
            ):
                raise SignatureError(self.session, n)
        if fork is not None:
            raise ForkError(self.session, fork)
        return new

    def apply_verified(self, chunk: Chunk, new_hashes: list[bytes]) -> int:
        """Append the part of a verified chunk we lacked; returns how many were added."""
        held = len(self.txs)
        if held > self.signed_count:
            raise UsageError(f"{self.session}: cannot receive into a session with pending writes")
        added = chunk.txs[held - chunk.after :] if chunk.end > held else []
        self.txs.extend(added)
        self.hashes.extend(new_hashes)
        for n, sig in chunk.sigs.items():
            self.sigs.setdefault(n, sig)
        return len(added)

    def extend_verified(self, chunk: Chunk, new_hashes: list[bytes]) -> None:
        """Append a verified chunk that starts exactly at our end, whether or not our end is a
        checkpoint (the chunk's own checkpoints sign the chain through it)."""
        if chunk.after != len(self.txs):
            raise UsageError(f"{self.session}: extend_verified needs a chunk starting at {len(self.txs)}")
        self.txs.extend(chunk.txs)
        self.hashes.extend(new_hashes)
        self.sigs.update(chunk.sigs)

    def verify_all(self) -> ChainError | SignatureError | None:
        """Re-derive the whole chain from its base and check every checkpoint.

        Returns the first failure (its ``index`` is the first broken link) or None.
        """
        fresh = chain_extend(self.base, self.txs)
        for i, (got, want) in enumerate(zip(fresh, self.hashes, strict=True)):
            if got != want:
                return ChainError(self.session, i, "stored hash does not match the transaction")
        if self.txs and self.signed_count != len(self.txs):
            return ChainError(self.session, self.signed_count, "transactions after the last checkpoint")
        for n in sorted(self.sigs):
            if not 0 < n <= len(fresh) or not verify_signature(
                self.account, signed_message(self.covalue, self.session, n, fresh[n - 1]), self.sigs[n]
            ):
                return SignatureError(self.session, n)
        return None

    @classmethod
    def from_chunk(cls, covalue: CoValueID, session: SessionID, chunk: Chunk) -> SessionLog:
        """A log holding exactly ``chunk`` (which must start at 0), verified.

        Raises like :meth:`verify_chunk`.
        """
        log = cls(covalue, session)
        log.apply_verified(chunk, log.verify_chunk(chunk))
        return log

    def rebuild_signed(self, txs: Sequence[bytes], key: AccountKey) -> None:
        """Fill an empty log with ``txs`` signed as one checkpoint by ``key`` (the owner)."""
        if self.txs:
            raise UsageError("rebuild_signed needs an empty log")
        self.txs.extend(txs)
        self.hashes.extend(chain_extend(self.base, txs))
        self.sign(key)
