"""Child process of the crash loop: ``python _crash_child.py STORE KEYFILE COMAP START SEED``.

Opens a LocalNode on the store (leasing a session) and prints ``{"ready": session}``. Then it
writes batches forever, numbered from START: batch ``b`` is one ``with node.batch():`` of
``n`` sets ``"{b}/{i}" = [b, i]`` for ``i < n``, where the sizes come from
:func:`batch_sizes` (SEED), so the parent knows every batch's size, printed or not. After a
batch returns (committed), it prints ``{"durable": b, "n": n}``. It never stops by itself:
the parent SIGKILLs it.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator
from itertools import count
from pathlib import Path

from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.node.facade import LocalNode

#: Sets per batch are drawn uniformly from this range.
MIN_BATCH, MAX_BATCH = 1, 300


def batch_sizes(seed: int) -> Iterator[int]:
    """The size of each successive batch of a child started with ``seed``."""
    rng = random.Random(seed)
    while True:
        yield rng.randint(MIN_BATCH, MAX_BATCH)


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main(store: str, key_file: str, covalue: str, start: str, seed: str) -> None:

    node = LocalNode.open(Path(store), AccountKey.load(key_file))
    emit(ready=node.session, instance=node.instance_id)
    doc = CoValueID(covalue)
    node.get(doc)
    for b, n in zip(count(int(start)), batch_sizes(int(seed)), strict=False):
        with node.batch():
            for i in range(n):
                node.set(doc, f"{b}/{i}", [b, i])
        emit(durable=b, n=n)


if __name__ == "__main__":
    main(*sys.argv[1:])
