"""The demo scenario: a store with something real to inspect and repair (DESIGN §11).

:func:`build_demo` writes into one store (the "node" replica, Alice's account):

- a group "Demo team" with Alice (admin), Bob (writer) and Carol (reader);
- CoMaps "todo" and "notes" with a few thousand edits by Alice and Bob;
- a forked session: two tabs of Bob's app reuse one session id, the node keeps the copy it
  received first, the second tab receives the authoritative history and recovers: its
  divergent edits move to a conflict session (``…!``) and it continues in a new session —
  all through the engine's own fork detection and ``replace_session``; the fork point the
  tail was split at goes into the store as the conflict session's fork record (see
  :mod:`engine.model.fork`: it cannot be recomputed from the logs);
- a CoValue "scratch" that Alice deleted (a tombstone);
- CAS slots that three writers contended for (the losing attempts are in the slot history);
- something to recover (:mod:`engine.demo.repairs`), beside the demo store so that the store
  itself stays whole: ``<store>/recovery/replica``, a store whose ledger is corrupt and whose
  release is stale, and ``<store>/recovery/origin``, a store with both whole, for
  ``kintsugi node serve`` to serve and ``kintsugi recover`` (or the inspector's Recover…)
  to pull from, with Alice's key (an admin of the owner group).

Account keys are written to ``<store>/keys`` (mode 0600) so the demo can be reopened.
No network is involved: replicas exchange content through the same apply/replace calls the
sync layer uses. A demo store carries a marker checkpoint (:data:`DEMO_NAMESPACE` /
:data:`DEMO_KEY`), so preparing a fresh demo replaces an old demo store and never anything
else. The store is reached only through the :class:`~engine.storage.interface.Store`
interface.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.covalue import OutcomeStatus, SessionOutcome
from engine.crypto import AccountKey
from engine.demo.repairs import make_seed, write_seed
from engine.diagnostics.analysis import portable_errors
from engine.errors import StorageError, StoreNotFound, UsageError
from engine.ids import CoValueID, SessionID
from engine.kv.envelope import Present, Slot, Tombstone
from engine.kv.rmw import read_modify_write
from engine.kv.store import KVStore
from engine.model.fork import CONFLICT_FORK_NAMESPACE, ForkPoint, conflict_fork_key, encode_conflict_fork, fork_detail
from engine.node.facade import LocalNode
from engine.storage.opener import make_store_directory, open_store

#: Marker row (checkpoints namespace "kintsugi", key "demo") that says a store is a demo.
DEMO_NAMESPACE = "kintsugi"
DEMO_KEY = "demo"
DEFAULT_EDITS = 3000
#: Folder of a demo store that holds the stores to recover (``replica``) and from (``origin``).
RECOVERY_DIR = "recovery"

Progress = Callable[[str], None]


@dataclass(slots=True)
class DemoResult:
    store: str
    accounts: dict[str, str]
    group: CoValueID
    maps: dict[str, CoValueID]
    deleted: list[CoValueID] = field(default_factory=list)
    forks_detected: list[dict[str, Any]] = field(default_factory=list)
    conflict_sessions: list[SessionID] = field(default_factory=list)
    kv_conflicts: int = 0
    transactions: int = 0
    seconds: float = 0.0
    #: the stores to recover: ``replica``, ``origin``, ``operator_key``, ``corrupt`` and
    #: ``stale`` (CoValue ids), ``group``
    recovery: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "accounts": self.accounts,
            "group": self.group,
            "maps": self.maps,
            "deleted": self.deleted,
            "forks_detected": self.forks_detected,
            "conflict_sessions": self.conflict_sessions,
            "kv_conflicts": self.kv_conflicts,
            "transactions": self.transactions,
            "seconds": round(self.seconds, 3),
            "recovery": self.recovery,
        }


def is_demo_store(path: Path) -> bool:
    """True when ``path`` holds a store that a demo wrote (its marker checkpoint is there)."""
    try:
        store = open_store(path, readonly=True)
    except StoreNotFound:
        return False
    try:
        marker = store.get_checkpoint(DEMO_NAMESPACE, DEMO_KEY)
    except StorageError:  # an unrelated or damaged database is not a demo store
        marker = None
    finally:
        store.close()
    return marker is not None


def prepare_directory(path: Path) -> None:
    """Make ``path`` ready for a fresh demo; a previous demo store there is replaced.

    Raises :class:`UsageError` when ``path`` holds anything else, so the demo never overwrites
    a real store.
    """
    if path.exists() and any(path.iterdir()):
        if not is_demo_store(path):
            raise UsageError(f"{path} is not empty and is not a demo store; choose another --store")
        shutil.rmtree(path)
    make_store_directory(path)  # 0700, as a store makes its own directory


def replicate(src: LocalNode, dst: LocalNode, covalue: CoValueID) -> list[SessionOutcome]:
    """Send everything ``src`` holds of ``covalue`` to ``dst`` (as content messages would)."""
    core = src.get(covalue)
    src.flush()
    dst.add_header(core.header)
    report = dst.apply_content(covalue, {sid: log.chunk() for sid, log in core.sessions.items()})
    return report.outcomes


def build_demo(
    path: Path, *, edits: int = DEFAULT_EDITS, seed: int = 7, progress: Progress | None = None
) -> DemoResult:
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    rng = random.Random(seed)
    prepare_directory(path)
    keys_dir = path / "keys"
    keys_dir.mkdir(mode=0o700)
    keys = {name: AccountKey.generate() for name in ("alice", "bob", "carol")}
    for name, key in keys.items():
        key.save(keys_dir / f"{name}.key")
    alice, bob, carol = keys["alice"], keys["bob"], keys["carol"]

    node = LocalNode.open(path, alice, instance_id="demo-node")
    assert node.store is not None
    node.store.put_checkpoint(DEMO_NAMESPACE, DEMO_KEY, b"1")
    say("group and members")
    group = node.create_group(meta={"name": "Demo team"})
    node.set_role(group.id, bob.account_id, "writer")
    node.set_role(group.id, carol.account_id, "reader")
    todo = node.create_map(group.id, meta={"name": "todo"})
    notes = node.create_map(group.id, meta={"name": "notes"})
    result = DemoResult(
        str(path),
        {name: key.account_id for name, key in keys.items()},
        group.id,
        {"todo": todo.id, "notes": notes.id},
    )

    say(f"{edits} edits by Alice and Bob")
    bob_app = LocalNode(bob, instance_id="demo-bob")
    for cid in (group.id, todo.id, notes.id):
        replicate(node, bob_app, cid)
    with node.batch(), bob_app.batch():
        for i in range(edits):
            writer = node if i % 3 else bob_app
            item = f"item-{rng.randrange(200)}"
            writer.set(todo.id, item, {"title": f"task {i}", "done": rng.random() < 0.3})
            if i % 10 == 0:
                writer.set(notes.id, f"note-{rng.randrange(40)}", f"edit {i}")
    for cid in (todo.id, notes.id):
        replicate(bob_app, node, cid)

    say("a forked session: two tabs reuse one session id")
    shared = bob_app.session
    tab1 = LocalNode(bob, session=shared, instance_id="demo-tab-1")
    tab2 = LocalNode(bob, session=shared, instance_id="demo-tab-2")
    for tab in (tab1, tab2):
        for cid in (group.id, notes.id):
            replicate(node, tab, cid)
    for i in range(5):
        tab1.set(notes.id, f"tab1-{i}", "written in tab 1")
    for i in range(3):
        tab2.set(notes.id, f"tab2-{i}", "written in tab 2, kept in a conflict session")
    replicate(tab1, node, notes.id)
    for outcome in replicate(tab2, node, notes.id):
        if outcome.status is OutcomeStatus.FORK and outcome.fork_index is not None:
            origin = node.get(notes.id).sessions[outcome.session]
            fork = ForkPoint(outcome.fork_index, origin.hash_at(outcome.fork_index))
            result.forks_detected.append(
                {"covalue": notes.id, "session": outcome.session, "index": fork.index, "detail": fork_detail(fork)}
            )
            authoritative = origin.chunk(outcome.fork_index)
            repaired = tab2.replace_session(notes.id, outcome.session, authoritative)
            if repaired.conflict_session is not None:
                result.conflict_sessions.append(repaired.conflict_session)
            if repaired.conflict_session is not None and repaired.fork is not None:
                # Tab 2 split the tail off, so it alone knows where: its conflict fork record
                # goes with the conflict session into the node's store (the demo plays both).
                node.store.put_checkpoint(
                    CONFLICT_FORK_NAMESPACE,
                    conflict_fork_key(notes.id, repaired.conflict_session),
                    encode_conflict_fork(outcome.session, repaired.fork),
                )
    tab2.set(notes.id, "after-recovery", "tab 2 continues in a new session")
    replicate(tab2, node, notes.id)

    say("a deleted CoValue")
    scratch = node.create_map(group.id, meta={"name": "scratch"})
    with node.batch():
        for i in range(20):
            node.set(scratch.id, f"line-{i}", f"draft {i}")
    node.delete_covalue(scratch.id)
    result.deleted.append(scratch.id)

    say("something to recover: a corrupt and a stale replica, and their origin")
    repairs = make_seed(node, group.id, bob)
    for name, logs in (("origin", repairs.good), ("replica", repairs.damaged)):
        side = open_store(path / RECOVERY_DIR / name)
        try:
            write_seed(side, repairs, logs)
        finally:
            side.close()
    result.recovery = {
        **repairs.to_json(),
        "replica": str(path / RECOVERY_DIR / "replica"),
        "origin": str(path / RECOVERY_DIR / "origin"),
        "operator_key": str(keys_dir / "alice.key"),
    }

    say("contended CAS slots")
    result.kv_conflicts = contend_slots(path, alice.account_id)
    result.transactions = sum(node.get(cid).transaction_count() for cid in node.covalue_ids())
    node.close()
    result.seconds = time.perf_counter() - started
    return result


def contend_slots(location: str | os.PathLike[str], account: str) -> int:
    """Three writers (tabs) of the store at ``location`` update shared slots with
    read-modify-write; returns lost races."""
    stores = [open_store(location, writer=f"tab-{i}") for i in range(3)]
    kvs: list[KVStore] = [s.kv for s in stores]
    conflicts = 0
    try:
        for round_no in range(6):
            for i, kv in enumerate(kvs):
                rival = kvs[(i + 1) % 3]
                raced = False

                def merge(slot: Slot | None, *, me: int = i, rival: KVStore = rival, n: int = round_no) -> Slot:
                    nonlocal raced
                    if not raced:
                        # Another tab writes between our read and our CAS: our CAS loses once.
                        raced = True
                        read_modify_write(rival, account, "prefs/recent", lambda s: _push(s, f"tab-{(me + 1) % 3}#{n}"))
                    return _push(slot, f"tab-{me}#{n}")

                generation_before, _ = kv.get(account, "prefs/recent")
                read_modify_write(kv, account, "prefs/recent", merge)
                conflicts += 1 if generation_before else 0
        for kv in kvs:
            read_modify_write(
                kv, account, "cursor/sync", lambda s: Present((s.value if isinstance(s, Present) else 0) + 1)
            )
        gen, _ = kvs[0].get(account, "draft/old")
        kvs[0].cas(account, "draft/old", gen, Present("to be removed"))
        gen, _ = kvs[0].get(account, "draft/old")
        kvs[0].cas(account, "draft/old", gen, Tombstone(int(time.time() * 1000), account))  # type: ignore[arg-type]
        log = kvs[0].history(account, "prefs/recent")
        conflicts = sum(1 for record in log if record.outcome == "conflict")
    finally:
        for s in stores:
            s.close()
    return conflicts


def _push(slot: Slot | None, entry: str) -> Slot:
    items = list(slot.value) if isinstance(slot, Present) and isinstance(slot.value, list) else []
    return Present([*items, entry][-10:])


@portable_errors
def build_demo_store(path: str, edits: int) -> dict[str, Any]:
    """:func:`build_demo` at ``path``, in a worker process; returns its JSON report."""
    return build_demo(Path(path), edits=edits).to_json()
