"""Something to recover (DESIGN §7.2): a replica with a corrupt chain and a replica whose copy
went stale in a way sync alone does not repair, beside an *origin* that holds both CoValues
as they should be.

:func:`make_seed` writes, as Bob (a writer of the demo's group), two CoValues owned by that
group, and returns two versions of each:

- **ledger** (:data:`LEDGER_ENTRIES` entries, a checkpoint every :data:`LEDGER_BATCH`): the
  origin's copy is whole; the replica's copy has the bytes of transaction
  :data:`ROTTED_INDEX` changed while its stored hashes and signatures stayed (bit rot), so
  the replica's chain breaks there and everything after it cannot be verified. Sync never
  repairs it: the session's stored head is still the right one, so the replica advertises a
  complete copy and nobody sends it anything.
- **release**: Bob's session was rewritten on the replica (a second process reused the
  session id: a restored backup that went on writing). Both copies start with
  ``version = "v1"``; the origin's goes on with ``version = "v2"``, the replica's with a
  ``status`` edit instead. The two histories of one session conflict from index 1: sync
  sees a fork and each side keeps the copy it acknowledged first, so the replica shows v1
  forever. Only REPLACE from the origin brings v2 (the replica's divergent edit goes into
  the receipt's archive: the operator does not own Bob's session).

:func:`write_seed` puts one version into a store through the
:class:`~engine.storage.interface.Store` interface. Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.crypto import AccountKey
from engine.ids import CoValueID
from engine.model.header import Header
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.node.facade import LocalNode
from engine.storage.interface import SessionWrite, Store

__all__ = ["LEDGER_BATCH", "LEDGER_ENTRIES", "ROTTED_INDEX", "RecoverySeed", "make_seed", "write_seed"]

#: Entries in the ledger.
LEDGER_ENTRIES = 240
#: Ledger entries per write batch (one checkpoint each).
LEDGER_BATCH = 40
#: Index of the ledger transaction whose bytes rot on the replica: between two checkpoints,
#: so the replica keeps a verified prefix (up to the checkpoint before it).
ROTTED_INDEX = 130


@dataclass(frozen=True, slots=True)
class RecoverySeed:
    """The two CoValues, their headers and owner group's logs, and each CoValue's session
    as the origin holds it (``good``) and as the damaged replica holds it (``damaged``)."""

    group: CoValueID
    ledger: CoValueID
    release: CoValueID
    headers: tuple[Header, ...]
    group_logs: tuple[SessionLog, ...]
    good: tuple[SessionLog, ...]
    damaged: tuple[SessionLog, ...]

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "corrupt": self.ledger, "stale": self.release, "rotted_index": ROTTED_INDEX}


def _copy(src: LocalNode, dst: LocalNode, covalue: CoValueID) -> None:
    core = src.get(covalue)
    src.flush()
    dst.add_header(core.header)
    dst.apply_content(covalue, {sid: log.chunk() for sid, log in core.sessions.items()})


def _rotted(log: SessionLog, index: int) -> SessionLog:
    """``log`` with the bytes of transaction ``index`` changed, hashes and signatures kept."""
    out = SessionLog(log.covalue, log.session)
    out.txs.extend(log.txs[: log.signed_count])
    out.hashes.extend(log.hashes[: log.signed_count])
    out.sigs.update(log.sigs)
    out.txs[index] = encode_transaction(1, [["set", f"entry-{index}", "rotted on disk"]])
    return out


def make_seed(source: LocalNode, group: CoValueID, writer: AccountKey) -> RecoverySeed:
    """The seed, written by ``writer`` (a writer of ``group``, which ``source`` holds)."""
    bob = LocalNode(writer, instance_id="demo-recovery-writer")
    _copy(source, bob, group)
    ledger = bob.create_map(group, meta={"name": "ledger"})
    for start in range(0, LEDGER_ENTRIES, LEDGER_BATCH):
        with bob.batch():
            for i in range(start, min(start + LEDGER_BATCH, LEDGER_ENTRIES)):
                bob.set(ledger.id, f"entry-{i}", {"amount": i * 7 % 100, "by": "bob"})
    release = bob.create_map(group, meta={"name": "release"})
    bob.set(release.id, "version", "v1")
    bob.flush()
    twin = LocalNode(writer, session=bob.session, instance_id="demo-recovery-twin")
    for cid in (group, release.id):
        _copy(bob, twin, cid)
    twin.set(release.id, "status", "v1 is still served here")
    twin.flush()
    bob.set(release.id, "version", "v2")
    bob.flush()
    ledger_log = bob.get(ledger.id).sessions[bob.session]
    group_core = bob.get(group)
    return RecoverySeed(
        group,
        ledger.id,
        release.id,
        (group_core.header, ledger.header, release.header),
        tuple(group_core.sessions.values()),
        (ledger_log, bob.get(release.id).sessions[bob.session]),
        (_rotted(ledger_log, ROTTED_INDEX), twin.get(release.id).sessions[bob.session]),
    )


def write_seed(store: Store, seed: RecoverySeed, logs: Iterable[SessionLog]) -> None:
    """Write the seed's headers, its group and ``logs`` (``seed.good`` or ``seed.damaged``)
    into ``store`` in one transaction."""
    every: Sequence[SessionLog] = [*seed.group_logs, *logs]
    store.write(headers=seed.headers, sessions=[SessionWrite(log, 0, log.signed_count) for log in every])
