"""Wire messages (engine/protocol/messages/): round trips and validation of each type.

The hypothesis strategies here build *valid* messages (well-formed ids, 32-byte hashes,
64-byte signatures, chunks ending at a checkpoint, headers matching their CoValueID); the
frame and fuzz tests import them. :data:`MESSAGE_STRATEGIES` must name every type in
:data:`MESSAGE_TYPES`, so a new message type cannot ship without a round-trip test.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import base58
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import codec
from engine.errors import InvalidContent, InvalidId, KintsugiError, ProtocolError
from engine.ids import SessionID, account_id_from_public_key, covalue_id_from_digest
from engine.model.header import GroupRuleset, Header, OwnedByGroup, UnsafeAllowAll
from engine.model.known_state import KnownState
from engine.model.session_log import Chunk
from engine.protocol.messages import (
    HELLO_DOMAIN,
    MAX_KV_LIST_PAGE,
    MAX_TEXT,
    MESSAGE_TYPES,
    NONCE_SIZE,
    Admin,
    AdminResult,
    Challenge,
    Content,
    Correction,
    Deleted,
    Done,
    Error,
    Hello,
    Known,
    KvCas,
    KvError,
    KvEvent,
    KvGet,
    KvKeys,
    KvList,
    KvResult,
    KvValue,
    KvWatch,
    Load,
    Message,
    RecoverItem,
    RecoverNext,
    RecoverOpen,
    RecoverPage,
    RecoveryScope,
    Welcome,
    decode_message,
    hello_message,
)
from tests.engine.factories import account, cbor_scalars, cbor_values, comap_header, covalue_id, session, signed_log, tx

# -- strategies ------------------------------------------------------------------------------


def _b58(data: bytes) -> str:
    return base58.b58encode(data).decode("ascii")


account_ids = st.binary(min_size=32, max_size=32).map(account_id_from_public_key)
covalue_ids = st.binary(min_size=20, max_size=20).map(covalue_id_from_digest)
hashes = st.binary(min_size=32, max_size=32)
signatures = st.binary(min_size=64, max_size=64)
short_text = st.text(max_size=24)
counts = st.integers(min_value=0, max_value=2**63 - 1)
features = st.lists(st.text(max_size=64), max_size=6).map(tuple)

active_session_ids = st.builds(
    lambda acc, raw: SessionID(f"{acc}_session_z{_b58(raw)}"), account_ids, st.binary(min_size=8, max_size=8)
)
delete_session_ids = st.builds(
    lambda acc, raw: SessionID(f"{acc}_session_d{_b58(raw)}$"), account_ids, st.binary(min_size=7, max_size=7)
)
conflict_session_ids = st.builds(
    lambda sid, n: SessionID(f"{sid}!" if n == 1 else f"{sid}!{n}"),
    active_session_ids,
    st.integers(min_value=1, max_value=999_999_999),
)
session_ids = st.one_of(active_session_ids, delete_session_ids, conflict_session_ids)


@st.composite
def chunks(draw: st.DrawFn, *, max_txs: int = 4) -> Chunk:
    """A chunk as a peer sends it: bytes transactions, ending at a checkpoint (or empty)."""
    after = draw(st.integers(min_value=0, max_value=2**40))
    txs = draw(st.lists(st.binary(max_size=40), max_size=max_txs))
    end = after + len(txs)
    inner = draw(st.sets(st.integers(min_value=0, max_value=len(txs)), max_size=3)) if txs else set()
    checkpoints = {after + i for i in inner if 0 < i < len(txs)} | ({end} if txs else set())
    return Chunk(after, txs, {n: draw(signatures) for n in sorted(checkpoints)})


_known_sessions = st.dictionaries(session_ids, st.tuples(counts, hashes), max_size=3)


rulesets = st.one_of(
    st.builds(GroupRuleset, account_ids),
    st.builds(OwnedByGroup, covalue_ids),
    st.just(UnsafeAllowAll()),
)


_metas = cbor_values(max_leaves=4)
_uniqueness = st.one_of(st.none(), st.binary(max_size=16), cbor_scalars())


@st.composite
def headers(draw: st.DrawFn) -> Header:
    ruleset = draw(rulesets)
    kind = "group" if isinstance(ruleset, GroupRuleset) else "comap"
    return Header(kind, ruleset, draw(_metas), draw(_uniqueness), draw(counts))


_maybe_headers = st.none() | headers()
_session_chunks = st.dictionaries(session_ids, chunks(), max_size=2)


@st.composite
def contents(draw: st.DrawFn) -> Content:
    header = draw(_maybe_headers)
    cid = header.covalue_id() if header is not None else draw(covalue_ids)
    return Content(cid, header, draw(_session_chunks))


_chunks = chunks()


@st.composite
def corrections(draw: st.DrawFn) -> Correction:
    chunk = draw(_chunks)
    head = (chunk.end, draw(hashes))
    return Correction(draw(covalue_ids), draw(session_ids), chunk.after, tuple(chunk.txs), dict(chunk.sigs), head)


@st.composite
def loads_or_knowns(draw: st.DrawFn, cls: type[Load] | type[Known]) -> Load | Known:
    cid = draw(covalue_ids)
    return cls(cid, KnownState(cid, draw(st.booleans()), draw(_known_sessions)))


text_maps = st.dictionaries(st.text(max_size=8), cbor_values(max_leaves=3), max_size=3)

xids = st.binary(min_size=16, max_size=16)
scopes = st.one_of(
    st.builds(RecoveryScope, st.lists(covalue_ids, min_size=1, max_size=3).map(tuple)),
    st.builds(
        lambda cid, sids: RecoveryScope((cid,), sessions=tuple(sids)),
        covalue_ids,
        st.lists(session_ids, min_size=1, max_size=2),
    ),
    st.builds(lambda g: RecoveryScope(group=g), covalue_ids),
)


@st.composite
def recover_items(draw: st.DrawFn) -> RecoverItem:
    header = draw(_maybe_headers)
    if header is None:
        return RecoverItem(draw(covalue_ids), None)
    return RecoverItem(header.covalue_id(), header, draw(st.booleans()), draw(_session_chunks))


_present_slots = cbor_values(max_leaves=4).map(lambda value: {"present": value})
stored_slots = st.one_of(
    _present_slots,
    st.builds(lambda at, by: {"tombstone": {"at": at, "by": by}}, counts, account_ids),
)
cas_slots = st.one_of(_present_slots, st.just({"tombstone": {}}))
_maybe_text = st.none() | short_text
_page_limits = st.none() | st.integers(min_value=1, max_value=MAX_KV_LIST_PAGE)

MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[Message]] = {
    "challenge": st.builds(
        Challenge, short_text, st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE), counts, short_text, features
    ),
    "hello": st.builds(Hello, account_ids, st.sampled_from(Hello.ROLES), signatures, short_text, features),
    "welcome": st.builds(Welcome, st.booleans()),
    "error": st.builds(Error, short_text, st.text(max_size=MAX_TEXT // 20), st.none() | covalue_ids),
    "load": loads_or_knowns(Load),
    "known": loads_or_knowns(Known),
    "content": contents(),
    "done": st.builds(Done, covalue_ids),
    "deleted": st.builds(Deleted, covalue_ids, st.dictionaries(delete_session_ids, chunks(), min_size=1, max_size=3)),
    "correction": corrections(),
    "admin": st.builds(Admin, counts, st.sampled_from(Admin.OPS), text_maps),
    "admin_result": st.builds(AdminResult, counts, st.booleans(), cbor_values(max_leaves=6)),
    "kv_list": st.builds(KvList, counts, short_text, short_text, _maybe_text, _page_limits),
    "kv_keys": st.builds(KvKeys, counts, short_text, st.lists(text_maps, max_size=3), st.booleans()),
    "kv_get": st.builds(KvGet, counts, short_text, short_text),
    "kv_value": st.builds(KvValue, counts, short_text, short_text, counts, st.none() | stored_slots),
    "kv_cas": st.builds(KvCas, counts, short_text, short_text, counts, cas_slots),
    "kv_result": st.one_of(
        st.builds(KvResult, counts, st.just("stored"), counts, stored_slots),
        st.builds(KvResult, counts, st.just("conflict"), counts, st.none() | stored_slots),
    ),
    "kv_watch": st.builds(KvWatch, counts, short_text, short_text),
    "kv_event": st.builds(KvEvent, counts, short_text, short_text, counts, stored_slots),
    "kv_error": st.builds(KvError, counts, short_text, st.text(max_size=MAX_TEXT // 20)),
    "recover_open": st.builds(RecoverOpen, counts, xids, scopes),
    "recover_page": st.builds(
        RecoverPage, counts, xids, counts, st.lists(recover_items(), max_size=3).map(tuple), st.booleans()
    ),
    "recover_next": st.builds(RecoverNext, xids, counts),
}

#: Any valid message of any type.
messages: st.SearchStrategy[Message] = st.one_of(*MESSAGE_STRATEGIES.values())


def wire_round_trip(message: Message) -> Message:
    """Encode ``message`` as it travels (canonical CBOR bytes) and decode it again."""
    data = codec.encode(message.to_obj())
    return decode_message(codec.decode(data, require_canonical=True))


# -- round trips -----------------------------------------------------------------------------


def test_every_message_type_has_a_strategy() -> None:
    """Each wire message type has a valid-message strategy (new types need a round-trip test)."""
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
@given(data=st.data())
def test_round_trip_per_type(kind: str, data: st.DataObject) -> None:
    """decode(encode(m)) == m for every message type, through canonical CBOR bytes."""
    message = data.draw(MESSAGE_STRATEGIES[kind])
    assert kind == message.T
    decoded = wire_round_trip(message)
    assert type(decoded) is type(message)
    assert decoded == message


@given(messages)
def test_encoding_is_canonical_and_deterministic(message: Message) -> None:
    """A message encodes to canonical CBOR, the same bytes every time, tagged with its type."""
    first = codec.encode(message.to_obj())
    assert codec.encode(wire_round_trip(message).to_obj()) == first
    assert codec.decode(first, require_canonical=True)["t"] == message.T


def test_real_signed_content_round_trips() -> None:
    """A content message built from a real signed log (header, checkpoints) round-trips."""
    alice = account(1)
    header = comap_header(None, tag="round-trip")
    log = signed_log(header.covalue_id(), alice, [tx(i) for i in range(1, 8)], [3, 5], sid=session(alice))
    message = Content(header.covalue_id(), header, {log.session: log.chunk()})
    assert wire_round_trip(message) == message
    assert wire_round_trip(Known(message.id, KnownState(message.id, True, {log.session: log.head()}))).known == (
        KnownState(message.id, True, {log.session: log.head()})
    )


def test_messages_are_frozen() -> None:
    """Messages are immutable values (a decoded message cannot be altered after validation)."""
    message = Done(covalue_id("frozen"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.id = covalue_id("other")  # type: ignore[misc]


# -- validation ------------------------------------------------------------------------------


def _example(kind: str) -> dict[str, Any]:
    """One valid wire map of type ``kind`` (deterministic)."""
    alice = account(1)
    cid = covalue_id("example")
    sid = session(alice)
    log = signed_log(cid, alice, [tx(1), tx(2)], [], sid=sid)
    chunk = log.chunk()
    examples: dict[str, Message] = {
        "challenge": Challenge("node", b"\1" * NONCE_SIZE, 1, "0.1.0", ("sync",)),
        "hello": Hello(alice.account_id, "client", b"\2" * 64, "0.1.0", ("sync",)),
        "welcome": Welcome(False),
        "error": Error("oops", "detail", cid),
        "load": Load(cid, KnownState(cid, True, {sid: log.head()})),
        "known": Known(cid, KnownState(cid, True, {sid: log.head()})),
        "content": Content(cid, None, {sid: chunk}),
        "done": Done(cid),
        "deleted": Deleted(cid, {SessionID(f"{alice.account_id}_session_d{_b58(b'1234567')}$"): chunk}),
        "correction": Correction(cid, sid, 0, tuple(chunk.txs), dict(chunk.sigs), log.head()),
        "admin": Admin(1, "list", {}),
        "admin_result": AdminResult(1, True, {"covalues": []}),
        "kv_list": KvList(1, alice.account_id, ""),
        "kv_keys": KvKeys(1, alice.account_id, [{"key": "k"}]),
        "kv_get": KvGet(1, alice.account_id, "k"),
        "kv_value": KvValue(1, alice.account_id, "k", 2, {"present": [1, "two"]}),
        "kv_cas": KvCas(1, alice.account_id, "k", 2, {"present": {"a": 1}}),
        "kv_result": KvResult(1, "stored", 3, {"tombstone": {"at": 5, "by": alice.account_id}}),
        "kv_watch": KvWatch(1, alice.account_id, "lists/"),
        "kv_event": KvEvent(1, alice.account_id, "lists/a", 3, {"present": None}),
        "kv_error": KvError(1, "kv_access_denied", "not yours"),
        "recover_open": RecoverOpen(1, b"\3" * 16, RecoveryScope((cid,))),
        "recover_page": RecoverPage(1, b"\3" * 16, 0, (RecoverItem(cid, None),), True),
        "recover_next": RecoverNext(b"\3" * 16, 1),
    }
    return examples[kind].to_obj()


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
def test_examples_are_valid(kind: str) -> None:
    """The hand-written example of each type decodes (the negative tests below start from it)."""
    assert kind == decode_message(_example(kind)).T


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, name) for kind in sorted(MESSAGE_TYPES) for name in sorted(_example(kind)) if name != "t"],
)
def test_missing_field_is_invalid_message(kind: str, field: str) -> None:
    """Dropping any field of any message type raises ProtocolError invalid_message (optional
    fields excepted: error.id and content.header may be absent)."""
    obj = _example(kind)
    del obj[field]
    if (kind, field) in {("error", "id"), ("content", "header")}:
        assert kind == decode_message(obj).T
        return
    with pytest.raises(ProtocolError) as info:
        decode_message(obj)
    assert info.value.code == "invalid_message"


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
def test_unexpected_field_is_invalid_message(kind: str) -> None:
    """A field the type does not define is refused, not ignored."""
    obj = {**_example(kind), "surprise": 1}
    with pytest.raises(ProtocolError) as info:
        decode_message(obj)
    assert info.value.code == "invalid_message"


@pytest.mark.parametrize("obj", [None, 1, "load", [], ["t", "load"], {}, {"t": 1}, {"t": None}, {b"t": "load"}])
def test_not_a_message(obj: object) -> None:
    """Anything but a map with a text ``t`` is invalid_message."""
    with pytest.raises(ProtocolError) as info:
        decode_message(obj)
    assert info.value.code == "invalid_message"


def test_unknown_type() -> None:
    """An unknown ``t`` is unknown_message, and the detail quotes at most 40 characters of it."""
    with pytest.raises(ProtocolError) as info:
        decode_message({"t": "x" * 500})
    assert info.value.code == "unknown_message"
    assert len(info.value.detail) < 100


@pytest.mark.parametrize(
    ("kind", "field", "value", "error"),
    [
        ("welcome", "admin", 1, ProtocolError),
        ("welcome", "admin", None, ProtocolError),
        ("hello", "role", "root", ProtocolError),
        ("hello", "sig", b"\0" * 63, ProtocolError),
        ("hello", "sig", "x" * 64, ProtocolError),
        ("hello", "account", "acc_z" + "1" * 10, InvalidId),
        ("hello", "features", ["x" * 65], ProtocolError),
        ("hello", "features", "sync", ProtocolError),
        ("challenge", "nonce", b"\0" * 31, ProtocolError),
        ("challenge", "proto", -1, ProtocolError),
        ("challenge", "proto", True, ProtocolError),
        ("challenge", "proto", 2**63, ProtocolError),
        ("challenge", "version", "v" * (MAX_TEXT + 1), ProtocolError),
        ("error", "code", 5, ProtocolError),
        ("error", "id", "co_zshort", InvalidId),
        ("load", "id", 7, InvalidId),
        ("load", "known", [], InvalidContent),
        ("done", "id", "acc_z1", InvalidId),
        ("admin", "op", "drop_all", ProtocolError),
        ("admin", "args", [], ProtocolError),
        ("admin", "rid", -1, ProtocolError),
        ("admin_result", "ok", "yes", ProtocolError),
        ("kv_keys", "items", [1], ProtocolError),
        ("kv_keys", "more", 1, ProtocolError),
        ("kv_list", "limit", 0, ProtocolError),
        ("kv_list", "limit", MAX_KV_LIST_PAGE + 1, ProtocolError),
        ("kv_list", "after", None, ProtocolError),
        ("kv_get", "key", "k" * (MAX_TEXT + 1), ProtocolError),
        ("kv_get", "namespace", 7, ProtocolError),
        ("kv_cas", "expect", -1, ProtocolError),
        ("kv_cas", "slot", None, ProtocolError),
        ("kv_cas", "slot", {"present": 1, "tombstone": {}}, ProtocolError),
        ("kv_cas", "slot", {"tombstone": {"at": 1, "by": "acc_z1"}}, ProtocolError),
        ("kv_cas", "slot", {"gone": 1}, ProtocolError),
        ("kv_value", "slot", {"tombstone": {"at": -1, "by": "acc_z1"}}, ProtocolError),
        ("kv_value", "slot", {"tombstone": {"at": 1, "by": "acc_z1"}}, InvalidId),
        ("kv_result", "status", "lost", ProtocolError),
        ("kv_result", "slot", None, ProtocolError),
        ("kv_event", "slot", None, ProtocolError),
        ("kv_error", "rid", None, ProtocolError),
        ("correction", "head", [2], ProtocolError),
        ("correction", "head", [1, b"\0" * 32], ProtocolError),
        ("correction", "head", [2, b"\0" * 31], ProtocolError),
        ("correction", "sid", "acc_z1_session_z1", InvalidId),
        ("content", "new", [], ProtocolError),
        ("content", "header", {"type": "comap"}, KintsugiError),
    ],
)
def test_wrong_field_value(kind: str, field: str, value: object, error: type[KintsugiError]) -> None:
    """A field of the wrong type or range raises a typed error with a non-empty code."""
    obj = {**_example(kind), field: value}
    with pytest.raises(error) as info:
        decode_message(obj)
    assert info.value.code


def test_error_of_carries_code_and_detail() -> None:
    """Error.of(exc) puts the exception's stable code and its detail on the wire."""
    exc = ProtocolError("slow down", code="rate_limited")
    message = Error.of(exc, covalue_id("e"))
    assert (message.code, message.detail, message.id) == ("rate_limited", "slow down", covalue_id("e"))
    assert wire_round_trip(message) == message


def test_error_detail_is_truncated_on_the_wire() -> None:
    """An over-long detail is cut to MAX_TEXT when encoded, so the error still decodes."""
    message = Error("code", "d" * (MAX_TEXT * 3))
    decoded = wire_round_trip(message)
    assert isinstance(decoded, Error)
    assert decoded.detail == "d" * MAX_TEXT


def test_hello_message_binds_domain_nonce_and_node() -> None:
    """What a hello signs starts with the domain tag and depends on both nonce and node name."""
    nonce = b"\7" * NONCE_SIZE
    signed = hello_message(nonce, "node-a")
    assert signed.startswith(HELLO_DOMAIN)
    assert signed != hello_message(nonce, "node-b")
    assert signed != hello_message(b"\x08" * NONCE_SIZE, "node-a")
