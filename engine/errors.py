"""Every exception the engine raises, in one place.

Each class carries a stable ``code`` (a short snake_case string). Codes travel on the wire in
``error{code}`` messages and appear in ``--json`` output, so they never change meaning; new
failures get new codes.

Hierarchy::

    KintsugiError                        base; ``code``, ``detail``
    ├── InvalidInput                     bad bytes or values from outside (peer, file, user)
    │   ├── InvalidId                    invalid_id: malformed AccountID/SessionID/CoValueID
    │   ├── InvalidCBOR                  invalid_cbor: undecodable or non-canonical CBOR
    │   │   └── IntegerTooLarge          integer_too_large: a bignum longer than the decoder takes
    │   ├── InvalidHeader                invalid_header: header fields wrong or missing
    │   ├── InvalidTransaction           invalid_transaction: a transaction that is not one
    │   ├── InvalidContent               invalid_content: content chunk that cannot apply
    │   │   └── MissingPrefix            missing_prefix: chunk starts after what we have
    │   ├── IntegrityError               signed-history failures (security relevant)
    │   │   ├── ChainError               broken_chain: hash chain does not link
    │   │   ├── SignatureError           bad_signature: checkpoint signature does not verify
    │   │   └── ForkError                fork: content diverges from our chain at ``index``
    │   ├── InvalidEnvelope              invalid_envelope: CAS slot bytes not of envelope v1
    │   ├── ProtocolError                wire-level problems (code set per instance, see protocol)
    │   │   ├── FrameTooLarge            frame_too_large: over the frame size limit
    │   │   ├── UnsupportedVersion       unsupported_version: envelope "v" not understood
    │   │   └── AuthFailed               auth_failed: the node refused this account's hello
    │   ├── KeyFileError                 key_file: unreadable or malformed account key file
    │   └── BundleError                  invalid_bundle: not a zip, no manifest, checksum mismatch
    ├── PermissionDenied                 permission_denied: local write the rules forbid
    │   └── InvalidQuotaExceeded         invalid_quota_exceeded: too many invalid writes from one account
    ├── CoValueDeleted                   deleted: the CoValue has a tombstone
    ├── UnknownCoValue                   unknown_covalue: id not in this replica
    ├── StorageError                     base of storage failures
    │   ├── StorageEnvironmentError      storage_environment: disk full, locked, I/O
    │   │   └── StorageUnavailable       storage_unavailable: no writes for now (disk full); reads go on
    │   ├── StorageBugError              storage_bug: constraint violations, misuse
    │   ├── StoreNotFound                store_not_found: no store at the given path
    │   └── SchemaVersionError           schema_too_new: store written by a newer major
    ├── KVError                          base of CAS-slot failures
    │   ├── KVAccessDenied               kv_access_denied: another account's namespace
    │   ├── CASRetriesExhausted          cas_retries_exhausted: read-modify-write gave up
    │   ├── KVBadKey                     kv_bad_key: a namespace or key a node's CAS slots refuse
    │   ├── KVValueTooLarge              kv_value_too_large: a slot value over the size limit
    │   ├── KVTooManyWatches             kv_too_many_watches: a connection's watch limit reached
    │   └── KVRefused                    kv_refused: a node refused a CAS-slot request (``reason``)
    ├── LeaseError                       lease_unavailable: could not lease a session
    ├── ConnectFailed                    connect_failed: no session with a node could be opened
    │   ├── NodeUnreachable              connection_refused: nothing accepts connections there
    │   ├── HostNotFound                 host_not_found: the host name does not resolve
    │   ├── NotANode                     not_a_node: no WebSocket, or no Kintsugi handshake, there
    │   ├── HandshakeClosed              handshake_closed: the node closed during the handshake
    │   ├── HandshakeTimeout             timeout: no completed handshake within the time given
    │   └── WrongNode                    wrong_node: the node is not one the client was told to expect
    ├── AdminRefused                     admin_refused: the node answered an admin request ok=false
    ├── ListenFailed                     listen_failed: a node cannot listen there (port in use, privileges)
    ├── AuditError                       audit_broken: the audit log does not verify
    └── RecoveryError                    recovery_failed: a REPLACE recovery stopped; nothing changed
        └── RecoveryAborted              recovery_aborted: cancelled, or the peer went away mid-way

Misuse of the API (calling a closed node, say) raises ``UsageError``, which also inherits
``RuntimeError`` because it is a bug in the caller, not a condition to handle.
"""

from __future__ import annotations

__all__ = [
    "AdminRefused",
    "AuditError",
    "AuthFailed",
    "BundleError",
    "CASRetriesExhausted",
    "ChainError",
    "CoValueDeleted",
    "ConnectFailed",
    "ForkError",
    "FrameTooLarge",
    "HandshakeClosed",
    "HandshakeTimeout",
    "HostNotFound",
    "IntegerTooLarge",
    "IntegrityError",
    "InvalidCBOR",
    "InvalidContent",
    "InvalidEnvelope",
    "InvalidHeader",
    "InvalidId",
    "InvalidInput",
    "InvalidQuotaExceeded",
    "InvalidTransaction",
    "KVAccessDenied",
    "KVBadKey",
    "KVError",
    "KVRefused",
    "KVTooManyWatches",
    "KVValueTooLarge",
    "KeyFileError",
    "KintsugiError",
    "LeaseError",
    "ListenFailed",
    "MissingPrefix",
    "NodeUnreachable",
    "NotANode",
    "PermissionDenied",
    "ProtocolError",
    "RecoveryAborted",
    "RecoveryError",
    "SchemaVersionError",
    "SignatureError",
    "StorageBugError",
    "StorageEnvironmentError",
    "StorageError",
    "StorageUnavailable",
    "StoreNotFound",
    "UnknownCoValue",
    "UnsupportedVersion",
    "UsageError",
    "WrongNode",
]


class KintsugiError(Exception):
    """Base of all engine errors. ``code`` is stable; ``detail`` is for humans."""

    code = "error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        """The error as it appears in ``--json`` output and ``error`` messages."""
        return {"code": self.code, "detail": self.detail}


class UsageError(KintsugiError, RuntimeError):
    """The API was used wrongly (a bug in the caller)."""

    code = "usage"


class InvalidInput(KintsugiError):
    """Bytes or values from outside that do not satisfy the format or the rules."""

    code = "invalid_input"


class InvalidId(InvalidInput):
    code = "invalid_id"


class InvalidCBOR(InvalidInput):
    code = "invalid_cbor"


class InvalidHeader(InvalidInput):
    code = "invalid_header"


class InvalidTransaction(InvalidInput):
    code = "invalid_transaction"


class InvalidContent(InvalidInput):
    """A content chunk for a session that cannot be applied as given."""

    code = "invalid_content"


class MissingPrefix(InvalidContent):
    """A chunk starts after the end of what this replica holds (``have`` < ``after``)."""

    code = "missing_prefix"

    def __init__(self, session: str, have: int, after: int) -> None:
        super().__init__(f"{session}: chunk starts at {after} but only {have} held")
        self.session = session
        self.have = have
        self.after = after


class IntegrityError(InvalidInput):
    """Signed history that does not verify. Always logged as a security event."""

    code = "integrity"


class ChainError(IntegrityError):
    """The hash chain of ``session`` does not link at ``index``."""

    code = "broken_chain"

    def __init__(self, session: str, index: int, reason: str) -> None:
        super().__init__(f"{session}@{index}: {reason}")
        self.session = session
        self.index = index
        self.reason = reason


class SignatureError(IntegrityError):
    """The checkpoint signature of ``session`` at ``index`` does not verify."""

    code = "bad_signature"

    def __init__(self, session: str, index: int, reason: str = "signature does not verify") -> None:
        super().__init__(f"{session}@{index}: {reason}")
        self.session = session
        self.index = index
        self.reason = reason


class ForkError(IntegrityError):
    """Content for ``session`` that diverges from the local chain at ``index``."""

    code = "fork"

    def __init__(self, session: str, index: int) -> None:
        super().__init__(f"{session} diverges at index {index}")
        self.session = session
        self.index = index


class InvalidEnvelope(InvalidInput):
    code = "invalid_envelope"


class ProtocolError(InvalidInput):
    """A frame or message that breaks the wire protocol. ``code`` may be set per instance."""

    code = "invalid_message"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail)
        if code is not None:
            self.code = code


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"

    def __init__(self, size: int, max_size: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {max_size}-byte limit")
        self.size = size
        self.max_size = max_size


class UnsupportedVersion(ProtocolError):
    code = "unsupported_version"


class AuthFailed(ProtocolError):
    """The node refused this account's hello (``error{auth_failed}``)."""

    code = "auth_failed"


class KeyFileError(InvalidInput):
    code = "key_file"


class BundleError(InvalidInput):
    """A file given as a diagnostic bundle is not a readable one: not a zip archive, no
    Kintsugi manifest, a format newer than this build reads, or a member whose sha256 does
    not match the manifest (``problem`` says which, in a word: ``not_a_zip``,
    ``no_manifest``, ``too_new``, ``checksum``, ``damaged``)."""

    code = "invalid_bundle"

    def __init__(self, detail: str, problem: str = "damaged") -> None:
        super().__init__(detail)
        self.problem = problem


class PermissionDenied(KintsugiError):
    """A local write that the owner group's rules would make invalid."""

    code = "permission_denied"


class CoValueDeleted(KintsugiError):
    code = "deleted"


class UnknownCoValue(KintsugiError):
    code = "unknown_covalue"


class StorageError(KintsugiError):
    code = "storage"


class StorageEnvironmentError(StorageError):
    """The environment failed (disk full, database locked, I/O error): may pass on retry."""

    code = "storage_environment"


class StorageBugError(StorageError):
    """The store was used wrongly or holds what our own code should never have written."""

    code = "storage_bug"


class StoreNotFound(StorageError):
    """There is no store at the path given (opened read-only, so none was created)."""

    code = "store_not_found"


class SchemaVersionError(StorageError):
    """The store's schema major version is newer than this program understands."""

    code = "schema_too_new"


class KVError(KintsugiError):
    code = "kv"


class KVAccessDenied(KVError):
    code = "kv_access_denied"


class CASRetriesExhausted(KVError):
    """A read-modify-write lost the race ``attempts`` times in a row on ``key``."""

    code = "cas_retries_exhausted"

    def __init__(self, key: str, attempts: int) -> None:
        super().__init__(f"{key}: gave up after {attempts} conflicting attempts")
        self.key = key
        self.attempts = attempts


class KVBadKey(KVError):
    """A namespace or key a node's CAS slots refuse: an empty namespace, more than
    ``engine.kv.store.MAX_KEY_LENGTH`` characters, or a NUL character."""

    code = "kv_bad_key"


class KVValueTooLarge(KVError):
    """A slot value whose CBOR payload is over ``engine.kv.envelope.MAX_SLOT_VALUE_SIZE``."""

    code = "kv_value_too_large"


class KVTooManyWatches(KVError):
    """A connection already holds the most ``kv_watch`` a node keeps for one connection."""

    code = "kv_too_many_watches"


class KVBusy(KVError):
    """A node has as many CAS-slot requests waiting for its store as it keeps waiting
    (``engine.net.kv_worker.MAX_KV_WAITING``); nothing was done: ask again."""

    code = "kv_busy"


class KVRefused(KVError):
    """A node refused a CAS-slot request with ``kv_error{code}`` for a code that has no class
    of its own here (``storage_unavailable``, ``invalid_message``, ...); ``reason`` is it."""

    code = "kv_refused"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{f': {detail}' if detail and detail != reason else ''}")
        self.reason = reason


class LeaseError(KintsugiError):
    code = "lease_unavailable"


class ConnectFailed(KintsugiError):
    """No session with the node at ``url`` could be opened (the subclasses say why)."""

    code = "connect_failed"

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(detail)
        self.url = url


class NodeUnreachable(ConnectFailed):
    """Nothing accepts connections at ``url`` (refused, unknown host, network down)."""

    code = "connection_refused"


class HostNotFound(ConnectFailed):
    """The host name of ``url`` does not resolve (a DNS failure, not a refused connection)."""

    code = "host_not_found"


class NotANode(ConnectFailed):
    """Something answers at ``url`` but not a WebSocket, or not the Kintsugi handshake."""

    code = "not_a_node"


class HandshakeClosed(ConnectFailed):
    """The node closed the connection during the handshake without saying why in an
    ``error`` message. ``close_code`` is the WebSocket close code it sent (None: none, the
    connection just dropped); ``reason`` its close reason."""

    code = "handshake_closed"

    def __init__(self, url: str, close_code: int | None, reason: str = "") -> None:
        what = f"close code {close_code}" if close_code is not None else "no close code"
        if reason:
            what += f": {reason}"
        super().__init__(url, f"{url} closed the connection during the handshake ({what})")
        self.close_code = close_code
        self.reason = reason


class HandshakeTimeout(ConnectFailed):
    """The handshake with ``url`` did not complete within ``seconds``."""

    code = "timeout"

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__(url, f"{url} did not complete the handshake within {seconds:g} s")
        self.seconds = seconds


class WrongNode(ConnectFailed):
    """The node at ``url`` announced itself as ``actual``, which is none of the node names
    the client was told to expect (``expected``): it is not signed a hello."""

    code = "wrong_node"

    def __init__(self, url: str, expected: tuple[str, ...], actual: str) -> None:
        super().__init__(url, f"{url} is node {actual}, not one of the expected nodes ({', '.join(expected)})")
        self.expected = expected
        self.actual = actual


class AdminRefused(KintsugiError):
    """The node answered the admin request ``op`` with ``ok: false``. ``reason`` is the stable
    code the node gave (``permission_denied``, ``kv_access_denied``, ``invalid_message``, ...)."""

    code = "admin_refused"

    def __init__(self, op: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{op}: {reason}{f' ({detail})' if detail and detail != reason else ''}")
        self.op = op
        self.reason = reason


class AuditError(KintsugiError):
    """An audit log record was edited, removed, reordered or signed by someone else; the
    detail names the first record that does not verify."""

    code = "audit_broken"


class RecoveryError(KintsugiError):
    """A REPLACE recovery (DESIGN §7.2) could not be completed; nothing was changed."""

    code = "recovery_failed"


class RecoveryAborted(RecoveryError):
    """The recovery was cancelled, timed out, or the peer went away before every page
    arrived; nothing was changed, and a retry starts a fresh exchange."""

    code = "recovery_aborted"


class IntegerTooLarge(InvalidCBOR):
    """A CBOR bignum longer than the decoder accepts (:data:`engine.codec.MAX_BIGNUM_BYTES`);
    refused while decoding, before anything formats or computes with it."""

    code = "integer_too_large"

    def __init__(self, size: int, max_size: int) -> None:
        super().__init__(f"a {size}-byte bignum exceeds the {max_size}-byte integer limit")
        self.size = size
        self.max_size = max_size


class StorageUnavailable(StorageEnvironmentError):
    """The store cannot take writes now (its disk is full; on a node with background commits,
    also while its commits fail for any other reason of the environment); reads go on, and
    writes resume by themselves once a commit succeeds again."""

    code = "storage_unavailable"


class InvalidQuotaExceeded(PermissionDenied):
    """An account sent more transactions that were invalid on arrival (no role that lets it
    write) than a node keeps for one account; the excess is not stored."""

    code = "invalid_quota_exceeded"


class ListenFailed(KintsugiError):
    """A node could not listen where it was told (the port is in use, or needs privileges)."""

    code = "listen_failed"
