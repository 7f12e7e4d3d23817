"""SIGKILL on real stores (DESIGN §5, §7.1 steps 2-3, §9): nothing durable is lost, nothing
half-written is seen.

- The crash loop starts a child that writes batches forever and kills it at random moments,
  ``KINTSUGI_CRASH_KILLS`` times (default 50); after each kill the store must verify and
  hold every batch the child reported durable, whole.
- The replace test kills a child around ``replace_session`` of a forked session: the store
  must hold the old state or the new one, never a mix, and a rerun must reach the new one.
- The held-store test kills a child whose commits a :class:`~engine.demo.held.HeldStore`
  holds back (the demo's disk slower than the network): exactly the held writes are lost,
  and the session's lease stays held; a clean close writes them and only then releases it.

Both print their seed; set ``KINTSUGI_CRASH_SEED`` to replay the same random choices (kill
moments still depend on the machine's timing).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from engine.covalue import CoValueCore
from engine.crypto import AccountKey
from engine.ids import AccountID, CoValueID, SessionID
from engine.kv.lease import Lease, LeaseState, SessionLeases
from engine.model.known_state import KnownState
from engine.node.facade import LocalNode
from engine.node.loading import load_core
from engine.storage.sqlite.store import SQLiteStore
from tests.engine._crash_child import batch_sizes
from tests.engine._fork import key_from_seed, load_chunk, make_fork, save_chunk
from tests.util import UNIT, python_child, timeout, wait_until

HERE = Path(__file__).resolve().parent
CRASH_CHILD = HERE / "_crash_child.py"
REPLACE_CHILD = HERE / "_replace_child.py"
HELD_CHILD = HERE / "_held_child.py"

#: SIGKILLs in the crash loop (raise it for a long soak, e.g. 1000).
KILLS = int(os.environ.get("KINTSUGI_CRASH_KILLS", "50"))
#: Rounds of the crash loop that write into one CoMap before the next one is used (keeps the
#: cost of each verification bounded however many kills are asked for).
ROUNDS_PER_COMAP = 4
#: CoMaps no longer written are reloaded and verified in full every this many rounds (and
#: after the last); in between their stored heads are compared with what they were.
FULL_VERIFY_EVERY = 10
#: Kills around replace_session, and runs where it is left to finish first.
REPLACE_KILLS = 14
REPLACE_FINISHED = 3


def crash_seed() -> int:
    return int(os.environ.get("KINTSUGI_CRASH_SEED") or random.SystemRandom().randrange(2**32))


class Child:
    """A child process printing JSON lines; its lines are collected by a reader thread.

    ``label`` (the seed and round) starts every failure message about it.
    """

    def __init__(self, label: str, script: Path, *args: object) -> None:
        self.label = label
        self.proc = python_child([str(script), *map(str, args)])
        self.messages: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.eof = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):  # a line cut short by SIGKILL promises nothing
                self.messages.append(json.loads(line))
        self.eof.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def find(self, key: str) -> dict[str, Any] | None:
        return next((m for m in list(self.messages) if key in m), None)

    def wait_for(self, key: str, timeout_units: float = 30) -> dict[str, Any]:
        """The first message with ``key``; fails if the child ends or times out first."""
        wait_until(
            lambda: self.find(key) is not None or self.eof.is_set(), timeout_units, f"{self.label}: child line {key!r}"
        )
        found = self.find(key)
        if found is None:
            self.close()
            raise AssertionError(f"{self.label}: child exited before {key!r}:\n{''.join(self.stderr)}")
        return found

    def kill(self) -> None:
        """SIGKILL (no cleanup runs in the child) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout(10))

    def close(self) -> None:
        self.kill()
        for thread in self._threads:
            thread.join(timeout(10))
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def load_all(
    path: Path, *, unchanged: dict[CoValueID, KnownState] | None = None, where: str = ""
) -> tuple[dict[CoValueID, CoValueCore], list[tuple[str, str, int, str, str]]]:
    """Open the store, load and verify every CoValue (groups resolvable); the corrupt table.

    CoValues in ``unchanged`` are not loaded: their stored heads must equal the given known
    state (a cheap check for CoValues nobody writes any more).
    """
    unchanged = unchanged or {}
    store = SQLiteStore(path)
    try:
        cores = {}
        for cid, _type, _deleted in store.covalue_ids():
            if cid in unchanged:
                heads = {s.session: (s.count, s.head) for s in store.stored_sessions(cid)}
                assert heads == dict(unchanged[cid].sessions), f"{where}: {cid} changed after its writer moved on"
                continue
            core = load_core(store, cid)
            assert core is not None
            cores[cid] = core
        corrupt = store.corrupt_sessions()
    finally:
        store.close()
    for core in cores.values():
        core.resolve = cores.get
    return cores, corrupt


def leases_of(path: Path, account: AccountID) -> dict[SessionID, Lease | None]:
    """The account's session leases in the store (read-only)."""
    store = SQLiteStore(path, readonly=True)
    try:
        leases = SessionLeases(store.kv, account, "verifier").leases()
    finally:
        store.close()
    return {session: lease for session, _gen, lease in leases}


# -- the crash loop ---------------------------------------------------------------------------------


@cache
def _sizes(seed: int, upto: int) -> tuple[int, ...]:
    return tuple(islice(batch_sizes(seed), upto))


@dataclass
class Loop:
    """What the parent knows of the children so far."""

    seed: int
    #: (first batch number, size seed) of every child started, in order
    children: list[tuple[int, int]] = field(default_factory=list)
    #: batch number → (CoMap, size) for every batch a child reported durable
    durable: dict[int, tuple[CoValueID, int]] = field(default_factory=dict)
    #: CoMaps no longer written → their known state when the loop moved on
    frozen: dict[CoValueID, KnownState] = field(default_factory=dict)
    sessions: list[SessionID] = field(default_factory=list)
    #: the CoMap being written → its known state at the last verification
    last_known: dict[CoValueID, KnownState] = field(default_factory=dict)

    def size_of(self, batch: int) -> int:
        """The size of ``batch``, printed or not, from the seed of the child that wrote it."""
        # Each child starts after every batch stored so far, so the writer of ``batch`` is
        # the last child started at or before it.
        start, seed = next(c for c in reversed(self.children) if c[0] <= batch)
        return _sizes(seed, batch - start + 1)[batch - start]


def verify_round(path: Path, loop: Loop, doc: CoValueID, where: str, *, full: bool) -> int:
    """Check the store after a kill; return the next unused batch number.

    Every CoValue is loaded and verified, except that CoMaps no longer written are only
    compared with their stored heads unless ``full``.
    """
    cores, corrupt = load_all(path, unchanged=None if full else loop.frozen, where=where)
    broken = {cid: core.corrupt for cid, core in cores.items() if core.corrupt}
    assert not broken and not corrupt, f"{where}: corrupt sessions {broken or corrupt}"
    for cid, known in loop.frozen.items():
        if cid in cores:
            assert cores[cid].known_state() == known, f"{where}: {cid} changed after its writer moved on"
    loop.last_known = {doc: cores[doc].known_state()}
    state = cores[doc].comap()
    assert not state.invalid, f"{where}: invalid transactions {state.invalid[:3]}"
    present: dict[int, set[int]] = {}
    for key, value in state.items().items():
        batch, index = map(int, key.split("/"))
        assert value == [batch, index], f"{where}: {key} holds {value}"
        present.setdefault(batch, set()).add(index)
    for batch, (cid, size) in loop.durable.items():
        if cid == doc:
            assert present.get(batch) == set(range(size)), f"{where}: durable batch {batch} is not whole"
    for batch, indices in present.items():
        size = loop.size_of(batch)
        assert indices == set(range(size)), f"{where}: batch {batch} stored {len(indices)} of {size} sets"
    return max(present, default=-1) + 1


@pytest.mark.slow
@pytest.mark.timeout(300 + int(KILLS * 5 * UNIT))
def test_sigkill_loop_keeps_every_durable_batch(tmp_path: Path) -> None:
    """A writer SIGKILLed at random keeps every durable batch whole, no broken chain, no reused session."""
    seed = crash_seed()
    print(f"crash loop: seed {seed}, {KILLS} kills (KINTSUGI_CRASH_SEED={seed} replays)")
    rng = random.Random(seed)
    key = key_from_seed(30)
    key_file = tmp_path / "account.key"
    key.save(key_file)
    path = tmp_path / "store"
    setup = LocalNode.open(path, key)
    group = setup.create_group()
    comaps = [setup.create_map(group.id).id for _ in range(-(-KILLS // ROUNDS_PER_COMAP))]
    setup.close()

    loop = Loop(seed)
    next_batch = 0
    kinds: Counter[str] = Counter()
    for round_no in range(KILLS):
        doc = comaps[round_no // ROUNDS_PER_COMAP]
        if round_no and round_no % ROUNDS_PER_COMAP == 0:
            previous = comaps[round_no // ROUNDS_PER_COMAP - 1]
            loop.frozen[previous] = loop.last_known[previous]
        where = f"seed {seed}, round {round_no}"
        child_seed = rng.randrange(2**32)
        loop.children.append((next_batch, child_seed))
        kind = rng.choices(["startup", "first batch", "later"], weights=[1, 2, 7])[0]
        kinds[kind] += 1
        child = Child(where, CRASH_CHILD, path, key_file, doc, next_batch, child_seed)
        try:
            if kind == "startup":  # while importing, opening the store or leasing
                time.sleep(rng.uniform(0, 0.3))
            else:
                child.wait_for("ready")
                if kind == "first batch":
                    time.sleep(rng.uniform(0, 0.03))
                else:
                    child.wait_for("durable")
                    time.sleep(rng.uniform(0, 0.15))
            child.kill()
        finally:
            child.close()
        ready = child.find("ready")
        if ready is not None:  # a child killed while starting may not have told its session
            session = SessionID(ready["ready"])
            assert session not in loop.sessions, f"{where}: session {session} handed out again"
            loop.sessions.append(session)
        for message in child.messages:
            if "durable" in message:
                batch, size = message["durable"], message["n"]
                assert size == loop.size_of(batch), f"{where}: child and parent disagree on sizes"
                loop.durable[batch] = (doc, size)
        full = round_no % FULL_VERIFY_EVERY == 0 or round_no == KILLS - 1
        next_batch = max(next_batch, verify_round(path, loop, doc, where, full=full))

    leases = leases_of(path, key.account_id)
    for session in loop.sessions:
        lease = leases.get(session)
        assert lease is not None and lease.state in (LeaseState.HELD, LeaseState.RETIRED), (
            f"seed {seed}: a killed child's session {session} has lease {lease}"
        )
    print(f"crash loop: seed {seed}, kills by moment {dict(kinds)}, {len(loop.durable)} durable batches")
    assert loop.durable, f"seed {seed}: no child ever reported a durable batch"


# -- SIGKILL around replace_session -------------------------------------------------------------


@dataclass
class ReplaceCase:
    key: AccountKey
    key_file: Path
    chunk_file: Path
    doc: CoValueID
    session: SessionID
    old: KnownState
    new: KnownState


def classify(path: Path, case: ReplaceCase, child: Child, where: str) -> str:
    """The state the store holds, "old" or "new"; fails on anything else (a mix)."""
    instance = child.wait_for("ready")["instance"]
    replaced = child.find("replaced")
    cores, corrupt = load_all(path)
    core = cores[case.doc]
    assert not core.corrupt and not corrupt, f"{where}: corrupt {core.corrupt or corrupt}"
    known = core.known_state()
    leases = leases_of(path, case.key.account_id)
    mine = leases.get(case.session)
    others = {s: lease for s, lease in leases.items() if s != case.session}
    if known == case.old:
        assert mine is not None and mine.state is LeaseState.HELD and mine.instance == instance, (
            f"{where}: old data but lease {mine}"
        )
        assert not others, f"{where}: old data but new leases {others}"
        return "old"
    assert known == case.new, (
        f"{where}: neither old nor new: sessions {sorted((s[-4:], n) for s, (n, _h) in known.sessions.items())}"
    )
    assert mine is not None and mine.state is LeaseState.RETIRED, f"{where}: new data but lease {mine}"
    assert len(others) == 1, f"{where}: new data but leases {others}"
    ((new_session, lease),) = others.items()
    assert lease is not None and lease.state is LeaseState.HELD and lease.instance == instance
    if replaced is not None:
        assert new_session == replaced["replaced"], f"{where}: the child writes {replaced} but holds {new_session}"
    return "new"


def rerun(path: Path, case: ReplaceCase, state: str, where: str) -> None:
    """Run the replace again in a fresh node: it reaches the new state exactly once."""
    chunk = load_chunk(case.chunk_file)
    node = LocalNode.open(path, case.key)
    try:
        assert node.session != case.session
        first = node.replace_session(case.doc, case.session, chunk)
        assert first.changed == (state == "old"), f"{where}: rerun changed={first.changed} on {state}"
        if first.changed:
            assert first.conflict_session == case.session + "!"
        assert not node.replace_session(case.doc, case.session, chunk).changed
    finally:
        node.close()
    cores, _corrupt = load_all(path)
    assert cores[case.doc].known_state() == case.new, f"{where}: rerun did not reach the new state"
    assert case.session + "!2" not in cores[case.doc].sessions


def test_sigkill_around_replace_session(tmp_path: Path) -> None:
    """SIGKILL around replace_session leaves the old or the new state; a rerun reaches the new one once."""
    seed = crash_seed()
    print(f"replace kills: seed {seed} (KINTSUGI_CRASH_SEED={seed} replays)")
    rng = random.Random(seed)
    key = key_from_seed(31)
    key_file = tmp_path / "account.key"
    key.save(key_file)
    template = tmp_path / "template"
    owner = LocalNode.open(template, key)
    session = owner.session
    group = owner.create_group()
    doc = owner.create_map(group.id).id
    fork = make_fork(owner, doc, common=50, mine=10_000, theirs=40)
    chunk_file = tmp_path / "chunk.cbor"
    save_chunk(fork.authoritative(), chunk_file)
    old = owner.known_state(doc)
    owner.close()  # releases the session, so the child leases it back

    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    ref = LocalNode(key, SQLiteStore(reference), session=session)
    ref.replace_session(doc, session, fork.authoritative())
    new = ref.known_state(doc)
    ref.close()
    assert set(new.sessions) == {session, session + "!"}
    case = ReplaceCase(key, key_file, chunk_file, doc, session, old, new)

    plans: list[float | None] = [rng.uniform(0, 0.02) for _ in range(REPLACE_KILLS)]
    plans += [None] * REPLACE_FINISHED
    rng.shuffle(plans)
    states: Counter[str] = Counter()
    for run_no, delay in enumerate(plans):
        where = f"seed {seed}, run {run_no}, delay {delay}"
        path = tmp_path / f"run{run_no}"
        shutil.copytree(template, path)
        child = Child(where, REPLACE_CHILD, path, key_file, chunk_file, doc, session)
        try:
            ready = child.wait_for("ready")
            assert ready["ready"] == session, f"{where}: child leased {ready['ready']}"
            child.wait_for("replacing")
            if delay is None:
                child.wait_for("replaced")
            else:
                time.sleep(delay)
            child.kill()
        finally:
            child.close()
        state = classify(path, case, child, where)
        if child.find("replaced") is not None:
            assert state == "new", f"{where}: the child finished but the store is old"
        states[state] += 1
        rerun(path, case, state, where)
    print(f"replace kills: seed {seed}, states after the kill {dict(states)}")


# -- SIGKILL with commits held back ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["kill", "close"])
def test_a_held_store_loses_exactly_the_held_writes(tmp_path: Path, mode: str) -> None:
    """SIGKILLed while holding, the store lacks exactly the held write and the lease stays
    held (the session is never reused); closed cleanly, the held write is stored and the
    lease released."""
    key = key_from_seed(32)
    key_file = tmp_path / "account.key"
    key.save(key_file)
    path = tmp_path / "store"
    with LocalNode.open(path, key) as setup:
        doc = setup.create_map(None).id
    child = Child(f"held store, {mode}", HELD_CHILD, path, key_file, doc, mode)
    try:
        line = child.wait_for("session")
        assert line["held"] == 1
        if mode == "close":
            child.wait_for("closed")
        child.kill()
    finally:
        child.close()
    cores, corrupt = load_all(path)
    assert not corrupt and not cores[doc].corrupt
    expected = {"kept": 1} if mode == "kill" else {"kept": 1, "held": 2}
    assert cores[doc].comap().items() == expected
    lease = leases_of(path, key.account_id)[SessionID(line["session"])]
    assert lease is not None
    assert lease.state is (LeaseState.HELD if mode == "kill" else LeaseState.RELEASED)
