"""Handshake messages (DESIGN §6, normative): ``challenge``, ``hello``, ``welcome``.

Rules this module keeps:

- ``challenge{node, nonce, proto, version, features}``: the nonce is exactly
  :data:`NONCE_SIZE` bytes; ``proto`` is the protocol version the node speaks.
- ``hello{account, role, sig, version, features}``: ``role`` is one of :attr:`Hello.ROLES`,
  ``sig`` a 64-byte Ed25519 signature of :func:`hello_message` by ``account``.
- ``welcome{admin}``: ``admin`` is a boolean.
- What a hello signs starts with the domain tag :data:`HELLO_DOMAIN`, so a signature made
  for a node's nonce is never valid for anything else the account signs.

The exchange itself (who sends what when, and what a refusal closes with) is the state
machine in :mod:`engine.protocol.handshake`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.crypto import SIGNATURE_SIZE
from engine.ids import AccountID, parse_account_id
from engine.protocol.messages.base import Message, exact_keys, features_field, need, nonneg_int, text_field

__all__ = ["HELLO_DOMAIN", "NONCE_SIZE", "Challenge", "Hello", "Welcome", "hello_message"]

#: Bytes of the nonce in a challenge (fresh per connection).
NONCE_SIZE = 32
#: Domain tag at the start of what a hello signs.
HELLO_DOMAIN = b"kintsugi/hello/v1"


@dataclass(frozen=True, slots=True)
class Challenge(Message):
    """The node's opening: its name, a fresh nonce, its protocol version, engine version and
    features."""

    T: ClassVar[str] = "challenge"
    node: str
    nonce: bytes
    proto: int
    version: str
    features: tuple[str, ...] = ()

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "node": self.node,
            "nonce": self.nonce,
            "proto": self.proto,
            "version": self.version,
            "features": list(self.features),
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Challenge:
        exact_keys(obj, {"node", "nonce", "proto", "version", "features"})
        nonce = obj["nonce"]
        need(isinstance(nonce, bytes) and len(nonce) == NONCE_SIZE, f"nonce must be {NONCE_SIZE} bytes")
        return cls(
            text_field(obj, "node"), nonce, nonneg_int(obj, "proto"), text_field(obj, "version"), features_field(obj)
        )


def hello_message(nonce: bytes, node: str) -> bytes:
    """What a hello signs: a domain tag, the node's nonce and the node's name.

    The domain tag keeps a hostile node from choosing a nonce that makes the signature valid
    for anything else (a chain checkpoint, say).
    """
    return HELLO_DOMAIN + nonce + node.encode()


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """The peer's answer to a challenge: who it is, as what, and its signature of the
    challenge (:func:`hello_message`)."""

    T: ClassVar[str] = "hello"
    account: AccountID
    role: str
    sig: bytes
    version: str
    features: tuple[str, ...] = ()

    ROLES: ClassVar[tuple[str, ...]] = ("client", "node", "inspector")

    def to_obj(self) -> dict[str, Any]:
        return {
            "t": self.T,
            "account": self.account,
            "role": self.role,
            "sig": self.sig,
            "version": self.version,
            "features": list(self.features),
        }

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Hello:
        exact_keys(obj, {"account", "role", "sig", "version", "features"})
        need(obj["role"] in cls.ROLES, f"role must be one of {cls.ROLES}")
        need(isinstance(obj["sig"], bytes) and len(obj["sig"]) == SIGNATURE_SIZE, "sig must be 64 bytes")
        return cls(
            parse_account_id(obj["account"]), obj["role"], obj["sig"], text_field(obj, "version"), features_field(obj)
        )


@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """The node accepted the hello; ``admin`` says whether the account may use admin ops."""

    T: ClassVar[str] = "welcome"
    admin: bool

    def to_obj(self) -> dict[str, Any]:
        return {"t": self.T, "admin": self.admin}

    @classmethod
    def from_obj(cls, obj: dict[str, Any]) -> Welcome:
        exact_keys(obj, {"admin"})
        need(isinstance(obj["admin"], bool), "admin must be a boolean")
        return cls(obj["admin"])
