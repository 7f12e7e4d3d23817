"""engine.crypto: hashing, the session chain, signatures and account key files (DESIGN §3–4)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.crypto import (
    CHAIN_DOMAIN,
    KEY_FILE_MAGIC,
    SIG_DOMAIN,
    AccountKey,
    chain_base,
    chain_extend,
    hash_bytes,
    signed_message,
    verify_signature,
)
from engine.errors import KeyFileError
from engine.ids import account_public_key
from tests.engine.factories import account, covalue_id, seed, session

ALICE, BOB = account(1), account(2)
ALICE_SEED_HEX = seed(1).hex()


def _blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run with umask 0, so a file mode comes from the code, not from the umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- hashing and the chain -------------------------------------------------------------------


def test_hash_is_blake2b_256() -> None:
    """hash_bytes is BLAKE2b with a 32-byte digest."""
    assert hash_bytes(b"kintsugi") == _blake(b"kintsugi")
    assert len(hash_bytes(b"")) == 32


def test_chain_base_formula() -> None:
    """h0 = H("kintsugi/session/v1" ‖ coValueID ‖ sessionID)."""
    cov, sid = covalue_id(), session(ALICE)
    assert CHAIN_DOMAIN == b"kintsugi/session/v1"
    assert chain_base(cov, sid) == _blake(b"kintsugi/session/v1" + cov.encode() + sid.encode())
    assert chain_base(cov, sid) != chain_base(covalue_id("other"), sid)
    assert chain_base(cov, sid) != chain_base(cov, session(ALICE, 1))


@given(st.binary(min_size=32, max_size=32), st.lists(st.binary(max_size=300), max_size=8))
def test_chain_extend_formula(head: bytes, txs: list[bytes]) -> None:
    """h(i+1) = H(h(i) ‖ u32le(len(tx_i)) ‖ tx_i), one hash per transaction."""
    expected, h = [], head
    for data in txs:
        h = _blake(h + len(data).to_bytes(4, "little") + data)
        expected.append(h)
    assert chain_extend(head, txs) == expected
    assert chain_extend(head, iter(txs)) == expected


def test_chain_extend_is_incremental() -> None:
    """Extending in two steps gives the same hashes as extending in one."""
    head, txs = bytes(32), [b"a", b"bb", b"", b"dddd"]
    whole = chain_extend(head, txs)
    first = chain_extend(head, txs[:2])
    assert first + chain_extend(first[-1], txs[2:]) == whole


def test_length_prefix_separates_transactions() -> None:
    """Moving bytes between adjacent transactions changes the chain (length is hashed)."""
    head = bytes(32)
    assert chain_extend(head, [b"ab", b"c"])[-1] != chain_extend(head, [b"a", b"bc"])[-1]


def test_signed_message_layout() -> None:
    """sig(n) covers "kintsugi/sig/v1" ‖ coValueID ‖ sessionID ‖ u64le(n) ‖ h(n)."""
    cov, sid, head = covalue_id(), session(ALICE), bytes(range(32))
    assert SIG_DOMAIN == b"kintsugi/sig/v1"
    assert signed_message(cov, sid, 258, head) == (
        b"kintsugi/sig/v1" + cov.encode() + sid.encode() + bytes([2, 1, 0, 0, 0, 0, 0, 0]) + head
    )


def test_golden_vectors() -> None:
    """Pinned account id, chain base and signature: stored chains from older versions verify."""
    assert ALICE.account_id == "acc_z49tWwA4aiJduqHSgMcCrFg5bHsh8RaPRnQfaV4yuNVXz"
    assert chain_base("co_z3vBweA65MYPPvdj2hhxkBLMAKdsT", session(ALICE)).hex() == (
        "54bf413f53558914c9e87e54c01b6c6211d599b28fcf2e431476c3450bb2a263"
    )
    assert ALICE.sign(b"kintsugi").hex() == (
        "dccdb4cc21de76cfe2a155732a1c5f65dea537c4014a9622256128a19f077d1f"
        "a7b382869e509f9bbcaa9ea97fa305fda1c8697d59b3eb30e04e11194f76eb03"
    )


# -- signatures ------------------------------------------------------------------------------


def test_sign_and_verify() -> None:
    """A signature verifies under the signer's account only, for that message only."""
    sig = ALICE.sign(b"message")
    assert len(sig) == 64
    assert verify_signature(ALICE.account_id, b"message", sig)
    assert not verify_signature(BOB.account_id, b"message", sig)
    assert not verify_signature(ALICE.account_id, b"messagE", sig)


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_signature_of_wrong_length_is_false(size: int) -> None:
    """A signature that is not 64 bytes does not verify (and does not raise)."""
    assert verify_signature(ALICE.account_id, b"m", b"\x01" * size) is False


def test_every_bit_of_a_signature_matters() -> None:
    """Flipping any single bit of a signature makes it fail."""
    sig = ALICE.sign(b"m")
    for bit in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify_signature(ALICE.account_id, b"m", bytes(flipped)), bit


def test_from_seed_is_deterministic() -> None:
    """The same seed gives the same account and the same signatures; another seed does not."""
    again = AccountKey.from_seed(seed(1))
    assert again.account_id == ALICE.account_id
    assert again.sign(b"x") == ALICE.sign(b"x")
    assert account(2).account_id != ALICE.account_id
    assert account_public_key(ALICE.account_id) == bytes(ALICE._signing.verify_key)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_seed_must_have_32_bytes(size: int) -> None:
    """from_seed refuses a seed that is not 32 bytes with KeyFileError."""
    with pytest.raises(KeyFileError) as info:
        AccountKey.from_seed(b"\x01" * size)
    assert info.value.code == "key_file"


def test_generate_makes_distinct_keys() -> None:
    """generate() makes a new account each time."""
    assert AccountKey.generate().account_id != AccountKey.generate().account_id


def test_repr_and_str_hide_the_secret() -> None:
    """repr and str show the account id, never the secret seed."""
    for text in (repr(ALICE), str(ALICE), f"{ALICE}", f"{ALICE!r}"):
        assert ALICE.account_id in text
        assert ALICE_SEED_HEX not in text.lower()
    assert not hasattr(ALICE, "__dict__")


# -- key files -------------------------------------------------------------------------------


def _assert_secret_not_in(exc: BaseException) -> None:
    """Neither the error nor anything it was raised from quotes the secret seed."""
    seen: BaseException | None = exc
    while seen is not None:
        for text in (str(seen), repr(seen), getattr(seen, "detail", "")):
            assert ALICE_SEED_HEX not in text.lower()
            assert ALICE_SEED_HEX[:16] not in text.lower()
        seen = seen.__cause__ or seen.__context__


def test_key_file_written_0600(tmp_path: Path, open_umask: None) -> None:
    """save() writes a file readable and writable only by its owner, even with umask 0."""
    path = tmp_path / "alice.key"
    ALICE.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_round_trips(tmp_path: Path) -> None:
    """load(save(k)) is the same key: same account, same signatures."""
    path = tmp_path / "alice.key"
    ALICE.save(path)
    loaded = AccountKey.load(path)
    assert loaded.account_id == ALICE.account_id
    assert loaded.sign(b"hello") == ALICE.sign(b"hello")
    assert path.read_text().splitlines()[:2] == [KEY_FILE_MAGIC, ALICE.account_id]


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    """save() refuses an existing path and leaves that file's bytes as they were."""
    path = tmp_path / "alice.key"
    ALICE.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError) as info:
        BOB.save(path)
    assert info.value.code == "key_file"
    assert path.read_bytes() == before
    assert AccountKey.load(path).account_id == ALICE.account_id

    other = tmp_path / "precious.txt"
    other.write_text("not a key, but mine")
    with pytest.raises(KeyFileError):
        ALICE.save(other)
    assert other.read_text() == "not a key, but mine"


def test_save_into_missing_directory_is_key_file_error(tmp_path: Path) -> None:
    """An unwritable target is a KeyFileError, not a bare OSError."""
    with pytest.raises(KeyFileError):
        ALICE.save(tmp_path / "missing" / "alice.key")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o602, 0o644, 0o610])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """A key file with any group or other permission bit is refused, without quoting it."""
    path = tmp_path / "alice.key"
    ALICE.save(path)
    path.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        AccountKey.load(path)
    assert info.value.code == "key_file"
    _assert_secret_not_in(info.value)


def _tampered(text: str, how: str) -> str:
    magic, acc, secret, rest = text.split("\n", 3)
    if how == "other account":
        return f"{magic}\n{BOB.account_id}\n{secret}\n{rest}"
    if how == "account typo":
        return f"{magic}\n{acc[:-1]}{'2' if acc[-1] != '2' else '3'}\n{secret}\n{rest}"
    if how == "secret not hex":
        return f"{magic}\n{acc}\n{secret[:-1]}g\n{rest}"
    if how == "secret truncated":
        return f"{magic}\n{acc}\n{secret[:-2]}\n{rest}"
    if how == "secret of another key":
        return f"{magic}\n{acc}\n{seed(2).hex()}\n{rest}"
    if how == "bad magic":
        return f"kintsugi-account-key/v2\n{acc}\n{secret}\n{rest}"
    if how == "missing lines":
        return f"{magic}\n{acc}"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "other account",
        "account typo",
        "secret not hex",
        "secret truncated",
        "secret of another key",
        "bad magic",
        "missing lines",
    ],
)
def test_tampered_key_file_is_refused(tmp_path: Path, how: str) -> None:
    """A key file whose account line, secret or magic was altered is refused, not quoted."""
    path = tmp_path / "alice.key"
    ALICE.save(path)
    path.write_text(_tampered(path.read_text(), how))
    with pytest.raises(KeyFileError) as info:
        AccountKey.load(path)
    assert info.value.code == "key_file"
    _assert_secret_not_in(info.value)


def test_non_utf8_key_file_is_refused(tmp_path: Path) -> None:
    """Binary garbage in a key file is a KeyFileError."""
    path = tmp_path / "garbage.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"\xff\xfe" + seed(1))
    with pytest.raises(KeyFileError):
        AccountKey.load(path)


def test_missing_key_file_is_key_file_error(tmp_path: Path) -> None:
    """Loading a path that does not exist is a KeyFileError."""
    with pytest.raises(KeyFileError):
        AccountKey.load(tmp_path / "nope.key")
