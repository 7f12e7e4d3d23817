"""engine.model.known_state: what a replica holds, with each session's head hash (DESIGN §4)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import InvalidContent, InvalidId
from engine.ids import SessionID, conflict_session_id
from engine.model.known_state import MAX_KNOWN_SESSIONS, KnownState
from tests.engine.factories import account, covalue_id, delete_session, session

ALICE, BOB = account(1), account(2)
CO = covalue_id()
SIDS = [
    session(ALICE),
    session(ALICE, 1),
    session(BOB),
    delete_session(BOB),
    conflict_session_id(session(ALICE), 1),
    conflict_session_id(session(ALICE), 2),
]
HEAD = bytes(range(32))

KNOWN_STATES = st.builds(
    KnownState,
    st.sampled_from([CO, covalue_id("other")]),
    st.booleans(),
    st.dictionaries(
        st.sampled_from(SIDS),
        st.tuples(st.integers(0, 2**64), st.binary(min_size=32, max_size=32)),
        max_size=len(SIDS),
    ),
)


@given(KNOWN_STATES)
def test_obj_round_trip(known: KnownState) -> None:
    """KnownState.from_obj(k.to_obj()) == k."""
    assert KnownState.from_obj(known.to_obj()) == known


@given(KNOWN_STATES)
def test_cbor_round_trip(known: KnownState) -> None:
    """A known state survives canonical CBOR (the wire form) unchanged."""
    assert KnownState.from_obj(codec.decode(codec.encode(known.to_obj()), require_canonical=True)) == known


def test_to_obj_shape() -> None:
    """to_obj is {id, header, sessions: {sid: [count, head]}}."""
    known = KnownState(CO, True, {SIDS[0]: (3, HEAD)})
    assert known.to_obj() == {"id": CO, "header": True, "sessions": {SIDS[0]: [3, HEAD]}}


def test_empty_known_state() -> None:
    """A known state without header or sessions is valid (a replica asking for everything)."""
    assert KnownState.from_obj({"id": CO, "header": False, "sessions": {}}) == KnownState(CO, False)


GOOD: dict[str, Any] = {"id": CO, "header": True, "sessions": {SIDS[0]: [3, HEAD]}}


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


MALFORMED_CONTENT: dict[str, Any] = {
    "not a map": [CO, True, {}],
    "none": None,
    "missing sessions": {"id": CO, "header": True},
    "extra key": _with(extra=1),
    "header int": _with(header=1),
    "header none": _with(header=None),
    "sessions list": _with(sessions=[[SIDS[0], 3, HEAD]]),
    "entry tuple-less": _with(sessions={SIDS[0]: 3}),
    "entry short": _with(sessions={SIDS[0]: [3]}),
    "entry long": _with(sessions={SIDS[0]: [3, HEAD, 1]}),
    "count negative": _with(sessions={SIDS[0]: [-1, HEAD]}),
    "count bool": _with(sessions={SIDS[0]: [True, HEAD]}),
    "count float": _with(sessions={SIDS[0]: [3.0, HEAD]}),
    "head short": _with(sessions={SIDS[0]: [3, HEAD[:31]]}),
    "head long": _with(sessions={SIDS[0]: [3, HEAD + b"\x00"]}),
    "head text": _with(sessions={SIDS[0]: [3, HEAD.hex()]}),
}


@pytest.mark.parametrize("obj", list(MALFORMED_CONTENT.values()), ids=list(MALFORMED_CONTENT))
def test_malformed_known_state(obj: Any) -> None:
    """Malformed known states raise InvalidContent with code invalid_content."""
    with pytest.raises(InvalidContent) as info:
        KnownState.from_obj(obj)
    assert info.value.code == "invalid_content"


MALFORMED_IDS: dict[str, Any] = {
    "bad covalue id": _with(id="co_z0"),
    "account as id": _with(id=ALICE.account_id),
    "id not text": _with(id=5),
    "bad session id": _with(sessions={"acc_z1_session_z1": [1, HEAD]}),
    "covalue as session": _with(sessions={CO: [1, HEAD]}),
    "session !1": _with(sessions={SIDS[0] + "!1": [1, HEAD]}),
    "session key not text": _with(sessions={5: [1, HEAD]}),
}


@pytest.mark.parametrize("obj", list(MALFORMED_IDS.values()), ids=list(MALFORMED_IDS))
def test_known_state_with_bad_ids(obj: Any) -> None:
    """A known state naming a malformed CoValueID or SessionID raises InvalidId."""
    with pytest.raises(InvalidId) as info:
        KnownState.from_obj(obj)
    assert info.value.code == "invalid_id"


def test_too_many_sessions() -> None:
    """More than MAX_KNOWN_SESSIONS sessions is refused before any is parsed."""
    sessions = {SessionID(f"s{i}"): [1, HEAD] for i in range(MAX_KNOWN_SESSIONS + 1)}
    with pytest.raises(InvalidContent):
        KnownState.from_obj(_with(sessions=sessions))


@given(
    st.dictionaries(
        st.sampled_from(["id", "header", "sessions", "x"]),
        st.one_of(
            st.sampled_from([CO, True, False, {}, {SIDS[0]: [1, HEAD]}, {SIDS[1]: [1, b"x"]}]),
            st.integers(),
            st.text(max_size=5),
            st.dictionaries(
                st.sampled_from([*SIDS, "s"]),
                st.lists(st.one_of(st.integers(-1, 3), st.binary(max_size=33)), max_size=3),
            ),
        ),
    )
)
def test_from_obj_raises_only_typed_errors(obj: dict[str, Any]) -> None:
    """Arbitrary maps validate or raise InvalidContent / InvalidId, nothing else."""
    try:
        known = KnownState.from_obj(obj)
    except (InvalidContent, InvalidId):
        return
    assert known.to_obj() == obj
