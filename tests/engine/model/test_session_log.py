"""engine.model.session_log: hash chain, signed checkpoints, chunk verification (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.crypto import chain_base, chain_extend, signed_message, verify_signature
from engine.errors import (
    ChainError,
    ForkError,
    IntegrityError,
    InvalidContent,
    MissingPrefix,
    SignatureError,
    UsageError,
)
from engine.ids import conflict_session_id
from engine.model import session_log
from engine.model.session_log import Chunk, SessionLog, sigs_between
from engine.model.transaction import MAX_TRANSACTION_SIZE
from tests.engine.factories import T0, account, covalue_id, session, signed_log, tx

ALICE, BOB = account(1), account(2)
COV = covalue_id("doc")
SID = session(ALICE)


def make_txs(count: int, *, start: int = 0, tag: str = "k") -> list[bytes]:
    """``count`` distinct transactions, the ``i``-th made at T0 + i."""
    return [tx(T0 + i, ["set", f"{tag}{i}", i]) for i in range(start, start + count)]


def source(count: int, checkpoints: Sequence[int], *, tag: str = "k") -> SessionLog:
    """ALICE's session SID in COV with ``count`` transactions signed at ``checkpoints``."""
    return signed_log(COV, ALICE, make_txs(count, tag=tag), checkpoints, sid=SID)


def receive(log: SessionLog, chunk: Chunk) -> int:
    return log.apply_verified(chunk, log.verify_chunk(chunk))


def state(log: SessionLog) -> tuple[list[bytes], list[bytes], dict[int, bytes]]:
    return list(log.txs), list(log.hashes), dict(log.sigs)


def flipped(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.fixture
def sig_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counting spy on the signature check session_log uses; it calls the real function."""
    calls: list[bytes] = []
    real: Callable[..., bool] = session_log.verify_signature

    def spy(account: str, message: bytes, signature: bytes) -> bool:
        calls.append(message)
        return real(account, message, signature)

    monkeypatch.setattr(session_log, "verify_signature", spy)
    return calls


# -- writing ---------------------------------------------------------------------------------


def test_hashes_follow_the_chain_formula() -> None:
    """hashes[i] is h(i+1) from the chain base of (CoValue, session); h(0) is the base."""
    log = source(5, [2])
    assert log.hash_at(0) == log.base == chain_base(COV, SID)
    assert log.hashes == chain_extend(chain_base(COV, SID), log.txs)
    assert [log.hash_at(n) for n in range(1, 6)] == log.hashes


def test_checkpoints_sign_count_and_head() -> None:
    """sig(n) is the owner's signature of ("kintsugi/sig/v1" ‖ id ‖ sid ‖ u64le(n) ‖ h(n))."""
    log = source(5, [2])
    assert log.checkpoints() == [2, 5]
    for n, sig in log.sigs.items():
        assert verify_signature(ALICE.account_id, signed_message(COV, SID, n, log.hash_at(n)), sig)


def test_pending_and_sign() -> None:
    """Appended transactions stay pending until sign(); head() is the last checkpoint."""
    log = SessionLog(COV, SID)
    assert log.head() == (0, log.base)
    assert log.sign(ALICE) is None
    for data in make_txs(3):
        log.append_pending(data)
    assert (log.count, log.signed_count, log.pending) == (3, 0, 3)
    assert log.head() == (0, log.base)
    assert log.sign(ALICE) == 3
    assert log.head() == (3, log.hashes[2])
    assert log.pending == 0
    assert log.sign(ALICE) is None


def test_only_the_owner_signs() -> None:
    """Signing a session with another account's key is a UsageError and signs nothing."""
    log = SessionLog(COV, SID)
    log.append_pending(make_txs(1)[0])
    with pytest.raises(UsageError):
        log.sign(BOB)
    assert log.sigs == {}


def test_drop_pending() -> None:
    """drop_pending forgets exactly the unsigned tail."""
    log = source(4, [])
    for data in make_txs(2, start=4):
        log.append_pending(data)
    assert log.drop_pending() == 2
    assert state(log) == state(source(4, []))


def test_oversized_local_transaction_refused() -> None:
    """append_pending refuses a transaction over MAX_TRANSACTION_SIZE."""
    log = SessionLog(COV, SID)
    with pytest.raises(UsageError):
        log.append_pending(b"\x00" * (MAX_TRANSACTION_SIZE + 1))
    assert log.count == 0


def test_chunk_ends_at_a_checkpoint() -> None:
    """chunk() defaults to the last checkpoint and refuses an end that is not one."""
    log = source(6, [2, 4])
    for data in make_txs(1, start=6):
        log.append_pending(data)
    assert log.chunk().end == 6
    assert log.chunk(1, 4) == Chunk(1, log.txs[1:4], {2: log.sigs[2], 4: log.sigs[4]})
    with pytest.raises(UsageError):
        log.chunk(0, 3)
    with pytest.raises(UsageError):
        log.chunk(0, 7)


def test_rebuild_signed() -> None:
    """rebuild_signed fills an empty log and signs it as one checkpoint; refuses a full one."""
    txs = make_txs(3)
    log = SessionLog(COV, SID)
    log.rebuild_signed(txs, ALICE)
    assert state(log) == state(signed_log(COV, ALICE, txs, [], sid=SID))
    with pytest.raises(UsageError):
        log.rebuild_signed(txs, ALICE)


# -- receiving: delivery in any chunks -------------------------------------------------------


def test_receive_whole_session() -> None:
    """from_chunk of a full chunk reproduces the sender's log exactly."""
    src = source(7, [3, 5])
    copy = SessionLog.from_chunk(COV, SID, src.chunk())
    assert state(copy) == state(src)
    assert copy.verify_all() is None


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[int], list[tuple[int, int]]]:
    """A session length, its checkpoints and chunk ranges covering it, in any order.

    Every chunk ends at a checkpoint and starts anywhere at or before its end; a covering
    chain guarantees every checkpoint is delivered, and extra chunks add overlaps and
    exact duplicates.
    """
    count = draw(st.integers(1, 24))
    checkpoints = sorted(set(draw(st.lists(st.integers(1, count), max_size=8))) | {count})
    chunks, previous = [], 0
    for end in checkpoints:
        chunks.append((draw(st.integers(0, previous)), end))
        previous = end
    for end, start in draw(st.lists(st.tuples(st.sampled_from(checkpoints), st.integers(0, count)), max_size=6)):
        chunks.append((min(start, end), end))
    chunks += draw(st.lists(st.sampled_from(chunks), max_size=3))
    return count, checkpoints, draw(st.permutations(chunks))


@given(deliveries())
def test_any_chunking_and_order_converges(plan: tuple[int, list[int], list[tuple[int, int]]]) -> None:
    """Chunks with any split points, overlaps, duplicates and order give the sender's log.

    A chunk that starts past the receiver's end raises MissingPrefix and is retried later,
    as a sync layer would.
    """
    count, checkpoints, chunks = plan
    src = source(count, checkpoints)
    dst = SessionLog(COV, SID)
    waiting = list(chunks)
    while waiting:
        still = []
        for after, end in waiting:
            try:
                receive(dst, src.chunk(after, end))
            except MissingPrefix as exc:
                assert exc.after == after > dst.count == exc.have
                still.append((after, end))
        assert len(still) < len(waiting), "no chunk could be applied"
        waiting = still
    assert state(dst) == state(src)
    assert dst.head() == src.head()
    assert dst.verify_all() is None


def test_duplicate_chunk_adds_nothing(sig_checks: list[bytes]) -> None:
    """Receiving what we already hold verifies nothing, adds nothing and changes nothing."""
    src = source(6, [3])
    dst = SessionLog.from_chunk(COV, SID, src.chunk())
    before = state(dst)
    sig_checks.clear()
    assert dst.verify_chunk(src.chunk()) == []
    assert receive(dst, src.chunk(2, 6)) == 0
    assert state(dst) == before
    assert sig_checks == []


def test_receiving_into_pending_writes_is_refused() -> None:
    """apply_verified refuses a log that has local unsigned transactions."""
    src = source(4, [2])
    dst = SessionLog.from_chunk(COV, SID, src.chunk(0, 2))
    dst.append_pending(src.txs[2])
    chunk = src.chunk(2, 4)
    with pytest.raises(UsageError):
        dst.apply_verified(chunk, dst.verify_chunk(chunk))


# -- cost: one signature check per checkpoint ------------------------------------------------


@pytest.mark.parametrize(("count", "batch"), [(1, 1), (100, 1), (100, 10), (1000, 1000), (1000, 250), (999, 100)])
def test_one_signature_check_per_checkpoint(sig_checks: list[bytes], count: int, batch: int) -> None:
    """Verifying a session costs exactly one signature check per checkpoint, not per tx."""
    src = source(count, range(batch, count + 1, batch))
    sig_checks.clear()
    SessionLog.from_chunk(COV, SID, src.chunk())
    assert len(sig_checks) == len(src.sigs) == -(-count // batch)


def test_extension_checks_only_new_checkpoints(sig_checks: list[bytes]) -> None:
    """An overlapping chunk re-checks none of the checkpoints already held."""
    src = source(40, range(5, 41, 5))  # checkpoints 5, 10, …, 40
    dst = SessionLog.from_chunk(COV, SID, src.chunk(0, 15))
    sig_checks.clear()
    receive(dst, src.chunk(7, 40))  # carries checkpoints 10 and 15 again, then 20 … 40
    assert len(sig_checks) == 5
    assert state(dst) == state(src)


# -- integrity: any single bit flip is detected ----------------------------------------------


def test_every_bit_flip_in_a_received_chunk_is_detected() -> None:
    """Flipping any one bit of any transaction or signature of a chunk makes it fail.

    The receiver already holds [0, 4); the chunk [1, 6) overlaps it (old transactions and a
    held checkpoint) and extends it, so both the fork path and the extension path are hit.
    """
    src = source(6, [2, 4])
    dst = SessionLog.from_chunk(COV, SID, src.chunk(0, 4))
    before = state(dst)
    good = src.chunk(1, 6)
    assert sorted(good.sigs) == [2, 4, 6]
    checked = 0
    for i, data in enumerate(good.txs):
        for bit in range(len(data) * 8):
            txs = list(good.txs)
            txs[i] = flipped(data, bit)
            with pytest.raises((ChainError, SignatureError, ForkError)):
                dst.verify_chunk(Chunk(good.after, txs, good.sigs))
            checked += 1
    for n, sig in good.sigs.items():
        for bit in range(len(sig) * 8):
            with pytest.raises(SignatureError):
                dst.verify_chunk(Chunk(good.after, good.txs, {**good.sigs, n: flipped(sig, bit)}))
            checked += 1
    assert state(dst) == before
    assert checked == sum(len(t) for t in good.txs) * 8 + 3 * 512
    assert receive(dst, good) == 2  # the untouched chunk still applies


@st.composite
def flip_cases(draw: st.DrawFn) -> tuple[int, list[int], int, int, int, str, int, int]:
    count = draw(st.integers(1, 12))
    checkpoints = sorted(set(draw(st.lists(st.integers(1, count), max_size=4))) | {count})
    held = draw(st.sampled_from([0, *checkpoints]))
    end = draw(st.sampled_from([c for c in checkpoints if c > held] or [count]))
    after = draw(st.integers(0, min(held, end - 1)))
    what = draw(st.sampled_from(["tx", "sig"]))
    index = draw(st.integers(0, 10**6))
    bit = draw(st.integers(0, 10**6))
    return count, checkpoints, held, after, end, what, index, bit


@given(flip_cases())
def test_random_bit_flip_in_any_layout_is_detected(case: tuple[int, list[int], int, int, int, str, int, int]) -> None:
    """For any log layout, receiver state and chunk, one flipped bit is never accepted."""
    count, checkpoints, held, after, end, what, index, bit = case
    src = source(count, checkpoints)
    dst = SessionLog.from_chunk(COV, SID, src.chunk(0, held)) if held else SessionLog(COV, SID)
    before = state(dst)
    good = src.chunk(after, end)
    txs, sigs = list(good.txs), dict(good.sigs)
    if what == "tx":
        i = index % len(txs)
        txs[i] = flipped(txs[i], bit % (len(txs[i]) * 8))
    else:
        n = sorted(sigs)[index % len(sigs)]
        sigs[n] = flipped(sigs[n], bit % 512)
    with pytest.raises((ChainError, SignatureError, ForkError)):
        dst.verify_chunk(Chunk(after, txs, sigs))
    assert state(dst) == before


def test_every_bit_flip_in_stored_state_is_found_by_verify_all() -> None:
    """verify_all finds any flipped bit in stored txs, hashes or sigs, at the right index."""
    src = source(4, [2])
    assert src.verify_all() is None
    for i in range(src.count):
        for field in ("txs", "hashes"):
            original = getattr(src, field)[i]
            for bit in range(len(original) * 8):
                getattr(src, field)[i] = flipped(original, bit)
                found = src.verify_all()
                assert isinstance(found, ChainError), (field, i, bit)
                assert found.index == i
                getattr(src, field)[i] = original
    for n, sig in list(src.sigs.items()):
        for bit in range(512):
            src.sigs[n] = flipped(sig, bit)
            found = src.verify_all()
            assert isinstance(found, SignatureError)
            assert found.index == n
        src.sigs[n] = sig
    assert src.verify_all() is None


def test_verify_all_reports_unsigned_tail() -> None:
    """Stored transactions after the last checkpoint are a ChainError at that checkpoint."""
    src = source(4, [2])
    src.append_pending(make_txs(1, start=4)[0])
    found = src.verify_all()
    assert isinstance(found, ChainError)
    assert found.index == 4


# -- integrity: replayed signatures ----------------------------------------------------------


def test_signature_replayed_into_another_covalue() -> None:
    """The same transactions and signatures do not verify under another CoValueID."""
    src = source(3, [])
    with pytest.raises(SignatureError) as info:
        SessionLog(covalue_id("another"), SID).verify_chunk(src.chunk())
    assert info.value.code == "bad_signature"


@pytest.mark.parametrize(
    "target",
    [session(ALICE, 1), conflict_session_id(SID, 1), conflict_session_id(SID, 2)],
    ids=["other active", "conflict !", "conflict !2"],
)
def test_signature_replayed_into_another_session(target: str) -> None:
    """A chunk signed for one session does not verify as another session of the same account."""
    src = source(3, [])
    with pytest.raises(SignatureError):
        SessionLog(COV, target).verify_chunk(src.chunk())  # type: ignore[arg-type]


def test_signature_replayed_at_another_index() -> None:
    """A valid checkpoint signature moved to another count does not verify."""
    src = source(4, [2])
    dst = SessionLog(COV, SID)
    with pytest.raises(SignatureError) as info:
        dst.verify_chunk(Chunk(0, src.txs[:4], {4: src.sigs[2]}))
    assert info.value.index == 4
    with pytest.raises(SignatureError):
        dst.verify_chunk(Chunk(0, src.txs[:2], {2: src.sigs[4]}))


def test_signature_by_another_account() -> None:
    """A chunk for ALICE's session signed with BOB's key is a SignatureError."""
    txs = make_txs(2)
    head = chain_extend(chain_base(COV, SID), txs)[-1]
    forged = BOB.sign(signed_message(COV, SID, 2, head))
    with pytest.raises(SignatureError):
        SessionLog(COV, SID).verify_chunk(Chunk(0, txs, {2: forged}))


# -- ill-formed chunks -----------------------------------------------------------------------


def test_chunk_past_our_end_is_missing_prefix() -> None:
    """A chunk that starts after the transactions we hold raises MissingPrefix(have, after)."""
    src = source(6, [2, 4])
    dst = SessionLog.from_chunk(COV, SID, src.chunk(0, 2))
    with pytest.raises(MissingPrefix) as info:
        dst.verify_chunk(src.chunk(3, 6))
    assert (info.value.have, info.value.after, info.value.code) == (2, 3, "missing_prefix")
    assert info.value.session == SID


def test_chunk_not_ending_at_a_checkpoint() -> None:
    """A chunk whose last transaction is not signed is InvalidContent (not MissingPrefix)."""
    src = source(4, [2])
    chunk = Chunk(0, src.txs[:3], {2: src.sigs[2]})
    with pytest.raises(InvalidContent) as info:
        SessionLog(COV, SID).verify_chunk(chunk)
    assert type(info.value) is InvalidContent
    assert info.value.code == "invalid_content"


@pytest.mark.parametrize(
    "make",
    [
        lambda s: Chunk(-1, s.txs[:2], {1: s.sigs[2]}),
        lambda s: Chunk(0, [], {2: s.sigs[2]}),
        lambda s: Chunk(0, s.txs[:2], {2: s.sigs[2], 3: s.sigs[4]}),
        lambda s: Chunk(0, s.txs[:2], {2: s.sigs[2], 0: s.sigs[4]}),
        lambda s: Chunk(0, [s.txs[0], "text"], {2: s.sigs[2]}),
        lambda s: Chunk(0, [s.txs[0], b"\x00" * (MAX_TRANSACTION_SIZE + 1)], {2: s.sigs[2]}),
        lambda s: Chunk(0, s.txs[:2], {2: s.sigs[2], "4": s.sigs[4]}),
        lambda s: Chunk(0, s.txs[:2], {2: s.sigs[2], None: s.sigs[4]}),
    ],
    ids=[
        "negative start",
        "signatures without transactions",
        "checkpoint past end",
        "checkpoint at start",
        "transaction not bytes",
        "transaction too large",
        "checkpoint key is text",
        "checkpoint key is None",
    ],
)
def test_ill_formed_chunk_is_invalid_content(make: Callable[[SessionLog], Chunk]) -> None:
    """Ill-formed chunks raise InvalidContent (as documented), never TypeError, and change nothing."""
    src = source(4, [2])
    dst = SessionLog(COV, SID)
    with pytest.raises(InvalidContent):
        dst.verify_chunk(make(src))
    assert state(dst) == ([], [], {})


def test_non_bytes_signature_is_a_signature_error() -> None:
    """A signature that is not bytes fails verification as a SignatureError."""
    src = source(2, [])
    with pytest.raises(SignatureError):
        SessionLog(COV, SID).verify_chunk(Chunk(0, src.txs, {2: src.sigs[2].hex()}))  # type: ignore[dict-item]


def test_empty_chunk_is_accepted_as_nothing() -> None:
    """A chunk without transactions or signatures verifies to nothing new."""
    src = source(2, [])
    dst = SessionLog.from_chunk(COV, SID, src.chunk())
    assert dst.verify_chunk(Chunk(2, [], {})) == []
    assert dst.verify_chunk(Chunk(1, [], {})) == []


# -- forks -----------------------------------------------------------------------------------


def _alternative(count: int, diverge: int, checkpoints: Sequence[int]) -> SessionLog:
    """ALICE's SID, same as source() up to ``diverge``, different from there on, validly signed."""
    txs = make_txs(count)
    txs[diverge:] = make_txs(count - diverge, start=diverge, tag="other")
    return signed_log(COV, ALICE, txs, checkpoints, sid=SID)


@pytest.mark.parametrize(
    ("alt_count", "alt_checkpoints", "after", "end"),
    [
        (6, [3], 0, 6),  # whole divergent copy
        (6, [3], 2, 6),  # starts inside the common prefix
        (6, [3], 4, 6),  # starts exactly at the divergence
        (5, [3], 0, 5),  # shorter than ours: ends inside our log
        (9, [3, 7], 3, 9),  # longer than ours
    ],
)
def test_correctly_signed_divergent_chunk_is_a_fork(
    alt_count: int, alt_checkpoints: list[int], after: int, end: int
) -> None:
    """A validly signed chunk that disagrees with held transactions raises ForkError(first diff)."""
    ours = source(6, [3])
    dst = SessionLog.from_chunk(COV, SID, ours.chunk())
    before = state(dst)
    alt = _alternative(alt_count, 4, alt_checkpoints)
    with pytest.raises(ForkError) as info:
        dst.verify_chunk(alt.chunk(after, end))
    assert info.value.index == 4
    assert info.value.session == SID
    assert info.value.code == "fork"
    assert state(dst) == before


def test_forged_divergent_chunk_is_a_signature_error() -> None:
    """A divergent chunk whose signature does not verify is a SignatureError, not a fork."""
    ours = source(6, [3])
    dst = SessionLog.from_chunk(COV, SID, ours.chunk())
    alt = _alternative(6, 4, [3])
    good = alt.chunk()
    with pytest.raises(SignatureError):
        dst.verify_chunk(Chunk(0, good.txs, {**good.sigs, 6: flipped(good.sigs[6], 0)}))


def test_integrity_errors_share_a_base() -> None:
    """Chain, signature and fork failures are IntegrityErrors (logged as security events)."""
    for cls in (ChainError, SignatureError, ForkError):
        assert issubclass(cls, IntegrityError)


@given(st.lists(st.lists(st.integers(min_value=1, max_value=10_000), max_size=8), max_size=12), st.booleans())
def test_the_signed_count_follows_every_checkpoint_added_in_any_order(batches: list[list[int]], ask: bool) -> None:
    """``signed_count`` is kept from the checkpoints added since it was last asked (stores
    add them in row order, not count order): it is always the largest."""
    log = SessionLog(COV, SID)
    for batch in batches:
        log.sigs.update(dict.fromkeys(batch, b"s"))
        if ask:
            assert log.signed_count == max(log.sigs, default=0)
    assert log.signed_count == max(log.sigs, default=0)
    log.sigs.clear()  # never done by the engine; counted afresh all the same
    assert log.signed_count == 0


@given(
    st.dictionaries(st.integers(1, 60), st.binary(min_size=1, max_size=4), max_size=40),
    st.integers(0, 70),
    st.integers(0, 70),
)
def test_sigs_between_is_the_checkpoints_in_range_ascending(sigs: dict[int, bytes], after: int, stop: int) -> None:
    """Whichever way it looks them up (by count when the range is short, else over the map)."""
    expected = [(n, sigs[n]) for n in sorted(sigs) if after < n <= stop]
    assert list(sigs_between(sigs, after, stop).items()) == expected
