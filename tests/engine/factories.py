"""Deterministic building blocks for engine tests: accounts, sessions, groups, CoMaps, logs.

Everything here is derived from fixed seeds, so a failing example replays bit for bit:
accounts come from :meth:`AccountKey.from_seed`, session ids from a hash of the account and
a number, headers carry a fixed ``uniqueness``. Nothing here asserts; tests do.

Typical use::

    alice, bob = account(1), account(2)
    group = make_group(alice)
    doc = make_comap(group)
    wire(group, doc)                       # doc.resolve finds group
    set_role(group, alice, bob.account_id, "writer", made_at=T0)
    write(doc, bob, 10, made_at=T0 + 1, batch=4)   # checkpoints at 4, 8, 10
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import base58
from hypothesis import strategies as st

from engine.covalue import ApplyReport, CoValueCore
from engine.crypto import AccountKey, chain_base, chain_extend, hash_bytes, signed_message
from engine.ids import AccountID, CoValueID, SessionID, covalue_id_from_digest
from engine.model.header import GroupRuleset, Header, OwnedByGroup, UnsafeAllowAll
from engine.model.session_log import Chunk, SessionLog
from engine.model.transaction import encode_transaction
from engine.node.revocations import held_writes

#: A fixed "now" (ms since the epoch) that tests count from.
T0 = 1_700_000_000_000


# -- identities ------------------------------------------------------------------------------


def seed(n: int) -> bytes:
    """The 32-byte key seed of test account ``n``."""
    return hashlib.blake2b(b"kintsugi-test-account/%d" % n, digest_size=32).digest()


def account(n: int) -> AccountKey:
    """Test account ``n``: the same key on every run."""
    return AccountKey.from_seed(seed(n))


def _b58(data: bytes) -> str:
    return base58.b58encode(data).decode("ascii")


def session(who: AccountKey | AccountID, n: int = 0) -> SessionID:
    """Active session ``n`` of ``who`` (deterministic)."""
    acc = who.account_id if isinstance(who, AccountKey) else who
    raw = hashlib.blake2b(f"{acc}/session/{n}".encode(), digest_size=8).digest()
    return SessionID(f"{acc}_session_z{_b58(raw)}")


def delete_session(who: AccountKey | AccountID, n: int = 0) -> SessionID:
    """Delete session ``n`` of ``who`` (deterministic)."""
    acc = who.account_id if isinstance(who, AccountKey) else who
    raw = hashlib.blake2b(f"{acc}/delete/{n}".encode(), digest_size=7).digest()
    return SessionID(f"{acc}_session_d{_b58(raw)}$")


def covalue_id(tag: str = "x") -> CoValueID:
    """A well-formed CoValueID that belongs to no header (for session-log tests)."""
    return covalue_id_from_digest(hash_bytes(tag.encode()))


# -- CoValues --------------------------------------------------------------------------------


def group_header(admin: AccountKey | AccountID, *, tag: str = "group", created_at: int = T0) -> Header:
    acc = admin.account_id if isinstance(admin, AccountKey) else admin
    return Header("group", GroupRuleset(acc), None, tag.encode(), created_at)


def comap_header(
    owner: CoValueCore | CoValueID | None, *, tag: str = "comap", created_at: int = T0
) -> Header:
    """A CoMap header owned by ``owner`` (a group), or ``unsafeAllowAll`` when None."""
    if owner is None:
        ruleset: Any = UnsafeAllowAll()
    else:
        ruleset = OwnedByGroup(owner.id if isinstance(owner, CoValueCore) else owner)
    return Header("comap", ruleset, None, tag.encode(), created_at)


def make_group(admin: AccountKey | AccountID, *, tag: str = "group", created_at: int = T0) -> CoValueCore:
    """A new, empty group whose initial admin is ``admin``."""
    return CoValueCore(group_header(admin, tag=tag, created_at=created_at))


def make_comap(
    owner: CoValueCore | CoValueID | None, *, tag: str = "comap", created_at: int = T0
) -> CoValueCore:
    """A new, empty CoMap owned by ``owner`` (unsafeAllowAll when None). Call :func:`wire`."""
    return CoValueCore(comap_header(owner, tag=tag, created_at=created_at))


def wire(*cores: CoValueCore) -> dict[CoValueID, CoValueCore]:
    """Make ``cores`` one replica: each core's resolver finds the others by id.

    Returns the registry; adding to it later makes the new core resolvable too.
    """
    registry: dict[CoValueID, CoValueCore] = {core.id: core for core in cores}
    for core in cores:
        core.resolve = registry.get
    return registry


# -- writing ---------------------------------------------------------------------------------


def set_role(
    group: CoValueCore,
    admin: AccountKey,
    member: AccountKey | AccountID,
    role: str,
    *,
    made_at: int,
    sid: SessionID | None = None,
    keeping: Iterable[CoValueCore] = (),
) -> None:
    """``admin`` gives ``member`` ``role`` in ``group`` at ``made_at`` (one signed transaction).

    A demotion records what ``keeping`` (CoValues of the group) hold of ``member``'s writes,
    as a replica holding them would (docs/protocol.md "Group authority"): those stay valid.
    """
    acc = member.account_id if isinstance(member, AccountKey) else member
    kept = held_writes(keeping, None, group.id, acc) if role != "admin" else None
    group.add_local(sid or session(admin), [["role", acc, role]], made_at, kept)
    group.sign_pending(admin)


def default_changes(i: int) -> list[list[Any]]:
    """The ``i``-th edit :func:`write` makes by default: set key ``k<i mod 5>`` to ``i``."""
    return [["set", f"k{i % 5}", i]]


def write(
    core: CoValueCore,
    key: AccountKey,
    count: int,
    *,
    sid: SessionID | None = None,
    made_at: int = T0,
    batch: int = 1,
    changes: Callable[[int], list[list[Any]]] = default_changes,
) -> SessionID:
    """Write ``count`` transactions with ``add_local``, signing every ``batch`` of them.

    Transaction ``i`` is made at ``made_at + i`` with ``changes(i)``. The last batch may be
    shorter; everything written is signed on return. Returns the session written to.
    """
    target = sid or session(key)
    for i in range(count):
        core.add_local(target, changes(i), made_at + i)
        if (i + 1) % batch == 0:
            core.sign_pending(key)
    core.sign_pending(key)
    return target


def tx(made_at: int, *changes: list[Any]) -> bytes:
    """One encoded transaction (``["set", "k", 1]`` when no change is given)."""
    return encode_transaction(made_at, list(changes) or [["set", "k", 1]])


def signed_log(
    covalue: CoValueID,
    key: AccountKey,
    txs: Sequence[bytes],
    checkpoints: Iterable[int],
    *,
    sid: SessionID | None = None,
) -> SessionLog:
    """A log of ``txs`` signed by ``key`` at each count in ``checkpoints`` (and at the end)."""
    log = SessionLog(covalue, sid or session(key))
    marks = set(checkpoints) | {len(txs)}
    for i, data in enumerate(txs, start=1):
        log.append_pending(data)
        if i in marks:
            log.sign(key)
    return log


def deliver(
    core: CoValueCore,
    key: AccountKey,
    txs: Sequence[bytes],
    *,
    sid: SessionID | None = None,
    checkpoints: Iterable[int] = (),
) -> ApplyReport:
    """Apply ``txs``, written elsewhere by ``key`` in ``sid``, to ``core`` as received content.

    This bypasses the local-write checks of ``add_local``: use it for transactions another
    replica made (or a misbehaving writer signed). When ``core`` already holds ``sid``, the
    new transactions continue it; ``checkpoints`` are counts within ``txs`` (1-based) where a
    signature is added besides the one at the end.
    """
    target = sid or session(key)
    held = core.sessions.get(target)
    existing = list(held.txs) if held is not None else []
    marks = set(held.sigs if held is not None else ()) | {len(existing) + c for c in checkpoints}
    log = signed_log(core.id, key, [*existing, *txs], marks, sid=target)
    return core.apply_content({target: log.chunk(len(existing))})


def chunks_of(core: CoValueCore) -> dict[SessionID, Chunk]:
    """Every signed session of ``core`` from 0: what a full content message would carry."""
    return {sid: log.chunk() for sid, log in core.sessions.items() if log.signed_count}


def replica_of(core: CoValueCore, *groups: CoValueCore) -> CoValueCore:
    """A fresh replica of ``core`` holding all its signed sessions; it resolves ``groups``."""
    copy = CoValueCore(core.header, core.id)
    copy.resolve = {g.id: g for g in groups}.get
    copy.apply_content(chunks_of(core))
    return copy


def snapshot(core: CoValueCore) -> tuple[Any, ...]:
    """Everything observable about ``core``'s sessions, to compare before and after."""
    logs: Mapping[SessionID, SessionLog] = core.sessions
    return (
        core.known_state(),
        core.deleted,
        {sid: (list(log.txs), list(log.hashes), dict(log.sigs)) for sid, log in logs.items()},
    )


# -- a CoMap that Bob writes (the CoValue and correction tests) -------------------------------

#: The cast of :func:`setup_doc`: ALICE is admin, BOB and DAVE write, CAROL reads.
ALICE, BOB, CAROL, DAVE = account(1), account(2), account(3), account(4)
#: BOB's session in the shared CoMap.
BOB_SESSION = session(BOB)


def setup_doc() -> tuple[CoValueCore, CoValueCore]:
    """ALICE admin; BOB and DAVE writers, CAROL reader (all from T0); a CoMap they share."""
    group = make_group(ALICE)
    set_role(group, ALICE, BOB, "writer", made_at=T0)
    set_role(group, ALICE, DAVE, "writer", made_at=T0)
    set_role(group, ALICE, CAROL, "reader", made_at=T0)
    doc = make_comap(group)
    wire(group, doc)
    return group, doc


def bob_tx(i: int, tag: str = "mine") -> bytes:
    """BOB's ``i``-th edit: set ``<tag><i>`` to ``i`` at ``T0 + 1 + i``."""
    return tx(T0 + 1 + i, ["set", f"{tag}{i}", i])


def bob_log(doc: CoValueCore, txs: list[bytes], checkpoints: list[int]) -> SessionLog:
    """``txs`` as BOB's session of ``doc``, signed at ``checkpoints`` and at the end."""
    return signed_log(doc.id, BOB, txs, checkpoints, sid=BOB_SESSION)


def forged(doc: CoValueCore, sid: SessionID, txs: list[bytes], signer: AccountKey, after: int = 0) -> Chunk:
    """A chunk for ``sid`` (continuing ``doc``'s copy at ``after``) signed by ``signer``."""
    held = doc.sessions[sid].hash_at(after) if sid in doc.sessions else chain_base(doc.id, sid)
    head = chain_extend(held, txs)[-1]
    end = after + len(txs)
    return Chunk(after, txs, {end: signer.sign(signed_message(doc.id, sid, end, head))})


def deleted_doc() -> tuple[CoValueCore, CoValueCore, dict[SessionID, Chunk]]:
    """A CoMap with BOB's and DAVE's sessions, then deleted by ALICE (admin) locally; also
    every chunk it held before."""
    group, doc = setup_doc()
    write(doc, BOB, 3, made_at=T0 + 1)
    write(doc, DAVE, 2, made_at=T0 + 1)
    old = chunks_of(doc)
    doc.delete(ALICE, delete_session(ALICE), T0 + 10)
    return group, doc, old


# -- hypothesis strategies -------------------------------------------------------------------


def cbor_scalars(*, allow_nan: bool = False) -> st.SearchStrategy[Any]:
    """CBOR-able leaves: null, booleans, negative and big integers, floats, unicode, bytes."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**64) - 5, max_value=2**64 + 5),
        st.integers(min_value=-30, max_value=30),
        st.floats(allow_nan=allow_nan),
        st.text(max_size=12),
        st.binary(max_size=12),
    )


#: Map keys of mixed CBOR types (ints of every width, text, bytes), so canonical key order
#: (length first, then bytes) is exercised across types.
CBOR_KEYS: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=-30, max_value=30),
    st.text(max_size=8),
    st.binary(max_size=6),
)


def cbor_values(*, allow_nan: bool = False, max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Nested lists and maps (mixed key types) of :func:`cbor_scalars`; lists, never tuples."""
    return st.recursive(
        cbor_scalars(allow_nan=allow_nan),
        lambda inner: st.one_of(
            st.lists(inner, max_size=5),
            st.dictionaries(CBOR_KEYS, inner, max_size=5),
        ),
        max_leaves=max_leaves,
    )
