"""A deterministic simulator for the sans-I/O sync core.

One node and several clients (LocalNodes in memory), each client linked to the node. Every
message crosses its link as an encoded frame (so the wire codec is exercised too) and the
links misbehave under a seeded PRNG: frames are dropped, duplicated, reordered; links are
partitioned and come back as fresh connections (a new bulk exchange). Two of the clients are
"tabs" of one account that write the same session id (the lease bypassed on purpose), so
forks and corrections happen. One CoValue gets deleted midway. A fake clock drives madeAt.

After the chaotic phase the network heals: every link reconnects and delivers without faults
until nothing moves. Then every replica must hold byte-identical content and known states, and
the edit oracle (oracle.py), which recorded every transaction each writer created and every
acknowledgement it received, checks that none was lost or duplicated on any replica
(:meth:`Simulation.check_edits`).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from engine.content.authority import seen_meta
from engine.crypto import AccountKey
from engine.errors import PermissionDenied
from engine.ids import AccountID, CoValueID, SessionID, new_session_id
from engine.model.session_log import SessionLog
from engine.model.transaction import encode_transaction
from engine.node.facade import LocalNode
from engine.protocol.frames import OP, decode_frame, encode_frame
from engine.protocol.limits import DEFAULT_LIMITS
from engine.sync.manager import PeerKind, SyncManager
from tests.engine.sync.oracle import EditOracle, OracleReport

NODE = "node"


@dataclass
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    partition: float = 0.0


@dataclass
class Link:
    """Both directions between one client and the node; ``up`` is False while partitioned."""

    client: str
    to_node: deque[bytes] = field(default_factory=deque)
    to_client: deque[bytes] = field(default_factory=deque)
    up: bool = True
    epoch: int = 0


class Simulation:
    def __init__(self, seed: int, *, clients: int = 3, faults: Faults | None = None, tabs: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.clock = 1_700_000_000_000
        self.delivered = 0
        #: the books every check at heal is held to (:meth:`check_edits`)
        self.oracle = EditOracle(seed)
        rb = self._random_bytes
        node_key = AccountKey.from_seed(self.rng.randbytes(32))
        self.node = LocalNode(
            node_key,
            clock_ms=self._now,
            session=new_session_id(node_key.account_id, rb),
            random_bytes=rb,
            instance_id="node",
        )
        self.managers: dict[str, SyncManager] = {NODE: SyncManager(self.node)}
        self.replicas: dict[str, LocalNode] = {NODE: self.node}
        keys = [AccountKey.from_seed(self.rng.randbytes(32)) for _ in range(clients)]
        for i, key in enumerate(keys):
            self._add_client(f"c{i}", key)
        if tabs:
            # a second tab of client 0's account, writing client 0's session id
            self._add_client("tab", keys[0], session=self.replicas["c0"].session)
        admin = self.replicas["c0"]
        self.group = admin.create_group()
        for key in keys[1:]:
            with self.oracle.writing("c0", admin, self.group.id, [["role", key.account_id, "writer"]]):
                admin.set_role(self.group.id, key.account_id, "writer")
        self.maps = [admin.create_map(self.group.id).id for _ in range(2)]
        self.covalues: list[CoValueID] = [self.group.id, *self.maps]
        self.deleted: CoValueID | None = None
        self.links = {name: Link(name) for name in self.replicas if name != NODE}
        for name in self.links:
            self._connect(name)

    # -- plumbing --------------------------------------------------------------------------

    def _random_bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def _now(self) -> int:
        return self.clock

    def _add_client(self, name: str, key: AccountKey, session: str | None = None) -> None:
        rb = self._random_bytes
        node = LocalNode(
            key,
            clock_ms=self._now,
            session=session or new_session_id(key.account_id, rb),  # type: ignore[arg-type]
            random_bytes=rb,
            instance_id=name,
        )
        self.replicas[name] = node
        self.managers[name] = SyncManager(node)
        self.oracle.watch(name, node, self.managers[name])

    def _connect(self, name: str) -> None:
        link = self.links[name]
        link.epoch += 1
        link.to_node.clear()
        link.to_client.clear()
        link.up = True
        peer = f"{name}#{link.epoch}"
        client = self.managers[name]
        self.managers[NODE].add_peer(peer, PeerKind.DOWNSTREAM, self.replicas[name].account_id)
        client.add_peer(f"node#{link.epoch}", PeerKind.UPSTREAM, self.node.account_id)
        for cid in self.covalues:
            if self.replicas[name].get_or_none(cid) is None:
                client.load(cid)
        self._pump()

    def _disconnect(self, name: str) -> None:
        link = self.links[name]
        self.managers[NODE].remove_peer(f"{name}#{link.epoch}")
        self.managers[name].remove_peer(f"node#{link.epoch}")
        link.up = False
        link.to_node.clear()
        link.to_client.clear()

    def _pump(self) -> None:
        """Move every manager's outbox onto the links, as encoded op frames."""
        for name, manager in self.managers.items():
            for peer_id, message in manager.drain():
                frame = encode_frame(OP, [message])
                if name == NODE:
                    link = self.links[peer_id.split("#")[0]]
                    if link.up and peer_id == f"{link.client}#{link.epoch}":
                        link.to_client.append(frame)
                else:
                    link = self.links[name]
                    if link.up and peer_id == f"node#{link.epoch}":
                        link.to_node.append(frame)

    def _deliver(self, link: Link, to_node: bool, faulty: bool) -> bool:
        queue = link.to_node if to_node else link.to_client
        if not queue:
            return False
        if faulty and len(queue) > 1 and self.rng.random() < self.faults.reorder:
            queue.rotate(-1)
        frame = queue.popleft()
        if faulty and self.rng.random() < self.faults.drop:
            return True
        copies = 2 if faulty and self.rng.random() < self.faults.duplicate else 1
        decoded = decode_frame(frame, max_size=DEFAULT_LIMITS.max_frame_size, max_messages=10_000)
        assert not decoded.errors, decoded.errors
        receiver = NODE if to_node else link.client
        peer_id = f"{link.client}#{link.epoch}" if to_node else f"node#{link.epoch}"
        for _ in range(copies):
            for message in decoded.messages:
                self.managers[receiver].receive(peer_id, message)
        self.delivered += 1
        self._pump()
        return True

    # -- the run ---------------------------------------------------------------------------

    def step(self) -> None:
        self.clock += self.rng.randrange(0, 3)
        roll = self.rng.random()
        writers = [n for n in self.replicas if n != NODE]
        if roll < 0.30:
            name = self.rng.choice(writers)
            replica = self.replicas[name]
            cid = self.rng.choice(self.maps)
            core = replica.get_or_none(cid)
            if core is not None and not core.deleted:
                try:
                    self.write(name, cid, f"k{self.rng.randrange(8)}", f"{name}@{self.clock}")
                except PermissionDenied:
                    return  # this replica's copy of the group does not let it write (yet)
        elif roll < 0.32:
            admin = self.replicas["c0"]
            victim = self.maps[-1]
            if self.deleted is None and self.rng.random() < 0.3 and admin.get_or_none(victim) is not None:
                with self.oracle.writing("c0", admin, victim, [["delete"]]):
                    admin.delete_covalue(victim)
                self.deleted = victim
                self._pump()
        elif roll < 0.32 + self.faults.partition:
            link = self.rng.choice(list(self.links.values()))
            if link.up:
                self._disconnect(link.client)
            else:
                self._connect(link.client)
        else:
            link = self.rng.choice(list(self.links.values()))
            if link.up:
                self._deliver(link, self.rng.random() < 0.5, faulty=True)

    def write(self, name: str, cid: CoValueID, key: str, value: Any) -> None:
        """Replica ``name`` sets ``key`` of CoMap ``cid``, as app code would; the oracle records
        what its replica accepted. Raises what :meth:`LocalNode.set` raises."""
        replica = self.replicas[name]
        with self.oracle.writing(name, replica, cid, [["set", key, value]]):
            replica.set(cid, key, value)
        self._pump()

    def heal(self, max_rounds: int = 100_000) -> None:
        """Reconnect every link and deliver without faults until nothing moves."""
        for name, link in self.links.items():
            if link.up:
                self._disconnect(name)
            self._connect(name)
        self.settle(max_rounds)

    def settle(self, max_rounds: int = 100_000) -> None:
        """Deliver what the links hold, without faults and without reconnecting, until nothing
        moves (a link that is down stays down)."""
        for _ in range(max_rounds):
            moved = False
            for link in self.links.values():
                moved |= self._deliver(link, True, faulty=False)
                moved |= self._deliver(link, False, faulty=False)
            if not moved:
                return
        raise AssertionError(f"seed {self.seed}: no quiescence after {max_rounds} rounds")

    def snapshot(self, name: str) -> dict[CoValueID, tuple[bool, bytes, dict[SessionID, tuple[int, bytes]]]]:
        replica = self.replicas[name]
        out = {}
        for cid in self.covalues:
            core = replica.get_or_none(cid)
            assert core is not None, f"seed {self.seed}: {name} lacks {cid}"
            content = b"" if core.deleted or core.type != "comap" else core.comap().encode()
            out[cid] = (core.deleted, content, dict(core.known_state().sessions))
        return out

    def check_edits(self) -> OracleReport:
        """The edit oracle's check over every replica and CoValue (call it after :meth:`heal`);
        the report's ``ok`` is False, with every problem listed, when an edit was lost,
        duplicated or misplaced, or content differs from the oracle's model."""
        return self.oracle.check(self.replicas, NODE, self.covalues)

    # -- group authority (tests/engine/sync/test_group_authority_sim.py) --------------------

    def set_role(self, name: str, member: str, role: str) -> None:
        """Replica ``name`` gives ``member``'s account ``role`` in the group, as app code would."""
        account = self.replicas[member].account_id
        with self.oracle.writing(name, self.replicas[name], self.group.id, [["role", account, role]]):
            self.replicas[name].set_role(self.group.id, account, role)
        self._pump()

    def forge_group_change(
        self, name: str, changes: list[list[Any]], made_at: int, seen: dict[SessionID, int]
    ) -> SessionID:
        """``name``'s account signs, in a brand-new session, one group transaction of ``changes``
        made at ``made_at`` and claiming to have seen ``seen``, past every local check (a hostile
        client written from the protocol document), and offers it to its peers. Returns the
        session."""
        replica = self.replicas[name]
        sid = new_session_id(replica.account_id, self._random_bytes)
        log = SessionLog(self.group.id, sid)
        log.append_pending(encode_transaction(made_at, changes, seen_meta(seen)))
        log.sign(replica.account)
        with self.oracle.writing(name, replica, self.group.id, changes):
            replica.apply_content(self.group.id, {sid: log.chunk()})
        self._pump()
        return sid

    def cut(self, name: str) -> None:
        """Partition ``name`` from the node until :meth:`join`."""
        if self.links[name].up:
            self._disconnect(name)

    def join(self, name: str) -> None:
        """Reconnect ``name`` (a fresh connection and bulk exchange)."""
        if not self.links[name].up:
            self._connect(name)

    def roles(self, name: str) -> dict[AccountID, str]:
        """The group's roles as replica ``name`` computes them."""
        return dict(self.replicas[name].get(self.group.id).group().roles)

    def hand_over(self, src: str, dst: str, session: SessionID) -> None:
        """Give replica ``dst`` the group session ``session`` as ``src`` holds it, as any peer
        that holds it might (``dst`` then offers it to its own peers)."""
        chunk = self.replicas[src].get(self.group.id).sessions[session].chunk()
        self.replicas[dst].apply_content(self.group.id, {session: chunk})
        self._pump()
