"""engine.model.header: headers, their validation and the CoValueID derived from them (§3–4)."""

from __future__ import annotations

import hashlib
from typing import Any

import base58
import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import InvalidHeader
from engine.ids import parse_covalue_id
from engine.model.header import (
    MAX_HEADER_SIZE,
    GroupRuleset,
    Header,
    OwnedByGroup,
    UnsafeAllowAll,
    new_header,
)
from tests.engine.factories import T0, account, cbor_values, covalue_id

ALICE, BOB = account(1), account(2)
GROUP_ID = covalue_id("group")


def _independent_id(obj: dict[str, Any]) -> str:
    """CoValueID straight from DESIGN §3: co_z + b58(BLAKE2b-256(canonical CBOR)[:20])."""
    digest = hashlib.blake2b(cbor2.dumps(obj, canonical=True), digest_size=32).digest()
    return "co_z" + base58.b58encode(digest[:20]).decode("ascii")


RULESETS = st.one_of(
    st.builds(GroupRuleset, st.sampled_from([ALICE.account_id, BOB.account_id])),
    st.builds(OwnedByGroup, st.sampled_from([GROUP_ID, covalue_id("other")])),
    st.just(UnsafeAllowAll()),
)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    ruleset = draw(RULESETS)
    kind = "group" if isinstance(ruleset, GroupRuleset) else "comap"
    return Header(
        kind,
        ruleset,
        draw(cbor_values(max_leaves=10)),
        draw(st.one_of(st.none(), st.binary(max_size=16), st.integers(), st.text(max_size=10))),
        draw(st.integers(0, 2**63 - 1)),
    )


# -- round trip and id -----------------------------------------------------------------------


@given(headers())
def test_round_trip_and_stable_id(header: Header) -> None:
    """from_obj(to_obj(h)) == h and decode(encode(h)) == h, with the same id after."""
    assert Header.from_obj(header.to_obj()) == header
    again = Header.decode(header.encode())
    assert again == header
    assert again.covalue_id() == header.covalue_id()


@given(headers())
def test_id_follows_the_spec(header: Header) -> None:
    """The CoValueID is co_z + base58 of the first 20 bytes of BLAKE2b-256 of canonical CBOR."""
    cid = header.covalue_id()
    assert cid == _independent_id(header.to_obj())
    assert parse_covalue_id(cid) == cid


def test_to_obj_shape() -> None:
    """to_obj uses the wire names type, ruleset, meta, uniqueness, createdAt."""
    assert Header("group", GroupRuleset(ALICE.account_id), {"n": 1}, b"u", 7).to_obj() == {
        "type": "group",
        "ruleset": {"type": "group", "initialAdmin": ALICE.account_id},
        "meta": {"n": 1},
        "uniqueness": b"u",
        "createdAt": 7,
    }
    assert Header("comap", OwnedByGroup(GROUP_ID)).to_obj()["ruleset"] == {
        "type": "ownedByGroup",
        "group": GROUP_ID,
    }
    assert Header("comap", UnsafeAllowAll()).to_obj()["ruleset"] == {"type": "unsafeAllowAll"}


BASE = Header("comap", OwnedByGroup(GROUP_ID), {"title": "x"}, b"unique", T0)
VARIANTS = {
    "type": Header("group", GroupRuleset(ALICE.account_id), {"title": "x"}, b"unique", T0),
    "ruleset group": Header("comap", OwnedByGroup(covalue_id("g2")), {"title": "x"}, b"unique", T0),
    "ruleset kind": Header("comap", UnsafeAllowAll(), {"title": "x"}, b"unique", T0),
    "meta": Header("comap", OwnedByGroup(GROUP_ID), {"title": "y"}, b"unique", T0),
    "meta none": Header("comap", OwnedByGroup(GROUP_ID), None, b"unique", T0),
    "meta int vs float": Header("comap", OwnedByGroup(GROUP_ID), {"title": "x", "n": 1.0}, b"unique", T0),
    "uniqueness": Header("comap", OwnedByGroup(GROUP_ID), {"title": "x"}, b"uniquf", T0),
    "uniqueness none": Header("comap", OwnedByGroup(GROUP_ID), {"title": "x"}, None, T0),
    "createdAt": Header("comap", OwnedByGroup(GROUP_ID), {"title": "x"}, b"unique", T0 + 1),
}


def test_id_is_stable() -> None:
    """The same header always gives the same id (a fixed vector and a rebuilt equal header)."""
    same = Header("comap", OwnedByGroup(GROUP_ID), {"title": "x"}, b"unique", T0)
    assert BASE.covalue_id() == same.covalue_id() == _independent_id(BASE.to_obj())
    assert BASE.covalue_id() == Header.decode(BASE.encode()).covalue_id()


def test_id_golden_vector() -> None:
    """A pinned header -> CoValueID vector: ids written by older versions must still match."""
    assert BASE.covalue_id() == "co_z3beemHvPmEkAaFKUCywJcNEMYXfS"


@pytest.mark.parametrize("variant", list(VARIANTS.values()), ids=list(VARIANTS))
def test_id_changes_with_every_field(variant: Header) -> None:
    """Changing any one field gives a different CoValueID."""
    assert variant.covalue_id() != BASE.covalue_id()


def test_new_header_has_fresh_uniqueness() -> None:
    """Two headers made alike by new_header get different ids."""
    a = new_header("comap", OwnedByGroup(GROUP_ID), created_at=T0)
    b = new_header("comap", OwnedByGroup(GROUP_ID), created_at=T0)
    assert a.covalue_id() != b.covalue_id()
    assert isinstance(a.uniqueness, bytes)
    assert len(a.uniqueness) == 12


# -- malformed -------------------------------------------------------------------------------

GOOD = BASE.to_obj()
GROUP_OBJ = Header("group", GroupRuleset(ALICE.account_id), None, b"u", T0).to_obj()


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            del out[key]
        else:
            out[key] = value
    return out


_DROP = object()

MALFORMED: dict[str, Any] = {
    "not a map": [GOOD],
    "none": None,
    "missing meta": _with(GOOD, meta=_DROP),
    "missing createdAt": _with(GOOD, createdAt=_DROP),
    "extra key": _with(GOOD, extra=1),
    "unknown type": _with(GOOD, type="colist"),
    "type not text": _with(GOOD, type=["comap"]),
    "createdAt negative": _with(GOOD, createdAt=-1),
    "createdAt too big": _with(GOOD, createdAt=2**63),
    "createdAt bool": _with(GOOD, createdAt=True),
    "createdAt float": _with(GOOD, createdAt=1.0),
    "createdAt text": _with(GOOD, createdAt="1"),
    "ruleset not a map": _with(GOOD, ruleset="ownedByGroup"),
    "ruleset without type": _with(GOOD, ruleset={"group": GROUP_ID}),
    "ruleset unknown type": _with(GOOD, ruleset={"type": "everyone"}),
    "ruleset extra key": _with(GOOD, ruleset={"type": "ownedByGroup", "group": GROUP_ID, "x": 1}),
    "ruleset missing group": _with(GOOD, ruleset={"type": "ownedByGroup"}),
    "ruleset bad group id": _with(GOOD, ruleset={"type": "ownedByGroup", "group": "co_zNOPE0"}),
    "ruleset group is account": _with(GOOD, ruleset={"type": "ownedByGroup", "group": ALICE.account_id}),
    "allowAll with extra": _with(GOOD, ruleset={"type": "unsafeAllowAll", "group": GROUP_ID}),
    "comap with group ruleset": _with(GOOD, ruleset={"type": "group", "initialAdmin": ALICE.account_id}),
    "group owned by group": _with(GROUP_OBJ, ruleset={"type": "ownedByGroup", "group": GROUP_ID}),
    "group allow all": _with(GROUP_OBJ, ruleset={"type": "unsafeAllowAll"}),
    "group bad admin": _with(GROUP_OBJ, ruleset={"type": "group", "initialAdmin": "acc_zl"}),
    "group admin not text": _with(GROUP_OBJ, ruleset={"type": "group", "initialAdmin": 5}),
}


@pytest.mark.parametrize("obj", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_header_obj(obj: Any) -> None:
    """Each malformed header raises InvalidHeader with code invalid_header."""
    with pytest.raises(InvalidHeader) as info:
        Header.from_obj(obj)
    assert info.value.code == "invalid_header"


ENCODABLE = {k: v for k, v in MALFORMED.items() if v is not None}


@pytest.mark.parametrize("obj", list(ENCODABLE.values()), ids=list(ENCODABLE))
def test_malformed_header_bytes(obj: Any) -> None:
    """The same malformed headers, canonically encoded, fail Header.decode with InvalidHeader."""
    with pytest.raises(InvalidHeader):
        Header.decode(cbor2.dumps(obj, canonical=True))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        BASE.encode() + b"\x00",
        cbor2.dumps(GOOD, canonical=False),  # insertion order is not canonical order
        codec.encode(_with(GOOD, meta=b"x" * MAX_HEADER_SIZE)),
    ],
    ids=["empty", "garbage", "trailing byte", "non-canonical", "oversized"],
)
def test_undecodable_header_bytes(data: bytes) -> None:
    """Garbage, trailing bytes, a non-canonical encoding or an oversized header: InvalidHeader."""
    assert data != BASE.encode()
    with pytest.raises(InvalidHeader) as info:
        Header.decode(data)
    assert info.value.code == "invalid_header"


@given(
    st.dictionaries(
        st.sampled_from(["type", "ruleset", "meta", "uniqueness", "createdAt", "x"]),
        st.one_of(cbor_values(max_leaves=6), st.sampled_from(["comap", "group", 5, T0])),
    )
)
def test_from_obj_raises_only_invalid_header(obj: dict[str, Any]) -> None:
    """Arbitrary maps either validate as a header or raise InvalidHeader."""
    try:
        header = Header.from_obj(obj)
    except InvalidHeader:
        return
    assert header.to_obj() == obj
