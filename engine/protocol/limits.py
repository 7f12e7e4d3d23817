"""Every limit of the wire protocol and the network shell, named, defaulted and documented,
and the close codes (docs/protocol.md "Limits", "Close codes").

The layer that owns each limit checks it: frame size in :mod:`engine.protocol.frames` before
a frame is decoded; the malformed-frame budget and the rate limit in
:mod:`engine.protocol.guard`; connections per account in :mod:`engine.protocol.handshake`
(fed the shell's count); the handshake timeout, pings and outgoing queues in
:mod:`engine.net`, which owns time and sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Protocol version spoken by this build, stated as ``proto`` in the handshake's challenge
#: (the frame envelope has its own version, ``engine.protocol.frames.ENVELOPE_VERSION``).
#: 2: group authority is causal (docs/protocol.md, "Group authority (normative)").
PROTOCOL_VERSION = 2
#: Features this build announces in the handshake. ``kv``: CAS slots over the network
#: (``kv_get``, ``kv_cas``, ``kv_watch``, paged ``kv_list``; docs/protocol.md "CAS slots").
FEATURES = (
    "sync",
    "correction",
    "tombstone",
    "kv_list",
    "kv",
    "admin_list",
    "admin_peer_log",
    "admin_kv_slot",
    "admin_events",
    "admin_matrix",
    "admin_cluster",
    "recovery",
    "admin_recover",
    "admin_export",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits of one node or client. All sizes in bytes, times in seconds."""

    #: Largest frame accepted or sent. Larger incoming frames get ``error{frame_too_large}``
    #: (up to twice this size; beyond that the WebSocket layer closes with 1009).
    max_frame_size: int = 4 * 1024 * 1024
    #: Most messages in one bulk frame.
    max_messages_per_frame: int = 10_000
    #: Token bucket per connection: sustained frames per second ...
    rate_per_second: float = 500.0
    #: ... and the burst it allows.
    rate_burst: int = 1000
    #: Connections one account may hold open at once on a node.
    max_connections_per_account: int = 32
    #: Seconds a new connection has to complete the challenge/hello handshake.
    handshake_timeout: float = 10.0
    #: Seconds between WebSocket pings, and to wait for the pong.
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    #: Encoded frames waiting to be sent to one peer (more are encoded as these drain) ...
    max_queue_frames: int = 64
    #: ... and their bytes.
    max_queue_bytes: int = 16 * 1024 * 1024
    #: Messages waiting to be encoded for one peer; a peer with more is "lagged" and closed.
    max_backlog_messages: int = 100_000
    #: Seconds one send may make no progress before the peer is "lagged" and closed.
    lag_timeout: float = 30.0
    #: Malformed frames tolerated on one connection before it is closed (4400).
    max_malformed_frames: int = 8
    #: Target size of one content message: content is split at checkpoints to stay under it.
    content_budget: int = 1024 * 1024


DEFAULT_LIMITS = Limits()


#: Longest close reason, in UTF-8 bytes, that fits a WebSocket close frame (RFC 6455 §5.5).
MAX_CLOSE_REASON = 123


class CloseCode:
    """WebSocket close codes the node uses (documented in docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    #: the WebSocket layer's own code for a frame over its hard size limit
    TOO_BIG = 1009
    PROTOCOL_ERROR = 4400
    AUTH_FAILED = 4401
    HANDSHAKE_TIMEOUT = 4408
    TOO_MANY_CONNECTIONS = 4409
    LAGGED = 4412
    RATE_LIMITED = 4429
    UNSUPPORTED_VERSION = 4426


#: Connections a node holds open at once, from anyone, handshakes in progress included. One
#: more is refused before its challenge: ``error{node_full}``, then close
#: :data:`CLOSE_TRY_AGAIN_LATER`. Each connection costs about 130 KB of node memory, so the
#: default bounds that to about 130 MB.
MAX_CONNECTIONS = 1000
#: Connections one remote IP address holds open at once on a node, handshakes in progress
#: included: one host cannot take more than a quarter of :data:`MAX_CONNECTIONS` with accounts
#: it made up, while many clients behind one NAT address still fit. One more is refused before
#: its challenge: ``error{too_many_connections}``, close 4409.
MAX_CONNECTIONS_PER_ADDRESS = 256
#: Close code of a connection refused because the node holds :data:`MAX_CONNECTIONS`
#: (RFC 6455 "Try Again Later": the peer reconnects with its usual backoff).
CLOSE_TRY_AGAIN_LATER = 1013
#: Transactions invalid on arrival (their author has no role that lets it write there) that a
#: node keeps from one account, over the node's lifetime in memory. They are kept at all
#: because a role change that makes them valid may arrive later (a group's history syncs in
#: any order); the quota bounds how far a stranger who knows an id can grow a node's store.
#: Past it, such writes get ``error{invalid_quota_exceeded}`` and are not stored.
MAX_INVALID_TRANSACTIONS_PER_ACCOUNT = 10_000
