"""Keys, hashing and signatures (DESIGN §3–4, normative).

- Hash: BLAKE2b with a 32-byte digest (stdlib ``hashlib``; same digests as libsodium's).
- Signatures: Ed25519 through PyNaCl. An :class:`AccountKey` holds the private key; its
  ``repr`` and ``str`` never show it, and key files are written with mode 0600.
- Session chain: ``h0 = H("kintsugi/session/v1" ‖ coValueID ‖ sessionID)``,
  ``h(i+1) = H(h(i) ‖ u32le(len(tx_i)) ‖ tx_i)``; checkpoint signatures cover
  ``"kintsugi/sig/v1" ‖ coValueID ‖ sessionID ‖ u64le(n) ‖ h(n)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import nacl.exceptions
import nacl.signing

from engine.errors import KeyFileError
from engine.ids import AccountID, account_id_from_public_key, account_public_key

HASH_SIZE = 32
SIGNATURE_SIZE = 64
CHAIN_DOMAIN = b"kintsugi/session/v1"
SIG_DOMAIN = b"kintsugi/sig/v1"
KEY_FILE_MAGIC = "kintsugi-account-key/v1"

_blake2b = hashlib.blake2b

#: u32le of small lengths, precomputed: the chain loop then does a list lookup instead of a
#: method call per transaction (most transactions are far smaller than this).
_LENGTHS = [n.to_bytes(4, "little") for n in range(4096)]


def hash_bytes(data: bytes) -> bytes:
    """BLAKE2b-256 of ``data``."""
    return _blake2b(data, digest_size=HASH_SIZE).digest()


def chain_base(covalue: str, session: str) -> bytes:
    """``h0`` of a session's chain: binds the chain to one CoValue and one session."""
    return _blake2b(CHAIN_DOMAIN + covalue.encode() + session.encode(), digest_size=HASH_SIZE).digest()


def chain_extend(head: bytes, txs: Iterable[bytes]) -> list[bytes]:
    """The hashes ``h(i+1)`` after each of ``txs``, starting from ``head`` = ``h(i)``.

    This is the hot loop of import and reload; it is written for speed.
    """
    out: list[bytes] = []
    append = out.append
    b2 = _blake2b
    lengths = _LENGTHS
    small = len(lengths)
    h = head
    for tx in txs:
        n = len(tx)
        h = b2(h + (lengths[n] if n < small else n.to_bytes(4, "little")) + tx, digest_size=32).digest()
        append(h)
    return out


def signed_message(covalue: str, session: str, n: int, head: bytes) -> bytes:
    return SIG_DOMAIN + covalue.encode() + session.encode() + n.to_bytes(8, "little") + head


def verify_signature(account: AccountID, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``account``'s Ed25519 signature of ``message``."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    try:
        nacl.signing.VerifyKey(account_public_key(account)).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


class AccountKey:
    """An account's Ed25519 signing key. The secret never appears in ``repr`` or logs."""

    __slots__ = ("_signing", "account_id")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing = signing_key
        self.account_id: AccountID = account_id_from_public_key(bytes(signing_key.verify_key))

    @classmethod
    def generate(cls) -> AccountKey:
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> AccountKey:
        """A deterministic key (tests, the simulator). ``seed`` has 32 bytes."""
        if len(seed) != 32:
            raise KeyFileError("a key seed has 32 bytes")
        return cls(nacl.signing.SigningKey(seed))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._signing.sign(message).signature)

    def __repr__(self) -> str:
        return f"AccountKey({self.account_id})"

    __str__ = __repr__

    # -- key files ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a new file readable only by its owner (0600), atomically: the
        file appears whole or not at all, even when the disk fills or the process dies.

        The key is written to a temporary file beside ``path`` (0600), flushed to disk
        (fsync), then linked to ``path`` (which fails if ``path`` exists, so a key is never
        overwritten) and the directory is synced. Raises :class:`KeyFileError` when ``path``
        exists or cannot be written (the temporary file is removed then).
        """
        target = Path(path)
        text = f"{KEY_FILE_MAGIC}\n{self.account_id}\n{bytes(self._signing).hex()}\n"
        if target.exists():
            raise KeyFileError(f"{target}: already exists; refusing to overwrite a key")
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                data = text.encode()
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, target)
        except FileExistsError as exc:
            raise KeyFileError(f"{target}: already exists; refusing to overwrite a key") from exc
        except OSError as exc:
            raise KeyFileError(f"{target}: cannot write the key file: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        _sync_directory(target.parent)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AccountKey:
        """Read a key file written by :meth:`save`. Raises :class:`KeyFileError`.

        The error never quotes the file's contents.
        """
        source = Path(path)
        try:
            mode = source.stat().st_mode
            text = source.read_text()
        except OSError as exc:
            raise KeyFileError(f"{source}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"{source}: not a Kintsugi key file") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{source}: readable by others; run chmod 600 on it")
        lines = text.split("\n")
        if len(lines) < 3 or lines[0] != KEY_FILE_MAGIC:
            raise KeyFileError(f"{source}: not a Kintsugi key file")
        try:
            seed = bytes.fromhex(lines[2])
        except ValueError as exc:
            raise KeyFileError(f"{source}: malformed key") from exc
        key = cls.from_seed(seed)
        if key.account_id != lines[1]:
            raise KeyFileError(f"{source}: key does not match its account id")
        return key


def _sync_directory(directory: Path) -> None:
    """fsync ``directory`` so a file just linked into it survives a power loss (best effort:
    some filesystems cannot sync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
