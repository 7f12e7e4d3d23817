"""Deterministic sessions and stores for the diagnostics tests (no assertions here)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import base58
import cbor2

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.ids import SessionID
from engine.model.header import Header, UnsafeAllowAll
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.storage.interface import SessionWrite
from engine.storage.sqlite.store import SQLiteStore

T0 = 1_700_000_000_000


def key(n: int) -> AccountKey:
    return AccountKey.from_seed(hashlib.blake2b(b"kintsugi-diag/%d" % n, digest_size=32).digest())


def session_of(who: AccountKey, n: int = 0, suffix: str = "") -> SessionID:
    raw = hashlib.blake2b(f"{who.account_id}/{n}".encode(), digest_size=8).digest()
    return SessionID(f"{who.account_id}_session_z{base58.b58encode(raw).decode()}{suffix}")


def comap(tag: str = "doc", meta: Any = None) -> CoValueCore:
    return CoValueCore(Header("comap", UnsafeAllowAll(), meta, tag.encode(), T0))


def fill(
    log: SessionLog, who: AccountKey, count: int, *, every: int = 100, start: int = 0, sign_tail: bool = True
) -> None:
    """Append ``count`` ``set`` transactions, signing every ``every`` (and at the end)."""
    for i in range(start, start + count):
        log.append_pending(encode_transaction(T0 + i, [["set", f"k{i % 7}", i]]))
        if log.count % every == 0:
            log.sign(who)
    if sign_tail:
        log.sign(who)


def stored(path: Path, count: int, *, every: int = 100) -> tuple[SQLiteStore, CoValueCore, SessionLog]:
    """A store holding one CoMap with one session of ``count`` transactions."""
    who = key(1)
    core = comap()
    log = SessionLog(core.id, session_of(who))
    fill(log, who, count, every=every)
    core.sessions[log.session] = log
    store = SQLiteStore(path)
    store.write([core.header], [SessionWrite(log, 0, log.signed_count)])
    return store, core, log


def tamper_tx(store: SQLiteStore, session: str, index: int, tx: bytes) -> None:
    """Replace the bytes of one stored transaction, keeping its stored hash (bit rot)."""
    sid = store.conn.execute("SELECT sid FROM sessions WHERE session = ?", (session,)).fetchone()[0]
    start, txs = store.conn.execute(
        "SELECT start, txs FROM blocks WHERE sid = ? AND start <= ? AND end > ?", (sid, index, index)
    ).fetchone()
    items = cbor2.loads(txs)
    items[index - start] = tx
    store.conn.execute("UPDATE blocks SET txs = ? WHERE sid = ? AND start = ?", (cbor2.dumps(items), sid, start))


def tamper_sig(store: SQLiteStore, session: str, n: int) -> None:
    sid = store.conn.execute("SELECT sid FROM sessions WHERE session = ?", (session,)).fetchone()[0]
    store.conn.execute("UPDATE signatures SET sig = ? WHERE sid = ? AND n = ?", (bytes(64), sid, n))


def forked_stores(
    tmp_path: Path, at: int, extra: tuple[int, int] = (600, 400)
) -> tuple[CoValueCore, SessionID, Path, Path]:
    """Two stores (``left``, ``right``) holding one CoMap whose session forked at ``at``,
    checkpoints every 100 on both (as writers' batches); each side then wrote ``extra``."""
    who = key(3)
    core = comap("forked")
    sid = session_of(who)
    paths = []
    for side, more in zip(("left", "right"), extra, strict=True):
        log = SessionLog(core.id, sid)
        fill(log, who, at, every=100, sign_tail=False)
        for i in range(more):
            log.append_pending(encode_transaction(T0 + at + i, [["set", side, i]]))
            if log.count % 100 == 0:
                log.sign(who)
        log.sign(who)
        store = SQLiteStore(tmp_path / side)
        store.write([core.header], [SessionWrite(log, 0, log.signed_count)])
        store.close()
        paths.append(tmp_path / side)
    return core, sid, paths[0], paths[1]
