"""engine.ids: text forms of AccountID, SessionID and CoValueID (DESIGN §3, normative)."""

from __future__ import annotations

from collections.abc import Callable

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InvalidId
from engine.ids import (
    MAX_ID_LENGTH,
    SessionKind,
    account_id_from_public_key,
    account_public_key,
    conflict_session_id,
    covalue_id_from_digest,
    new_delete_session_id,
    new_session_id,
    parse_account_id,
    parse_covalue_id,
    parse_session_id,
    session_account,
)
from tests.engine.factories import account, delete_session, session

ALICE = account(1)
ACC = ALICE.account_id
SID = session(ALICE)
DEL = delete_session(ALICE)
CO = covalue_id_from_digest(bytes(range(32)))


def b58(data: bytes) -> str:
    return base58.b58encode(data).decode("ascii")


# -- well-formed ids -------------------------------------------------------------------------


def test_account_id_round_trips_public_key() -> None:
    """An AccountID is acc_z + base58(key) and gives back exactly that 32-byte key."""
    key = bytes(range(1, 33))
    acc = account_id_from_public_key(key)
    assert acc == "acc_z" + b58(key)
    assert parse_account_id(acc) == acc
    assert account_public_key(acc) == key


@given(st.binary(min_size=32, max_size=32))
def test_account_id_round_trip_any_key(key: bytes) -> None:
    """Every 32-byte public key survives key -> AccountID -> key, and the id parses."""
    acc = account_id_from_public_key(key)
    assert parse_account_id(acc) == acc
    assert account_public_key(acc) == key


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_account_id_needs_a_32_byte_key(size: int) -> None:
    """A public key of the wrong length has no AccountID."""
    with pytest.raises(InvalidId) as info:
        account_id_from_public_key(b"\x07" * size)
    assert info.value.code == "invalid_id"


def test_account_key_matches_its_id() -> None:
    """An AccountKey's id certifies its own verify key."""
    assert account_public_key(ALICE.account_id) == bytes(ALICE._signing.verify_key)


def test_active_session_parses() -> None:
    """An active session names its account, kind active, itself as base, no counter."""
    parsed = parse_session_id(SID)
    assert parsed.account == ACC
    assert parsed.kind is SessionKind.ACTIVE
    assert parsed.base == SID
    assert parsed.conflict_n == 0
    assert session_account(SID) == ACC


def test_delete_session_parses() -> None:
    """A delete session (`_session_d…$`) parses as kind delete of its account."""
    parsed = parse_session_id(DEL)
    assert DEL.endswith("$")
    assert parsed.kind is SessionKind.DELETE
    assert parsed.account == ACC
    assert parsed.conflict_n == 0


@pytest.mark.parametrize(("suffix", "n"), [("!", 1), ("!2", 2), ("!3", 3), ("!10", 10), ("!999999999", 999_999_999)])
def test_conflict_session_parses(suffix: str, n: int) -> None:
    """`sid!`, `sid!2`, `sid!3`, … parse as conflicts of `sid` numbered 1, 2, 3, …."""
    parsed = parse_session_id(SID + suffix)
    assert parsed.kind is SessionKind.CONFLICT
    assert parsed.base == SID
    assert parsed.conflict_n == n
    assert parsed.account == ACC


def test_conflict_session_id_numbering() -> None:
    """conflict_session_id gives `!` for the first, then `!2`, `!3`, and each parses back."""
    assert conflict_session_id(SID, 1) == SID + "!"
    assert conflict_session_id(SID, 2) == SID + "!2"
    assert conflict_session_id(SID, 3) == SID + "!3"
    for n in range(1, 25):
        parsed = parse_session_id(conflict_session_id(SID, n))
        assert (parsed.kind, parsed.base, parsed.conflict_n) == (SessionKind.CONFLICT, SID, n)


@pytest.mark.parametrize("bad", [0, -1])
def test_conflict_session_counts_from_one(bad: int) -> None:
    """There is no conflict session number 0 or below."""
    with pytest.raises(InvalidId):
        conflict_session_id(SID, bad)


@pytest.mark.parametrize("base", [DEL, SID + "!", SID + "!2"])
def test_only_active_sessions_have_conflicts(base: str) -> None:
    """Delete and conflict sessions have no conflict sessions of their own."""
    with pytest.raises(InvalidId):
        conflict_session_id(base, 1)  # type: ignore[arg-type]


def test_new_session_ids_are_fresh_and_valid() -> None:
    """new_session_id / new_delete_session_id make parseable ids that differ each time."""
    a, b = new_session_id(ACC), new_session_id(ACC)
    assert a != b
    assert parse_session_id(a).kind is SessionKind.ACTIVE
    d1, d2 = new_delete_session_id(ACC), new_delete_session_id(ACC)
    assert d1 != d2
    assert parse_session_id(d1).kind is SessionKind.DELETE


def test_covalue_id_is_first_20_digest_bytes() -> None:
    """A CoValueID is co_z + base58 of the digest's first 20 bytes, and parses."""
    digest = bytes(range(32))
    assert "co_z" + b58(digest[:20]) == CO
    assert parse_covalue_id(CO) == CO


# -- malformed ids ---------------------------------------------------------------------------

KEY_B58 = ACC[len("acc_z"):]
ACTIVE_B58 = SID.rsplit("_session_z", 1)[1]
DEL_B58 = DEL.rsplit("_session_d", 1)[1][:-1]
CO_B58 = CO[len("co_z"):]

BAD_ACCOUNTS = {
    "empty": "",
    "no prefix": KEY_B58,
    "wrong prefix": "acc_y" + KEY_B58,
    "upper prefix": "ACC_z" + KEY_B58,
    "co prefix": "co_z" + KEY_B58,
    "zero char": "acc_z0" + KEY_B58[1:],
    "O char": "acc_zO" + KEY_B58[1:],
    "I char": "acc_zI" + KEY_B58[1:],
    "l char": "acc_zl" + KEY_B58[1:],
    "31 bytes": "acc_z" + b58(b"\x09" * 31),
    "33 bytes": "acc_z" + b58(b"\x09" * 33),
    "33 zero bytes": "acc_z" + "1" * 33,
    "empty key": "acc_z",
    "space": "acc_z" + KEY_B58 + " ",
    "newline": "acc_z" + KEY_B58 + "\n",
    "session id": SID,
    "over-long": "acc_z" + "2" * (MAX_ID_LENGTH + 1),
}

BAD_SESSIONS = {
    "empty": "",
    "account only": ACC,
    "bad account": "acc_z" + b58(b"\x09" * 31) + "_session_z" + ACTIVE_B58,
    "wrong marker": ACC + "_sessions_z" + ACTIVE_B58,
    "missing z": ACC + "_session_" + ACTIVE_B58,
    "zero char": ACC + "_session_z0" + ACTIVE_B58[1:],
    "O char": ACC + "_session_zO" + ACTIVE_B58[1:],
    "I char": ACC + "_session_zI" + ACTIVE_B58[1:],
    "l char": ACC + "_session_zl" + ACTIVE_B58[1:],
    "7-byte active": ACC + "_session_z" + b58(b"\x05" * 7),
    "9-byte active": ACC + "_session_z" + b58(b"\x05" * 9),
    "8-byte delete": ACC + "_session_d" + b58(b"\x05" * 8) + "$",
    "6-byte delete": ACC + "_session_d" + b58(b"\x05" * 6) + "$",
    "delete without $": ACC + "_session_d" + DEL_B58,
    "trailing $ on active": SID + "$",
    "$$": DEL + "$",
    "!1": SID + "!1",
    "!0": SID + "!0",
    "!02": SID + "!02",
    "!!": SID + "!!",
    "!-2": SID + "!-2",
    "!x": SID + "!x",
    "! then $": SID + "!$",
    "conflict of delete": DEL + "!",
    "delete marker after !": SID + "!2$",
    "10-digit counter": SID + "!1000000000",
    "fullwidth digit": SID + "!\uff12",
    "over-long": SID + "!" + "9" * (MAX_ID_LENGTH - len(SID)),
    "trailing newline": SID + "\n",
}

BAD_COVALUES = {
    "empty": "",
    "no prefix": CO_B58,
    "wrong prefix": "co_y" + CO_B58,
    "acc prefix": "acc_z" + CO_B58,
    "zero char": "co_z0" + CO_B58[1:],
    "O char": "co_zO" + CO_B58[1:],
    "I char": "co_zI" + CO_B58[1:],
    "l char": "co_zl" + CO_B58[1:],
    "19 bytes": "co_z" + b58(b"\x03" * 19),
    "21 bytes": "co_z" + b58(b"\x03" * 21),
    "32 bytes": "co_z" + b58(b"\x03" * 32),
    "trailing $": CO + "$",
    "over-long": "co_z" + "2" * (MAX_ID_LENGTH + 1),
}

NON_STRINGS = [None, 0, 1.5, b"acc_z", ACC.encode(), ["acc_z"], {"id": CO}, object()]


@pytest.mark.parametrize("text", list(BAD_ACCOUNTS.values()), ids=list(BAD_ACCOUNTS))
def test_malformed_account_ids(text: str) -> None:
    """Each malformed AccountID raises InvalidId with code invalid_id."""
    with pytest.raises(InvalidId) as info:
        parse_account_id(text)
    assert info.value.code == "invalid_id"


@pytest.mark.parametrize("text", list(BAD_SESSIONS.values()), ids=list(BAD_SESSIONS))
def test_malformed_session_ids(text: str) -> None:
    """Each malformed SessionID raises InvalidId with code invalid_id."""
    with pytest.raises(InvalidId) as info:
        parse_session_id(text)
    assert info.value.code == "invalid_id"


@pytest.mark.parametrize("text", list(BAD_COVALUES.values()), ids=list(BAD_COVALUES))
def test_malformed_covalue_ids(text: str) -> None:
    """Each malformed CoValueID raises InvalidId with code invalid_id."""
    with pytest.raises(InvalidId) as info:
        parse_covalue_id(text)
    assert info.value.code == "invalid_id"


@pytest.mark.parametrize("parse", [parse_account_id, parse_session_id, parse_covalue_id])
@pytest.mark.parametrize("value", NON_STRINGS, ids=lambda v: type(v).__name__)
def test_non_strings_are_invalid_ids(parse: Callable[[object], object], value: object) -> None:
    """A value that is not a str is an InvalidId, not a TypeError."""
    with pytest.raises(InvalidId) as info:
        parse(value)
    assert info.value.code == "invalid_id"


def test_malformed_corpus_is_really_malformed_only_by_its_flaw() -> None:
    """The corpus' building blocks are themselves valid (so each bad id fails for its flaw)."""
    assert parse_account_id("acc_z" + KEY_B58) == ACC
    assert parse_session_id(ACC + "_session_z" + ACTIVE_B58).base == SID
    assert parse_session_id(ACC + "_session_d" + DEL_B58 + "$").kind is SessionKind.DELETE
    assert parse_covalue_id("co_z" + CO_B58) == CO


def test_invalid_id_is_not_cached_as_valid() -> None:
    """Parsing is cached, but a rejected id stays rejected on every call."""
    for _ in range(3):
        with pytest.raises(InvalidId):
            parse_session_id(SID + "!1")
    assert parse_session_id(SID + "!").conflict_n == 1


# -- fuzzing ---------------------------------------------------------------------------------

ID_ALPHABET = "acosez_!$0123456789" + "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz" + "0OIl"


def _mutations() -> st.SearchStrategy[str]:
    """Valid ids with one character replaced, inserted or deleted, or two ids glued."""
    valid = st.sampled_from([ACC, SID, DEL, SID + "!", SID + "!2", CO])

    def mutate(args: tuple[str, int, str, int]) -> str:
        text, pos, char, how = args
        pos %= len(text) + 1
        if how == 0:
            return text[:pos] + char + text[pos + 1:]
        if how == 1:
            return text[:pos] + char + text[pos:]
        if how == 2:
            return text[:pos] + text[pos + 1:]
        return text + text[pos:]

    return st.tuples(valid, st.integers(0, 200), st.sampled_from(ID_ALPHABET), st.integers(0, 3)).map(mutate)


ANY_TEXT = st.one_of(st.text(), st.text(alphabet=ID_ALPHABET, max_size=120), _mutations())


@given(ANY_TEXT)
def test_parsers_raise_only_invalid_id(text: str) -> None:
    """Arbitrary text is either a valid id of the kind asked for or an InvalidId."""
    for parse in (parse_account_id, parse_session_id, parse_covalue_id):
        try:
            result = parse(text)
        except InvalidId as exc:
            assert exc.code == "invalid_id"
        else:
            assert result is not None


@given(_mutations())
def test_parsed_sessions_are_consistent(text: str) -> None:
    """Whatever parses as a session has a valid account and an active base of that account."""
    try:
        parsed = parse_session_id(text)
    except InvalidId:
        return
    assert parse_account_id(parsed.account) == parsed.account
    assert text.startswith(parsed.account + "_session_")
    if parsed.kind is not SessionKind.DELETE:
        assert parse_session_id(parsed.base).kind is SessionKind.ACTIVE
        assert text.startswith(parsed.base)
