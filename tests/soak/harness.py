"""The soak run: a real node process, client processes writing through a faulty proxy, SIGKILLs
of both on a seeded schedule (:mod:`tests.soak.schedule`), and the oracle
(:mod:`tests.soak.oracle`) over everything written.

:meth:`Soak.run` does, in order:

1. Setup: the owner's group (every client's account a writer) and the shared CoMaps are
   written into the node's store; the node starts (``kintsugi node serve``); the proxy
   relays to it; each client process (:mod:`tests.soak._client`) starts on its own store and
   journal, fetches the CoMaps through the proxy and starts writing.
2. The schedule: kills and faults at their moments. After each client kill its store must
   hold everything its journal calls durable (:func:`~tests.soak.oracle.check_kept`); after
   each node kill, the dead node's store must hold everything any client journaled as
   acknowledged (:func:`~tests.soak.oracle.check_acks`). A client or node that exits on its
   own fails the run at once.
3. The end: faults stop, everything down comes back up, every client stops writing and waits
   until the node acknowledged all it wrote, then all replicas must become equal (quiet).
   Clients quit cleanly (exit 0), the node stops on SIGTERM (exit 0).
4. The oracle reads every journal and store: :func:`~tests.soak.oracle.check_soak`.

Every process is reaped and the proxy closed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.crypto import AccountKey
from engine.ids import AccountID
from engine.node.facade import LocalNode
from tests.e2e.conftest import NodeProcess, Proc
from tests.soak.journal import Journal, read_journal
from tests.soak.oracle import (
    Problem,
    Replica,
    Verdict,
    check_acks,
    check_kept,
    check_soak,
    owned,
    read_heads,
    read_replica,
    read_sessions,
)
from tests.soak.proxy import FaultyProxy
from tests.soak.schedule import ALL, Event, make_schedule
from tests.util import timeout

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "_client.py"

#: Length of the soak's faulty phase (the setup and the end come on top).
SOAK_MINUTES = float(os.environ.get("KINTSUGI_SOAK_MINUTES", "2"))
#: The clients: (label, account). Two share an account on two stores (two devices).
CLIENTS = (("alice-1", "alice"), ("alice-2", "alice"), ("bob", "bob"), ("carol", "carol"))
#: Shared CoMaps every client writes into.
MAPS = 3
#: Units a client may take to be ready (connected, CoMaps fetched) once faults are over, to be
#: acknowledged everything at the end, and to exit after ``quit``; and the whole quiet wait.
CLIENT_READY_UNITS = 30
CLIENT_WAIT_UNITS = 60
CLIENT_EXIT_UNITS = 20
QUIET_UNITS = 120
#: Seconds between two looks at the stores while waiting for them to agree, and between two
#: health checks of the processes while waiting for the next event.
QUIET_POLL = 0.5
HEALTH_POLL = 0.1


def soak_seed() -> int:
    return int(os.environ.get("KINTSUGI_SOAK_SEED") or random.SystemRandom().randrange(2**32))


@dataclass
class ClientSlot:
    """One client: its account, store and journal, and its current process (None: down)."""

    label: str
    key: Path
    store: Path
    journal: Path
    proc: Proc | None = None
    lives: int = 0

    def read_journal(self) -> Journal:
        return read_journal(self.journal, self.label)


@dataclass
class Tally:
    kills: int = 0
    faults: int = 0
    #: problems found by the checks at kills
    problems: list[Problem] = field(default_factory=list)
    #: how often each kind of event ran
    events: dict[str, int] = field(default_factory=dict)
    #: acknowledgements checked on dead nodes' stores, journaled writes on killed clients' stores
    acks_checked: int = 0
    writes_checked: int = 0
    #: seconds the checks at kills took (the schedule waits for them)
    check_seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"events {dict(sorted(self.events.items()))}; at kills: {self.acks_checked} acknowledgements and "
            f"{self.writes_checked} durable writes checked in {self.check_seconds:.1f}s"
        )


class Soak:
    """One soak in ``workdir`` (see the module docstring)."""

    def __init__(self, workdir: Path, seed: int, duration: float) -> None:
        self.workdir = workdir
        self.seed = seed
        self.duration = duration
        self.schedule = make_schedule(seed, duration, len(CLIENTS))
        self.tally = Tally()
        self.node: NodeProcess | None = None
        self.node_key: Path | None = None
        self.proxy = FaultyProxy()
        self.clients: list[ClientSlot] = []
        self.ids: list[str] = []
        self.started = 0.0

    @property
    def where(self) -> str:
        at = time.monotonic() - self.started if self.started else 0.0
        return f"seed {self.seed} (KINTSUGI_SOAK_SEED={self.seed} replays), {at:.1f}s in"

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> Verdict:
        with self.proxy:
            try:
                self.setup()
                self.started = time.monotonic()
                for event in self.schedule:
                    self.wait_until(self.started + event.at)
                    self.apply(event)
                self.wait_until(self.started + self.duration)
                self.end()
                return self.verdict()
            finally:
                self.cleanup()

    def setup(self) -> None:
        (self.workdir / "keys").mkdir(parents=True)
        (self.workdir / "stores").mkdir()
        (self.workdir / "journals").mkdir()
        keys: dict[str, Path] = {}
        for name in ["owner", *sorted({account for _, account in CLIENTS})]:
            keys[name] = self.workdir / "keys" / f"{name}.key"
            AccountKey.generate().save(keys[name])
        with LocalNode.open(self.workdir / "node", AccountKey.load(keys["owner"])) as owner:
            group = owner.create_group()
            for name, path in sorted(keys.items()):
                if name != "owner":
                    owner.set_role(group.id, AccountID(AccountKey.load(path).account_id), "writer")
            self.ids = [group.id, *(owner.create_map(group.id).id for _ in range(MAPS))]
        self.start_node()
        for label, account in CLIENTS:
            slot = ClientSlot(
                label, keys[account], self.workdir / "stores" / label, self.workdir / "journals" / f"{label}.jsonl"
            )
            self.clients.append(slot)
            self.start_client(slot)
        for slot in self.clients:
            self.wait_ready(slot)

    def wait_until(self, moment: float) -> None:
        """The schedule's own pause until ``moment``, watching that every process lives."""
        while True:
            self.check_health()
            left = moment - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, HEALTH_POLL))

    def check_health(self) -> None:
        procs: list[Proc] = [s.proc for s in self.clients if s.proc is not None]
        if self.node is not None:
            procs.append(self.node)
        for proc in procs:
            if proc.proc.poll() is not None:
                raise AssertionError(f"{self.where}: {proc.label} exited by itself\n{proc.describe()}")

    def apply(self, event: Event) -> None:
        self.tally.events[event.kind] = self.tally.events.get(event.kind, 0) + 1
        which = None if event.target == ALL else event.target
        if event.kind == "kill_client":
            self.kill_client(self.clients[event.target])
        elif event.kind == "restart_client":
            self.start_client(self.clients[event.target])
        elif event.kind == "kill_node":
            self.kill_node()
        elif event.kind == "restart_node":
            self.start_node()
        elif event.kind == "cut":
            self.proxy.cut(which)
        elif event.kind == "stall":
            self.proxy.stall(event.seconds, which=which, then_cut=event.then_cut)
        elif event.kind == "delay":
            self.proxy.delay(event.latency, event.seconds)
        elif event.kind == "refuse":
            self.proxy.refuse(event.seconds)
        else:
            raise AssertionError(f"unknown event {event}")
        self.tally.kills += event.is_kill
        self.tally.faults += event.is_fault

    # -- processes ---------------------------------------------------------------------------

    def start_node(self) -> None:
        node = NodeProcess("node", self.workdir, key=self.node_key)
        self.node = node
        url = node.wait_ready()
        self.node_key = node.key_file
        self.proxy.set_upstream(int(url.rsplit(":", 1)[1]))

    def kill_node(self) -> None:
        assert self.node is not None
        self.proxy.set_upstream(None)
        self.node.kill()
        self.node.reap()
        self.node.ready_file.unlink(missing_ok=True)
        self.node = None
        # Whatever the node acknowledged before it died is in its store.
        started = time.monotonic()
        journals = [slot.read_journal() for slot in self.clients]
        acked = {ack.session for journal in journals for ack in journal.acks}
        found = check_acks(journals, read_sessions("node", self.workdir / "node", self.maps, acked.__contains__))
        self.tally.problems += [Problem(p.kind, f"at a node kill, {self.where}: {p.detail}", p.tokens) for p in found]
        self.tally.acks_checked += sum(len(j.acked_counts()) for j in journals)
        self.tally.check_seconds += time.monotonic() - started

    def start_client(self, slot: ClientSlot) -> None:
        assert slot.proc is None, slot.label
        slot.lives += 1
        args = [str(CLIENT), "--key", str(slot.key), "--store", str(slot.store), "--journal", str(slot.journal)]
        args += ["--url", self.proxy.url, "--label", slot.label, "--covalues", ",".join(self.ids)]
        args += ["--seed", str(self.seed), "--timeout", str(timeout(CLIENT_WAIT_UNITS))]
        slot.proc = Proc(f"{slot.label}#{slot.lives}", args, stdin=True)

    def kill_client(self, slot: ClientSlot) -> None:
        assert slot.proc is not None, slot.label
        slot.proc.kill()
        self.fail_on_error_lines(slot.proc)
        slot.proc.reap()
        slot.proc = None
        # Whatever it journaled as durable is in its store.
        started = time.monotonic()
        journal = slot.read_journal()
        own = read_sessions(slot.label, slot.store, self.maps, lambda sid: owned(sid, journal.sessions))
        found = check_kept(journal, own)
        self.tally.writes_checked += len(journal.writes)
        self.tally.check_seconds += time.monotonic() - started
        self.tally.problems += [
            Problem(p.kind, f"at a kill of {slot.label}, {self.where}: {p.detail}", p.tokens) for p in found
        ]

    def wait_ready(self, slot: ClientSlot) -> None:
        assert slot.proc is not None
        slot.proc.wait_for(lambda line: "ready" in line, CLIENT_READY_UNITS, "ready")

    def fail_on_error_lines(self, proc: Proc) -> None:
        errors = [line for line in proc.lines if "error" in line]
        if errors:
            raise AssertionError(f"{self.where}: {proc.label} failed: {errors[0]['error']}\n{proc.describe()}")

    @property
    def maps(self) -> list[str]:
        return self.ids[1:]

    def read(self, name: str, store: Path) -> Replica:
        return read_replica(name, store, self.maps)

    # -- the end -----------------------------------------------------------------------------

    def end(self) -> None:
        """Faults off, everything up, writing stopped, every replica equal; then a clean stop."""
        self.proxy.heal()
        if self.node is None:
            self.start_node()
        for slot in self.clients:
            if slot.proc is None:
                self.start_client(slot)
        for slot in self.clients:
            self.wait_ready(slot)
        for slot in self.clients:
            self.send(slot, "stop")
        for slot in self.clients:
            assert slot.proc is not None
            slot.proc.wait_for(lambda line: "synced" in line, CLIENT_WAIT_UNITS + 5, "everything acknowledged")
        self.wait_quiet()
        for slot in self.clients:
            assert slot.proc is not None
            self.send(slot, "quit")
            code = slot.proc.wait_exit(CLIENT_EXIT_UNITS)
            assert code == 0, f"{self.where}: {slot.proc.label} exited {code}\n{slot.proc.describe()}"
            self.fail_on_error_lines(slot.proc)
        assert self.node is not None
        code = self.node.stop()
        assert code == 0, f"{self.where}: the node exited {code} on SIGTERM\n{self.node.describe()}"

    def send(self, slot: ClientSlot, line: str) -> None:
        assert slot.proc is not None and slot.proc.proc.stdin is not None
        slot.proc.proc.stdin.write(line + "\n")
        slot.proc.proc.stdin.flush()

    def wait_quiet(self) -> None:
        """Until every client holds exactly the node's sessions (bounded)."""
        deadline = time.monotonic() + timeout(QUIET_UNITS)
        while True:
            self.check_health()
            assert self.node is not None
            node = read_heads(self.node.store, self.maps)
            differ = [s.label for s in self.clients if read_heads(s.store, self.maps) != node]
            if not differ:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.where}: {differ} never came to hold what the node holds")
            time.sleep(QUIET_POLL)

    def verdict(self) -> Verdict:
        journals = {slot.label: slot.read_journal() for slot in self.clients}
        node = self.read("node", self.workdir / "node")
        clients = {slot.label: self.read(slot.label, slot.store) for slot in self.clients}
        return check_soak(
            journals, node, clients, kills=self.tally.kills, faults=self.tally.faults, earlier=self.tally.problems
        )

    def cleanup(self) -> None:
        for slot in self.clients:
            if slot.proc is not None:
                slot.proc.reap()
        if self.node is not None:
            with contextlib.suppress(AssertionError):
                self.node.stop()
            self.node.reap()
