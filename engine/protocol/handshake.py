"""The challenge/hello handshake (DESIGN §6, docs/protocol.md "Handshake") as a sans-I/O state
machine for both sides: frames in, decisions and messages out. No sockets, no clock: the
shell (:mod:`engine.net.server`, :mod:`engine.net.client`) feeds it the bytes it received,
sends what it decides, and owns the handshake timeout (close 4408).

The exchange::

    node → peer   challenge{node, nonce, proto, version, features}
    peer → node   hello{account, role, sig, version, features}
    node → peer   welcome{admin}     or   error{code} + close

``proto`` is :data:`~engine.protocol.limits.PROTOCOL_VERSION`; the frame envelope's ``v`` is a
separate version (:data:`~engine.protocol.frames.ENVELOPE_VERSION`) that did not change with
the protocol, so a peer of another protocol version can still read the challenge and refuses
it itself with ``unsupported_version`` before it signs a hello. That is how a protocol 1 peer,
whose group changes carry no causal past (docs/protocol.md "Group authority (normative)"),
is kept from syncing with a protocol 2 node, and a protocol 2 peer from an older node.

Node side, :class:`NodeHandshake` (states :class:`NodeState`):

==============  ================================================  ==========================
state           input → decision                                  next state
==============  ================================================  ==========================
START           :meth:`~NodeHandshake.challenge` (nonce)          CHALLENGED
                → the ``challenge`` to send
START           :meth:`~NodeHandshake.receive` (any frame)        REFUSED
                → ``auth_failed``, 4401 (hello before challenge)
CHALLENGED      receive: frame too large, not CBOR, not an        REFUSED
                envelope, more than one message
                → that error's code, 4400
CHALLENGED      receive: envelope ``v`` not ours                  REFUSED
                → ``unsupported_version``, 4426
CHALLENGED      receive: anything but one valid ``hello``         REFUSED
                (another message, an invalid hello: bad fields,
                unknown role, bad account id)
                → ``auth_failed``, 4401
CHALLENGED      receive: a hello whose signature does not verify  REFUSED
                for this nonce and node name (forged, replayed
                from another connection, signed for another
                node) → ``auth_failed``, 4401, ``forged``
CHALLENGED      receive: a hello that verifies                    AUTHENTICATED
                → :class:`Authenticated` (account, admin)
AUTHENTICATED   :meth:`~NodeHandshake.admit` (connections the     REFUSED
                account already holds) at or over the limit
                → ``too_many_connections``, 4409
AUTHENTICATED   admit under the limit → :class:`Welcomed`         WELCOMED
==============  ================================================  ==========================

Peer side, :class:`PeerHandshake` (states :class:`PeerState`):

==============  ================================================  ==========================
state           input → event                                     next state
==============  ================================================  ==========================
START           receive: a ``challenge`` of our protocol version  HELLO_SENT
                → :class:`Challenged` with the signed ``hello``
START           receive: ``error`` → raises ProtocolError (code)  FAILED
START           receive: another message → ProtocolError          FAILED
START           receive: a challenge of another ``proto``         FAILED
                → raises UnsupportedVersion (no hello is made)
HELLO_SENT      receive: ``welcome`` → :class:`Welcomed`          WELCOMED
HELLO_SENT      receive: ``error{auth_failed}`` → AuthFailed;     FAILED
                another error → ProtocolError with its code;
                another message → ProtocolError
any             receive: a frame that does not decode → raises    FAILED
                the decoding error (InvalidCBOR, FrameTooLarge,
                UnsupportedVersion, ProtocolError)
==============  ================================================  ==========================

Rules:

- Every handshake frame holds exactly one message; frames are decoded by
  :func:`engine.protocol.frames.decode_frame` under the connection's ``max_frame_size``.
- A hello signs :func:`~engine.protocol.messages.hello_message` of *this* challenge's nonce
  and node name, so a hello made for one challenge never verifies for another.
- ``welcome{admin}`` is true for the accounts the node names as admins (the node's own
  account among them, as the shell passes it).
- Remote protocol errors — the other side broke the protocol — are decisions on the node side
  (:class:`Refused`: the error to send and the close code) and raised
  :class:`~engine.errors.ProtocolError` subclasses on the peer side (the peer just gives up
  the connection). Local protocol errors — our own code calling a method in the wrong state,
  such as feeding a frame after the decision (later frames belong to
  :class:`engine.protocol.guard.FrameGuard` and the sync layer) or making a second
  challenge — raise :class:`~engine.errors.UsageError`, a ``RuntimeError``.
- The connection limit's counters live with the shell (they span connections); the decision
  is here, fed the count (:meth:`NodeHandshake.admit`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from engine.crypto import AccountKey, verify_signature
from engine.errors import AuthFailed, KintsugiError, ProtocolError, UnsupportedVersion, UsageError
from engine.ids import AccountID
from engine.protocol.frames import OP, decode_frame, encode_frame
from engine.protocol.limits import FEATURES, MAX_CLOSE_REASON, PROTOCOL_VERSION, CloseCode, Limits
from engine.protocol.messages import NONCE_SIZE, Challenge, Error, Hello, Message, Welcome, hello_message

__all__ = [
    "REFUSAL_CLOSE_CODES",
    "Authenticated",
    "Challenged",
    "NodeHandshake",
    "NodeState",
    "PeerHandshake",
    "PeerState",
    "Refused",
    "Welcomed",
]

_T = TypeVar("_T")

#: Messages in one handshake frame.
HANDSHAKE_MESSAGES = 1
#: The close codes a node refuses a handshake with.
REFUSAL_CLOSE_CODES = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.AUTH_FAILED,
        CloseCode.TOO_MANY_CONNECTIONS,
        CloseCode.UNSUPPORTED_VERSION,
    }
)


# -- decisions and events ------------------------------------------------------------------------


def _frame(message: Message) -> bytes:
    return encode_frame(OP, [message])


@dataclass(frozen=True, slots=True)
class Refused:
    """Node side: send ``error``, then close with ``close_code`` and ``reason``. ``forged``: the
    hello's signature did not verify (the shell logs a security event)."""

    error: Error
    close_code: int
    reason: str
    forged: bool = False

    def __post_init__(self) -> None:
        if self.close_code not in REFUSAL_CLOSE_CODES:
            raise UsageError(f"{self.close_code} is not a handshake refusal close code")
        if len(self.reason.encode()) > MAX_CLOSE_REASON:
            raise UsageError(f"close reason over {MAX_CLOSE_REASON} bytes")

    @property
    def frame(self) -> bytes:
        """The encoded ``error`` frame to send before closing."""
        return _frame(self.error)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Node side: the hello verified; ``admin`` says whether the account will be welcomed as
    an admin. Call :meth:`NodeHandshake.admit` next."""

    hello: Hello
    admin: bool

    @property
    def account(self) -> AccountID:
        return self.hello.account


@dataclass(frozen=True, slots=True)
class Welcomed:
    """Node side: send ``welcome{admin}`` and start syncing. Peer side: the node welcomed us."""

    admin: bool

    @property
    def message(self) -> Welcome:
        return Welcome(self.admin)

    @property
    def frame(self) -> bytes:
        """The encoded ``welcome`` frame."""
        return _frame(self.message)


@dataclass(frozen=True, slots=True)
class Challenged:
    """Peer side: the node's challenge, and the signed ``hello`` to send in answer."""

    challenge: Challenge
    hello: Hello

    def __post_init__(self) -> None:
        if self.challenge.proto != PROTOCOL_VERSION:
            raise UsageError("a hello answers only a challenge of this protocol version")

    @property
    def frame(self) -> bytes:
        """The encoded ``hello`` frame to send."""
        return _frame(self.hello)


def _decode_one(data: bytes, limits: Limits) -> Message:
    """The single message of a handshake frame. Raises the frame's decoding error, the first
    invalid message's error, or ``ProtocolError`` when the frame holds no message."""
    frame = decode_frame(data, max_size=limits.max_frame_size, max_messages=HANDSHAKE_MESSAGES)
    if len(frame.messages) != 1:
        raise frame.errors[0] if frame.errors else ProtocolError("expected one message")
    return frame.messages[0]


# -- node side -----------------------------------------------------------------------------------


class NodeState(enum.Enum):
    START = "start"
    CHALLENGED = "challenged"
    AUTHENTICATED = "authenticated"
    WELCOMED = "welcomed"
    REFUSED = "refused"


class NodeHandshake:
    """The node's side of one connection's handshake.

    ``name`` is the node name the challenge announces (and the hello signs); ``admins`` the
    accounts welcomed as admins; ``limits`` gives ``max_frame_size`` and
    ``max_connections_per_account``; ``version`` (the engine's) and ``features`` are
    announced in the challenge.
    """

    def __init__(
        self,
        name: str,
        *,
        admins: Iterable[AccountID] = (),
        limits: Limits,
        version: str,
        features: tuple[str, ...] = FEATURES,
    ) -> None:
        self.name = name
        self.admins = frozenset(admins)
        self.limits = limits
        self.version = version
        self.features = features
        self.state = NodeState.START
        self._challenge: Challenge | None = None
        self._authenticated: Authenticated | None = None

    def challenge(self, nonce: bytes) -> Challenge:
        """The challenge to send first, with ``nonce`` (:data:`NONCE_SIZE` fresh random bytes,
        chosen by the caller). Raises :class:`UsageError` unless in START or for a nonce of
        another size."""
        self._expect(NodeState.START, "challenge")
        if len(nonce) != NONCE_SIZE:
            raise UsageError(f"a nonce is {NONCE_SIZE} bytes")
        self._challenge = Challenge(self.name, nonce, PROTOCOL_VERSION, self.version, self.features)
        self.state = NodeState.CHALLENGED
        return self._challenge

    def receive(self, data: bytes) -> Authenticated | Refused:
        """Take the peer's first frame: :class:`Authenticated` for a hello that verifies, else
        the :class:`Refused` decision (see the table at the top of the module). Raises
        :class:`UsageError` once the handshake has got past the hello."""
        if self.state is NodeState.START:
            return self._refuse(Error("auth_failed", "hello before challenge"), CloseCode.AUTH_FAILED)
        self._expect(NodeState.CHALLENGED, "receive")
        assert self._challenge is not None
        try:
            frame = decode_frame(data, max_size=self.limits.max_frame_size, max_messages=HANDSHAKE_MESSAGES)
        except UnsupportedVersion as exc:
            return self._refuse(Error.of(exc), CloseCode.UNSUPPORTED_VERSION)
        except KintsugiError as exc:
            return self._refuse(Error.of(exc), CloseCode.PROTOCOL_ERROR)
        hello = frame.messages[0] if len(frame.messages) == 1 else None
        if not isinstance(hello, Hello):
            return self._refuse(Error("auth_failed", "expected hello"), CloseCode.AUTH_FAILED)
        if not verify_signature(hello.account, hello_message(self._challenge.nonce, self.name), hello.sig):
            return self._refuse(
                Error("auth_failed", "hello signature does not verify"), CloseCode.AUTH_FAILED, forged=True
            )
        self.state = NodeState.AUTHENTICATED
        self._authenticated = Authenticated(hello, hello.account in self.admins)
        return self._authenticated

    def admit(self, held: int) -> Welcomed | Refused:
        """Welcome the authenticated account, which already holds ``held`` connections to this
        node, or refuse it with ``too_many_connections`` (4409) at
        ``max_connections_per_account``. Raises :class:`UsageError` unless AUTHENTICATED."""
        self._expect(NodeState.AUTHENTICATED, "admit")
        assert self._authenticated is not None
        limit = self.limits.max_connections_per_account
        if held >= limit:
            return self._refuse(
                Error("too_many_connections", f"at most {limit}"),
                CloseCode.TOO_MANY_CONNECTIONS,
                reason="too many connections",
            )
        self.state = NodeState.WELCOMED
        return Welcomed(self._authenticated.admin)

    def _refuse(self, error: Error, code: int, *, reason: str = "", forged: bool = False) -> Refused:
        self.state = NodeState.REFUSED
        return Refused(error, code, reason or error.code, forged)

    def _expect(self, state: NodeState, what: str) -> None:
        if self.state is not state:
            raise UsageError(f"node handshake: {what} in state {self.state.value}")


# -- peer side -----------------------------------------------------------------------------------


class PeerState(enum.Enum):
    START = "start"
    HELLO_SENT = "hello_sent"
    WELCOMED = "welcomed"
    FAILED = "failed"


class PeerHandshake:
    """The peer's side (client, node link or inspector) of one connection's handshake.

    ``key`` signs the hello; ``role`` is one of :attr:`Hello.ROLES` (:class:`UsageError`
    otherwise); ``limits`` gives ``max_frame_size``; ``version`` (the engine's) and
    ``features`` are announced in the hello.
    """

    def __init__(
        self,
        key: AccountKey,
        role: str,
        *,
        limits: Limits,
        version: str,
        features: tuple[str, ...] = FEATURES,
    ) -> None:
        if role not in Hello.ROLES:
            raise UsageError(f"role must be one of {Hello.ROLES}")
        self.key = key
        self.role = role
        self.limits = limits
        self.version = version
        self.features = features
        self.state = PeerState.START
        #: the node's challenge, once one of our protocol version arrived
        self.challenge: Challenge | None = None

    def receive(self, data: bytes) -> Challenged | Welcomed:
        """Take the node's next frame: its challenge (→ :class:`Challenged` with the hello to
        send), then its answer (→ :class:`Welcomed`).

        Raises the remote error that ends this connection (see the table at the top of the
        module): :class:`AuthFailed`, :class:`UnsupportedVersion`, another
        :class:`ProtocolError` (the code the node sent, or the decoding error's), or
        :class:`~engine.errors.InvalidCBOR`. Raises :class:`UsageError` after the handshake
        ended (welcomed or failed).
        """
        if self.state is PeerState.START:
            return self.take_challenge(data)
        return self.take_reply(data)

    def take_challenge(self, data: bytes) -> Challenged:
        """:meth:`receive` for the first frame (:class:`UsageError` in any other state)."""
        self._expect(PeerState.START, "a challenge")
        return self._fail_on_error(self._on_challenge, data)

    def take_reply(self, data: bytes) -> Welcomed:
        """:meth:`receive` for the node's answer to the hello (:class:`UsageError` in any
        other state)."""
        self._expect(PeerState.HELLO_SENT, "a reply to the hello")
        return self._fail_on_error(self._on_reply, data)

    def _expect(self, state: PeerState, what: str) -> None:
        if self.state is not state:
            raise UsageError(f"peer handshake: {what} in state {self.state.value}")

    def _fail_on_error(self, step: Callable[[bytes], _T], data: bytes) -> _T:
        try:
            return step(data)
        except KintsugiError:
            self.state = PeerState.FAILED
            raise

    def _on_challenge(self, data: bytes) -> Challenged:
        message = _decode_one(data, self.limits)
        if isinstance(message, Error):
            raise ProtocolError(message.detail, code=message.code)
        if not isinstance(message, Challenge):
            raise ProtocolError("expected a challenge from the node")
        if message.proto != PROTOCOL_VERSION:
            raise UnsupportedVersion(f"node speaks protocol {message.proto}, this client {PROTOCOL_VERSION}")
        self.challenge = message
        sig = self.key.sign(hello_message(message.nonce, message.node))
        hello = Hello(self.key.account_id, self.role, sig, self.version, self.features)
        self.state = PeerState.HELLO_SENT
        return Challenged(message, hello)

    def _on_reply(self, data: bytes) -> Welcomed:
        message = _decode_one(data, self.limits)
        if isinstance(message, Error):
            if message.code == AuthFailed.code:
                raise AuthFailed(message.detail)
            raise ProtocolError(message.detail, code=message.code)
        if not isinstance(message, Welcome):
            raise ProtocolError("expected welcome from the node")
        self.state = PeerState.WELCOMED
        return Welcomed(message.admin)
