"""Write a store holding one CoMap with one session of N signed transactions (checkpoints
every 1,000, as a local writer's batches), fast: ``python _big_store.py PATH N``.

Run as its own process, so the memory it takes (every transaction, in one log) never counts
against the process whose memory a test measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.ids import new_session_id
from engine.model.header import Header, UnsafeAllowAll
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.storage import open_store
from engine.storage.interface import SessionWrite

#: Transactions per checkpoint.
BATCH = 1000
T0 = 1_700_000_000_000


def main(path: Path, n: int) -> None:
    key = AccountKey.from_seed(bytes(range(32)))
    core = CoValueCore(Header("comap", UnsafeAllowAll(), {"name": "big"}, b"big", T0))
    log = SessionLog(core.id, new_session_id(key.account_id))
    for i in range(n):
        log.append_pending(encode_transaction(T0 + i, [["set", f"k{i % 1000}", i]]))
        if log.count % BATCH == 0:
            log.sign(key)
    log.sign(key)
    store = open_store(path, synchronous="OFF")
    store.write([core.header], [SessionWrite(log, 0, log.signed_count)])
    store.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
