"""Identifiers (DESIGN §3, normative): text forms, parsing and typed errors.

All ids are plain ``str`` at run time (cheap to hash, compare and put in CBOR); the
``NewType``s below document which kind a value must be. Parsing functions validate a string
and raise :class:`engine.errors.InvalidId` with a reason when it is not of that kind.

Forms (``b58`` = base58btc, Bitcoin alphabet)::

    AccountID   acc_z<b58(ed25519 public key, 32 bytes)>
    SessionID   <AccountID>_session_z<b58(8 random bytes)>          active
                <AccountID>_session_d<b58(7 random bytes)>$         delete
                <active SessionID>!  <active SessionID>!2  ...      conflict (n >= 2 after "!")
    CoValueID   co_z<b58(first 20 bytes of BLAKE2b-256(canonical CBOR(header)))>
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import NewType

import base58

from engine.errors import InvalidId

AccountID = NewType("AccountID", str)
SessionID = NewType("SessionID", str)
CoValueID = NewType("CoValueID", str)

#: Longest id text accepted before parsing (a SessionID with a large conflict counter).
MAX_ID_LENGTH = 200
#: Conflict counters have at most 9 digits.
MAX_CONFLICT_NUMBER = 10**9
#: Parsed ids remembered (ids are immutable text; parsing base58 is the cost saved).
ID_CACHE_SIZE = 65_536

_B58 = "[1-9A-HJ-NP-Za-km-z]"
_ACCOUNT_RE = re.compile(rf"acc_z({_B58}+)")
_SESSION_RE = re.compile(rf"(acc_z{_B58}+)_session_(?:z({_B58}+)(!([0-9]{{1,9}})?)?|d({_B58}+)\$)")
_COVALUE_RE = re.compile(rf"co_z({_B58}+)")


class SessionKind(StrEnum):
    ACTIVE = "active"
    DELETE = "delete"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class ParsedSession:
    """A SessionID taken apart. ``conflict_n`` is 0 for non-conflict sessions, 1 for ``!``."""

    account: AccountID
    kind: SessionKind
    base: SessionID
    conflict_n: int


def _b58decode(text: str, what: str, value: str) -> bytes:
    try:
        return bytes(base58.b58decode(text))
    except ValueError as exc:  # pragma: no cover - the regex admits only the alphabet
        raise InvalidId(f"{what} {value!r}: bad base58") from exc


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidId(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidId(f"{what} longer than {MAX_ID_LENGTH} characters")
    return value


def account_id_from_public_key(public_key: bytes) -> AccountID:
    if len(public_key) != 32:
        raise InvalidId("an Ed25519 public key has 32 bytes")
    return AccountID("acc_z" + base58.b58encode(public_key).decode("ascii"))


def parse_account_id(value: object) -> AccountID:
    """Validate an AccountID. Raises :class:`InvalidId`."""
    return _parse_account_text(_check_text(value, "AccountID"))


@lru_cache(maxsize=ID_CACHE_SIZE)
def _parse_account_text(text: str) -> AccountID:
    m = _ACCOUNT_RE.fullmatch(text)
    if m is None:
        raise InvalidId(f"not an AccountID: {text!r}")
    if len(_b58decode(m.group(1), "AccountID", text)) != 32:
        raise InvalidId(f"AccountID {text!r} does not hold a 32-byte key")
    return AccountID(text)


@lru_cache(maxsize=ID_CACHE_SIZE)
def account_public_key(account: AccountID) -> bytes:
    """The Ed25519 public key an AccountID certifies."""
    m = _ACCOUNT_RE.fullmatch(account)
    if m is None:
        raise InvalidId(f"not an AccountID: {account!r}")
    key = _b58decode(m.group(1), "AccountID", account)
    if len(key) != 32:
        raise InvalidId(f"AccountID {account!r} does not hold a 32-byte key")
    return key


def parse_session_id(value: object) -> ParsedSession:
    """Validate a SessionID and take it apart. Raises :class:`InvalidId`."""
    return _parse_session_text(_check_text(value, "SessionID"))


@lru_cache(maxsize=ID_CACHE_SIZE)
def _parse_session_text(text: str) -> ParsedSession:
    m = _SESSION_RE.fullmatch(text)
    if m is None:
        raise InvalidId(f"not a SessionID: {text!r}")
    account = parse_account_id(m.group(1))
    if m.group(5) is not None:
        if len(_b58decode(m.group(5), "SessionID", text)) != 7:
            raise InvalidId(f"delete SessionID {text!r} must hold 7 random bytes")
        return ParsedSession(account, SessionKind.DELETE, SessionID(text), 0)
    if len(_b58decode(m.group(2), "SessionID", text)) != 8:
        raise InvalidId(f"SessionID {text!r} must hold 8 random bytes")
    base = SessionID(f"{account}_session_z{m.group(2)}")
    if m.group(3) is None:
        return ParsedSession(account, SessionKind.ACTIVE, base, 0)
    number = m.group(4)
    n = int(number) if number is not None else 1
    if number is not None and (n < 2 or number[0] == "0"):
        raise InvalidId(f"conflict counter in {text!r} must be 2 or more (the first is '!')")
    return ParsedSession(account, SessionKind.CONFLICT, base, n)


def is_delete_session(session: str) -> bool:
    """Is ``session`` a delete session (it holds only a delete marker)? Reads the suffix
    alone, so it is cheap enough for every session of every CoValue; it does not validate
    the id (:func:`parse_session_id` does)."""
    return session.endswith("$")


def session_kind(session: str) -> SessionKind:
    """The kind of ``session`` from its form alone, without validating it (see
    :func:`is_delete_session`)."""
    if session.endswith("$"):
        return SessionKind.DELETE
    return SessionKind.CONFLICT if "!" in session else SessionKind.ACTIVE


def is_conflict_of(session: str, origin: str) -> bool:
    """Is ``session`` a conflict session split off ``origin`` (``origin!``, ``origin!2``, …)?"""
    return session.startswith(origin + "!")


def owns_session(account: AccountID, session: str) -> bool:
    """Was ``session`` opened by ``account`` (its id starts with the account)? Cheap: the
    session id is not validated."""
    return session.startswith(account + "_")


def session_account(session: SessionID) -> AccountID:
    """The account that owns (and must sign) ``session``."""
    return parse_session_id(session).account


RandomBytes = Callable[[int], bytes]


def new_session_id(account: AccountID, random_bytes: RandomBytes = os.urandom) -> SessionID:
    return SessionID(f"{account}_session_z{base58.b58encode(random_bytes(8)).decode('ascii')}")


def new_delete_session_id(account: AccountID, random_bytes: RandomBytes = os.urandom) -> SessionID:
    return SessionID(f"{account}_session_d{base58.b58encode(random_bytes(7)).decode('ascii')}$")


def conflict_session_id(session: SessionID, n: int) -> SessionID:
    """The ``n``-th conflict session of active ``session`` (``!``, ``!2``, ``!3``, ...)."""
    parsed = parse_session_id(session)
    if parsed.kind is not SessionKind.ACTIVE:
        raise InvalidId(f"only an active session has conflict sessions: {session!r}")
    if not 1 <= n < MAX_CONFLICT_NUMBER:
        raise InvalidId(f"conflict sessions count from 1 to {MAX_CONFLICT_NUMBER - 1}")
    return SessionID(f"{session}!" if n == 1 else f"{session}!{n}")


def covalue_id_from_digest(digest: bytes) -> CoValueID:
    return CoValueID("co_z" + base58.b58encode(digest[:20]).decode("ascii"))


def parse_covalue_id(value: object) -> CoValueID:
    """Validate a CoValueID. Raises :class:`InvalidId`."""
    return _parse_covalue_text(_check_text(value, "CoValueID"))


@lru_cache(maxsize=ID_CACHE_SIZE)
def _parse_covalue_text(text: str) -> CoValueID:
    m = _COVALUE_RE.fullmatch(text)
    if m is None:
        raise InvalidId(f"not a CoValueID: {text!r}")
    if len(_b58decode(m.group(1), "CoValueID", text)) != 20:
        raise InvalidId(f"CoValueID {text!r} must hold 20 bytes")
    return CoValueID(text)
