"""Child process for the held-commit store test: ``python _held_child.py STORE KEYFILE COMAP MODE``.

Opens a LocalNode on a :class:`~engine.demo.held.HeldStore` over the store (leasing a
session), sets ``kept`` in the CoMap (stored at once), holds commits, sets ``held`` (kept in
memory only) and prints ``{"session": ..., "held": writes held}``. With MODE ``close`` it then
closes the node (which writes what is held) and prints ``{"closed": true}``. Either way it
then waits to be killed.
"""

from __future__ import annotations

import json
import sys
import time

from engine.crypto import AccountKey
from engine.demo.held import HeldStore
from engine.ids import CoValueID
from engine.node.facade import LocalNode
from engine.storage import open_store


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(store: str, key_file: str, covalue: str, mode: str) -> None:
    held = HeldStore(open_store(store, writer="held-child"))
    node = LocalNode.open(held, AccountKey.load(key_file), instance_id="held-child")
    doc = CoValueID(covalue)
    node.set(doc, "kept", 1)
    held.hold()
    node.set(doc, "held", 2)
    emit(session=node.session, held=held.held_writes)
    if mode == "close":
        node.close()
        emit(closed=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(*sys.argv[1:])
