"""Redaction for diagnostic bundles (DESIGN §10): salted deterministic tokens, salts, policy.

By default a bundle carries no user data: map keys, map values, CAS keys, CAS values and
header metadata become *tokens* — keyed BLAKE2b of the item's canonical CBOR under a secret
salt, :data:`TOKEN_BYTES` bytes shown as ``tok_<hex>``. The same item under the same salt
always gives the same token, so two bundles of one incident made with one salt file
cross-reference (the key ``tok_3fa9…`` in one is the key ``tok_3fa9…`` in the other), while
without the salt nobody can test a guess against a token. The salt never enters a bundle;
its *salt id* (a keyed hash of a constant) does, so a reader can tell whether two bundles
share a salt.

What never leaves in any form, whatever the policy: private keys, key files and tokens. The
bundle writer never reads a key file or a secret; a log line keeps its message template
(written by the engine's authors) and passes each argument through :func:`redact_arg`, which
keeps numbers and engine identifiers and tokenizes the rest.

:class:`RedactionPolicy` is what a bundle's manifest records about all this.
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine import codec
from engine.errors import InvalidCBOR, UsageError

__all__ = [
    "SALT_BYTES",
    "TOKEN_BYTES",
    "TOKEN_PREFIX",
    "Redaction",
    "RedactionPolicy",
    "Tokenizer",
    "load_or_create_salt",
    "redact_arg",
    "safe_location",
    "salt_id",
]

#: Bytes of a token's digest (at least 8: a token must not collide within an incident).
TOKEN_BYTES = 12
#: Bytes of a fresh salt; a salt file must hold at least :data:`MIN_SALT_BYTES`.
SALT_BYTES = 32
MIN_SALT_BYTES = 16
#: How a token starts (so a reader can tell a token from a value).
TOKEN_PREFIX = "tok_"
#: Bytes of the salt id written into a manifest.
SALT_ID_BYTES = 8
_SALT_ID_DOMAIN = b"kintsugi/bundle/salt-id/v1"
_TOKEN_PERSON = b"kintsugi-redact"  # BLAKE2b personalisation (at most 16 bytes)

#: Log arguments kept as they are: engine identifiers (accounts, sessions, CoValues, peer
#: ids), tokens and numbers. Everything else a log line was formatted with is tokenized.
_IDENTIFIER = re.compile(
    r"(?:acc_z|co_z)[1-9A-HJ-NP-Za-km-z]+(?:_session_(?:z[1-9A-HJ-NP-Za-km-z]+(?:![0-9]*)?|d[1-9A-HJ-NP-Za-km-z]+\$))?"
    r"|tok_[0-9a-f]+|(?:in|out):[0-9A-Za-z:._/-]{1,80}"
)


class Tokenizer:
    """Turns items into ``tok_<hex>`` under one salt. Equal items (by canonical CBOR; an
    item CBOR cannot encode by its ``repr``) give equal tokens."""

    __slots__ = ("_salt",)

    def __init__(self, salt: bytes) -> None:
        if len(salt) < MIN_SALT_BYTES:
            raise UsageError(f"a redaction salt has at least {MIN_SALT_BYTES} bytes")
        self._salt = salt

    @property
    def salt_id(self) -> str:
        return salt_id(self._salt)

    def token(self, item: Any) -> str:
        try:
            data = codec.encode(item)
        except InvalidCBOR:
            data = repr(item).encode()
        digest = hashlib.blake2b(data, digest_size=TOKEN_BYTES, key=self._salt, person=_TOKEN_PERSON)
        return TOKEN_PREFIX + digest.hexdigest()

    def __repr__(self) -> str:  # the salt never shows
        return f"Tokenizer(salt id {self.salt_id})"


class Redaction:
    """A policy with its tokenizer: :meth:`hide` is what a bundle writes for an item that is
    user data (the item itself when the policy does not redact)."""

    __slots__ = ("policy", "tokenizer")

    def __init__(self, policy: RedactionPolicy, tokenizer: Tokenizer) -> None:
        self.policy = policy
        self.tokenizer = tokenizer

    def hide(self, item: Any) -> Any:
        return self.tokenizer.token(item) if self.policy.redact else item

    def hide_text(self, text: str) -> str:
        return self.tokenizer.token(text) if self.policy.redact else text

    def describe(self) -> dict[str, Any]:
        return self.policy.describe(self.tokenizer.salt_id)


def salt_id(salt: bytes) -> str:
    """Names a salt without revealing it: equal ids mean bundles that cross-reference."""
    return hashlib.blake2b(_SALT_ID_DOMAIN, digest_size=SALT_ID_BYTES, key=salt[:64]).hexdigest()


def load_or_create_salt(path: Path | None) -> bytes:
    """The salt kept in ``path`` (hex text), created there (0600) with :data:`SALT_BYTES`
    random bytes when the file does not exist; a fresh random salt when ``path`` is None.

    Raises :class:`UsageError` for a file that holds no usable salt, :class:`OSError` when
    it cannot be read or written.
    """
    if path is None:
        return os.urandom(SALT_BYTES)
    if path.exists():
        text = path.read_text().strip()
        try:
            salt = bytes.fromhex(text)
        except ValueError:
            raise UsageError(f"{path}: a salt file holds hex text") from None
        if len(salt) < MIN_SALT_BYTES:
            raise UsageError(f"{path}: a salt has at least {MIN_SALT_BYTES} bytes")
        return salt
    salt = os.urandom(SALT_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(salt.hex() + "\n")
    return salt


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """How a bundle treats data. ``redact`` False is for tests and trusted hand-offs only
    (the CLI always redacts); ``include_content`` adds the raw transactions (the only way
    map keys and values leave in clear, because the chains hash those exact bytes)."""

    redact: bool = True
    include_content: bool = False

    def describe(self, salt_identifier: str) -> dict[str, Any]:
        """The manifest's ``redaction`` entry."""
        tokenized = ["map keys", "map values", "CAS keys", "CAS values", "header metadata", "log arguments"]
        return {
            "policy": "tokens" if self.redact else "none",
            "token": f"keyed BLAKE2b-{TOKEN_BYTES * 8} of canonical CBOR, shown as {TOKEN_PREFIX}<hex>",
            "salt_id": salt_identifier if self.redact else None,
            "tokenized": tokenized if self.redact else [],
            "content": "raw transactions included (keys and values in clear)" if self.include_content else "omitted",
            "never_included": ["private keys", "key files", "tokens", "the salt"],
        }


def redact_arg(value: Any, tokenizer: Tokenizer) -> Any:
    """A log argument as a redacted bundle keeps it: numbers, booleans, None and engine
    identifiers as they are (they are what an operator searches logs for), an enum by its
    name, anything else as its token."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    text = str(value)
    if _IDENTIFIER.fullmatch(text):
        return text
    return tokenizer.token(text)


def safe_location(location: str) -> str:
    """A target's location as a bundle may show it: a URL without user, password, query or
    fragment (a token could hide in any of them); a path as given."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
