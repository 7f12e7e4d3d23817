"""Child process that replaces a forked session and then waits to be killed.

``python _replace_child.py STORE KEYFILE CHUNKFILE COMAP SESSION``: opens a LocalNode on the
store (whose only released lease is SESSION, so it leases that session back), loads the
CoMap, prints ``{"ready": session, "instance": id}``, then ``{"replacing": true}`` right
before ``node.replace_session(COMAP, SESSION, chunk)`` and ``{"replaced": new session,
"conflict": conflict session}`` after it. Then it sleeps until the parent kills it; it never
closes the node (closing would release the lease).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from engine.crypto import AccountKey
from engine.ids import CoValueID, SessionID
from engine.node.facade import LocalNode
from tests.engine._fork import load_chunk


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(store: str, key_file: str, chunk_file: str, covalue: str, session: str) -> None:

    node = LocalNode.open(Path(store), AccountKey.load(key_file))
    chunk = load_chunk(Path(chunk_file))
    doc = CoValueID(covalue)
    node.get(doc)
    emit(ready=node.session, instance=node.instance_id)
    emit(replacing=True)
    outcome = node.replace_session(doc, SessionID(session), chunk)
    emit(replaced=node.session, conflict=outcome.conflict_session)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(*sys.argv[1:])
