"""The handshake state machine (engine/protocol/handshake.py) driven directly: no event loop,
no sockets. Both sides end to end in memory, every refusal the node decides with its error
code and close code, every failure the peer raises, and the misuses that are our own bugs
(UsageError). The same exchange over real sockets is tests/engine/net/test_handshake.py.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine import codec
from engine.crypto import AccountKey, verify_signature
from engine.errors import InvalidCBOR, ProtocolError, UnsupportedVersion, UsageError
from engine.ids import AccountID
from engine.model.known_state import KnownState
from engine.protocol.frames import BULK, ENVELOPE_VERSION, OP, decode_frame, encode_frame
from engine.protocol.handshake import (
    Authenticated,
    AuthFailed,
    Challenged,
    NodeHandshake,
    NodeState,
    PeerHandshake,
    PeerState,
    Refused,
    Welcomed,
)
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION, CloseCode, Limits
from engine.protocol.messages import (
    HELLO_DOMAIN,
    NONCE_SIZE,
    Challenge,
    Error,
    Hello,
    Load,
    Message,
    Welcome,
    hello_message,
)
from tests.engine.factories import account, covalue_id

LIMITS = Limits()
NODE = "node-under-test"
NONCE = bytes(range(NONCE_SIZE))
ALICE = account(1)
BOB = account(2)


def node_side(admins: tuple[AccountID, ...] = (), limits: Limits = LIMITS) -> NodeHandshake:
    return NodeHandshake(NODE, admins=admins, limits=limits, version="9.9.9")


def peer_side(key: AccountKey = ALICE, role: str = "client") -> PeerHandshake:
    return PeerHandshake(key, role, limits=LIMITS, version="1.2.3")


def op(*messages: Message) -> bytes:
    return encode_frame(OP, list(messages))


def challenged(node: NodeHandshake, nonce: bytes = NONCE) -> bytes:
    """The node's challenge frame (the node moves to CHALLENGED)."""
    return op(node.challenge(nonce))


def hello(*, key: AccountKey = ALICE, account_id: AccountID | None = None, signed: bytes | None = None) -> Hello:
    """A hello naming ``account_id`` (default ``key``'s) with ``key``'s signature of ``signed``
    (default: the right hello message for NODE and NONCE)."""
    to_sign = signed if signed is not None else hello_message(NONCE, NODE)
    return Hello(account_id or key.account_id, "client", key.sign(to_sign), "test", ())


def refused(node: NodeHandshake, data: bytes) -> Refused:
    decision = node.receive(data)
    assert isinstance(decision, Refused), f"expected a refusal, got {decision}"
    assert node.state is NodeState.REFUSED
    return decision


def only_message(data: bytes) -> Message:
    frame = decode_frame(data, max_size=LIMITS.max_frame_size, max_messages=1)
    assert not frame.errors
    (message,) = frame.messages
    return message


# -- both sides end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("is_admin", [False, True])
def test_both_sides_complete_the_handshake_in_memory(is_admin: bool) -> None:
    """challenge → hello → welcome between the two state machines, frames as bytes: the peer
    signs this node's nonce and name, the node welcomes it with admin as configured, and both
    end WELCOMED."""
    node = node_side(admins=(ALICE.account_id,) if is_admin else (BOB.account_id,))
    peer = peer_side()
    challenge = node.challenge(NONCE)
    assert challenge == Challenge(NODE, NONCE, PROTOCOL_VERSION, "9.9.9", FEATURES)

    event = peer.receive(op(challenge))
    assert isinstance(event, Challenged)
    assert event.challenge == challenge and peer.challenge == challenge
    assert peer.state is PeerState.HELLO_SENT
    assert (event.hello.account, event.hello.role, event.hello.version) == (ALICE.account_id, "client", "1.2.3")
    assert event.hello.features == FEATURES
    assert verify_signature(ALICE.account_id, hello_message(NONCE, NODE), event.hello.sig)
    assert only_message(event.frame) == event.hello

    authenticated = node.receive(event.frame)
    assert authenticated == Authenticated(event.hello, is_admin)
    assert authenticated.account == ALICE.account_id
    assert node.state is NodeState.AUTHENTICATED

    welcome = node.admit(held=0)
    assert welcome == Welcomed(is_admin)
    assert only_message(welcome.frame) == Welcome(is_admin)
    assert node.state is NodeState.WELCOMED

    assert peer.receive(welcome.frame) == Welcomed(is_admin)
    assert peer.state is PeerState.WELCOMED


def test_hello_in_a_bulk_frame_of_one_is_accepted() -> None:
    node = node_side()
    peer = peer_side()
    event = peer.take_challenge(challenged(node))
    assert isinstance(node.receive(encode_frame(BULK, [event.hello])), Authenticated)


@pytest.mark.parametrize("role", ["client", "node", "inspector"])
def test_every_role_is_welcomed(role: str) -> None:
    node = node_side()
    peer = peer_side(role=role)
    decision = node.receive(peer.take_challenge(challenged(node)).frame)
    assert isinstance(decision, Authenticated) and decision.hello.role == role


# -- node side: refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "forgery",
    ["random-signature", "other-account", "other-nonce", "other-node"],
)
def test_hello_that_does_not_verify_is_auth_failed_and_forged(forgery: str) -> None:
    """A signature over something else, or by another account than the hello names, is
    refused with auth_failed and 4401, marked forged (the shell logs a security event)."""
    node = node_side()
    challenged(node)
    if forgery == "random-signature":
        bad = hello(signed=b"not the hello message")
    elif forgery == "other-account":
        bad = hello(key=BOB, account_id=ALICE.account_id)
    elif forgery == "other-nonce":
        bad = hello(signed=hello_message(bytes(NONCE_SIZE), NODE))
    else:
        bad = hello(signed=hello_message(NONCE, "another-node"))
    decision = refused(node, op(bad))
    assert (decision.error.code, decision.close_code) == ("auth_failed", CloseCode.AUTH_FAILED)
    assert decision.reason == "auth_failed"
    assert decision.forged
    assert only_message(decision.frame) == decision.error


def test_replayed_hello_is_refused_by_a_later_challenge() -> None:
    """A hello that opened one connection is refused on the next: another nonce."""
    first, second = node_side(), node_side()
    captured = peer_side().take_challenge(challenged(first, NONCE)).frame
    assert isinstance(first.receive(captured), Authenticated)
    challenged(second, bytes(reversed(NONCE)))
    decision = refused(second, captured)
    assert (decision.error.code, decision.close_code, decision.forged) == ("auth_failed", CloseCode.AUTH_FAILED, True)


def _raw_hello(**changes: object) -> bytes:
    obj = hello().to_obj()
    obj.update(changes)
    return codec.encode({"v": ENVELOPE_VERSION, "k": OP, "msg": obj})


def _case(name: str, data: bytes, code: str, close: int) -> object:
    return pytest.param(data, code, close, id=name)


@pytest.mark.parametrize(
    ("data", "code", "close"),
    [
        _case("unknown-role", _raw_hello(role="admin"), "auth_failed", CloseCode.AUTH_FAILED),
        _case(
            "missing-fields",
            codec.encode({"v": 1, "k": OP, "msg": {"t": "hello", "account": ALICE.account_id}}),
            "auth_failed",
            CloseCode.AUTH_FAILED,
        ),
        _case("short-signature", _raw_hello(sig=b"\x01" * 10), "auth_failed", CloseCode.AUTH_FAILED),
        _case("bad-account-id", _raw_hello(account="acc_zNOPE"), "auth_failed", CloseCode.AUTH_FAILED),
        _case(
            "unknown-message",
            codec.encode({"v": 1, "k": OP, "msg": {"t": "howdy"}}),
            "auth_failed",
            CloseCode.AUTH_FAILED,
        ),
        _case(
            "a-load",
            op(Load(covalue_id("x"), KnownState(covalue_id("x"), False, {}))),
            "auth_failed",
            CloseCode.AUTH_FAILED,
        ),
        _case("a-welcome", op(Welcome(True)), "auth_failed", CloseCode.AUTH_FAILED),
        _case("empty-bulk", encode_frame(BULK, []), "auth_failed", CloseCode.AUTH_FAILED),
        _case(
            "two-hellos-in-one-frame",
            encode_frame(BULK, [hello(), hello()]),
            "malformed_frame",
            CloseCode.PROTOCOL_ERROR,
        ),
        _case("garbage", b"\xff\x00", "invalid_cbor", CloseCode.PROTOCOL_ERROR),
        _case("not-a-map", codec.encode([1, 2]), "malformed_frame", CloseCode.PROTOCOL_ERROR),
        _case(
            "unsupported-version",
            codec.encode({"v": 2, "k": OP, "msg": hello().to_obj()}),
            "unsupported_version",
            CloseCode.UNSUPPORTED_VERSION,
        ),
    ],
)
def test_anything_but_one_valid_hello_is_refused(data: bytes, code: str, close: int) -> None:
    """Whatever the first frame is, if it is not one valid hello the node refuses it with the
    documented error and close code (docs/protocol.md): a frame that does not decode 4400
    with its own code, another envelope version 4426, anything else auth_failed 4401."""
    node = node_side()
    challenged(node)
    decision = refused(node, data)
    assert (decision.error.code, decision.close_code) == (code, close)
    assert decision.reason == code
    assert not decision.forged


def test_oversized_hello_is_frame_too_large() -> None:
    limits = Limits(max_frame_size=64)
    node = node_side(limits=limits)
    challenged(node)
    decision = refused(node, op(hello()))
    assert (decision.error.code, decision.close_code) == ("frame_too_large", CloseCode.PROTOCOL_ERROR)


def test_hello_before_challenge_is_auth_failed() -> None:
    """A frame before the node has challenged cannot carry a signature of the nonce."""
    node = node_side()
    decision = refused(node, op(hello()))
    assert (decision.error.code, decision.close_code, decision.forged) == ("auth_failed", CloseCode.AUTH_FAILED, False)
    assert decision.error.detail == "hello before challenge"


def test_too_many_connections_is_refused_at_the_limit() -> None:
    """admit() is fed how many connections the account already holds: under
    max_connections_per_account it welcomes, at it it refuses with too_many_connections and
    4409 (close reason "too many connections")."""
    limits = Limits(max_connections_per_account=3)
    for held, welcomed in ((0, True), (2, True), (3, False), (10, False)):
        node = node_side(limits=limits)
        node.receive(peer_side().take_challenge(challenged(node)).frame)
        decision = node.admit(held)
        if welcomed:
            assert decision == Welcomed(False) and node.state is NodeState.WELCOMED
        else:
            assert isinstance(decision, Refused)
            assert decision.error.code == "too_many_connections"
            assert decision.close_code == CloseCode.TOO_MANY_CONNECTIONS
            assert (decision.reason, decision.error.detail) == ("too many connections", "at most 3")
            assert node.state is NodeState.REFUSED


# -- node side: our own misuse ---------------------------------------------------------------------


def test_second_hello_after_the_decision_is_a_local_error() -> None:
    """Once the node has decided, later frames belong to the frame guard and the sync layer
    (which answer a second hello with unexpected_message): feeding the handshake again is a
    bug in the shell, raised as UsageError (a RuntimeError)."""
    node = node_side()
    frame = peer_side().take_challenge(challenged(node)).frame
    node.receive(frame)
    with pytest.raises(UsageError):
        node.receive(frame)
    node.admit(0)
    with pytest.raises(UsageError):
        node.receive(frame)
    refusing = node_side()
    challenged(refusing)
    refused(refusing, b"\xff")
    with pytest.raises(UsageError) as raised:
        refusing.receive(frame)
    assert isinstance(raised.value, RuntimeError)


def test_misuse_of_the_node_side_raises_usage_error() -> None:
    node = node_side()
    with pytest.raises(UsageError):
        node.admit(0)
    with pytest.raises(UsageError):
        node.challenge(b"short")
    node.challenge(NONCE)
    with pytest.raises(UsageError):
        node.challenge(NONCE)
    with pytest.raises(UsageError):
        node.admit(0)
    with pytest.raises(UsageError):
        Refused(Error("auth_failed"), CloseCode.NORMAL, "auth_failed")
    with pytest.raises(UsageError):
        Refused(Error("auth_failed"), CloseCode.AUTH_FAILED, "x" * 200)


# -- peer side ------------------------------------------------------------------------------------


def test_peer_refuses_a_node_of_another_protocol_before_saying_hello() -> None:
    peer = peer_side()
    with pytest.raises(UnsupportedVersion):
        peer.receive(op(Challenge("future", NONCE, PROTOCOL_VERSION + 1, "9.0", ())))
    assert peer.state is PeerState.FAILED
    assert peer.challenge is None


@pytest.mark.parametrize(
    ("first", "error", "code"),
    [
        (op(Error("too_many_connections", "busy")), ProtocolError, "too_many_connections"),
        (op(Welcome(False)), ProtocolError, "invalid_message"),
        (b"\xff", InvalidCBOR, "invalid_cbor"),
        (codec.encode({"v": 2, "k": OP, "msg": Welcome(False).to_obj()}), UnsupportedVersion, "unsupported_version"),
        (encode_frame(BULK, []), ProtocolError, "invalid_message"),
    ],
    ids=["error", "not-a-challenge", "garbage", "other-envelope", "empty"],
)
def test_peer_gives_up_on_anything_but_a_challenge(first: bytes, error: type[Exception], code: str) -> None:
    """Remote failures raise the engine's typed errors with stable codes (the client logs them
    and retries); an error the node sent keeps the node's code."""
    peer = peer_side()
    with pytest.raises(error) as raised:
        peer.receive(first)
    assert getattr(raised.value, "code", None) == code
    assert peer.state is PeerState.FAILED
    with pytest.raises(UsageError):
        peer.receive(first)


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        (op(Error("auth_failed", "who are you")), AuthFailed, "auth_failed"),
        (op(Error("too_many_connections", "at most 3")), ProtocolError, "too_many_connections"),
        (op(Challenge(NODE, NONCE, PROTOCOL_VERSION, "x", ())), ProtocolError, "invalid_message"),
        (b"\xa1", InvalidCBOR, "invalid_cbor"),
    ],
    ids=["auth-failed", "other-error", "not-a-welcome", "garbage"],
)
def test_peer_reports_the_nodes_refusal(reply: bytes, error: type[Exception], code: str) -> None:
    peer = peer_side()
    peer.take_challenge(op(Challenge(NODE, NONCE, PROTOCOL_VERSION, "x", ())))
    with pytest.raises(error) as raised:
        peer.receive(reply)
    assert getattr(raised.value, "code", None) == code
    assert (error is AuthFailed) == isinstance(raised.value, AuthFailed)
    assert peer.state is PeerState.FAILED


def test_misuse_of_the_peer_side_raises_usage_error() -> None:
    with pytest.raises(UsageError):
        peer_side(role="admin")
    peer = peer_side()
    with pytest.raises(UsageError):
        peer.take_reply(op(Welcome(False)))
    challenge = op(Challenge(NODE, NONCE, PROTOCOL_VERSION, "x", ()))
    peer.take_challenge(challenge)
    with pytest.raises(UsageError):
        peer.take_challenge(challenge)
    peer.receive(op(Welcome(True)))
    with pytest.raises(UsageError):
        peer.receive(op(Welcome(True)))


# -- a hello answers one challenge only --------------------------------------------------------------

names = st.text(max_size=40)
nonces = st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)


@given(nonces, names, nonces, names)
def test_a_hello_signed_for_one_challenge_never_verifies_for_another(
    nonce_a: bytes, node_a: str, nonce_b: bytes, node_b: str
) -> None:
    """The hello a peer makes for challenge A is refused (auth_failed, forged) by a node that
    issued any other challenge B: another nonce, another node name, or both. Fed back to the
    node that issued A, it is accepted."""
    assume((nonce_a, node_a) != (nonce_b, node_b))
    peer = peer_side()
    answer = peer.take_challenge(op(Challenge(node_a, nonce_a, PROTOCOL_VERSION, "x", ()))).frame
    assert hello_message(nonce_a, node_a).startswith(HELLO_DOMAIN)

    other = NodeHandshake(node_b, limits=LIMITS, version="x")
    other.challenge(nonce_b)
    decision = other.receive(answer)
    assert isinstance(decision, Refused)
    assert (decision.error.code, decision.close_code, decision.forged) == ("auth_failed", CloseCode.AUTH_FAILED, True)

    issuer = NodeHandshake(node_a, limits=LIMITS, version="x")
    issuer.challenge(nonce_a)
    assert isinstance(issuer.receive(answer), Authenticated)
