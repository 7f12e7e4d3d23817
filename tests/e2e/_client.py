"""A small Kintsugi client program for the end-to-end stories; it speaks JSON lines.

Start it with :func:`tests.util.python_child` (which makes ``engine`` importable):

``python tests/e2e/_client.py --key FILE --store DIR [--url URL] [--session SID]
[--instance NAME] [--timeout SECONDS] [--interactive] [STEP ...]``

Each STEP is one argument, a command and its words (``"write co_z… a- 10"``). The steps given
on the command line run in order; with ``--interactive`` more steps are then read from stdin,
one per line, until ``quit`` or end of input. Every step prints exactly one JSON line on
stdout with ``"seq"`` (its number, from 0) and ``"step"`` (its command); a failing step prints
``{"seq", "step", "error"}`` and the program exits 1. Other lines it may print:
``{"correction_received": sid, "covalue": id}`` the moment a correction arrives from the node,
before it is applied (the kill-during-recovery story times its SIGKILLs from it; with
``--stall-before-correction SECONDS`` the client then blocks that long before applying it).
With ``--known-crosses-correction`` it first sends the node its known state of that CoValue,
as if that message had crossed the correction on the wire (a race, made deterministic).

Steps:

- ``connect`` — connect to ``--url`` (several node URLs comma-separated: the client moves
  to the next when its node goes away) and wait for the handshake (``{"session"}``).
- ``disconnect`` — close the connection cleanly.
- ``create-group`` / ``create-map GROUP`` — ``{"id"}``.
- ``role GROUP ACCOUNT ROLE`` — give ``ACCOUNT`` a role in ``GROUP``.
- ``load ID`` — ask the node; wait until ``ID`` and its owner group are here, with all that
  the node announced of ``ID``.
- ``write ID PREFIX N [PAUSE_MS]`` — set ``PREFIX0`` … ``PREFIX{N-1}`` (one batch, or one
  write every ``PAUSE_MS`` ms) and sign them (``{"session"}``: where they went).
- ``pause-persist`` / ``resume-persist`` — hold back / resume local store commits (the
  node runs on a :class:`~engine.demo.held.HeldStore`: a disk slower than the network).
- ``ack ID`` — wait until the node's own ``known`` messages cover, at its current head, every
  session of ``ID`` this process wrote (and every conflict session its corrections created,
  but not a session a correction replaced). Not the sync manager's idea of the peer, which
  counts what was *sent*: only a ``known`` from the node is an acknowledgement.
- ``ack-account ID`` — the same for every session of ``ID`` that belongs to this account,
  whoever wrote it (a conflict session a killed predecessor created, say).
- ``wait-keys ID N [SECONDS]`` — wait until the CoMap has at least ``N`` keys.
- ``wait-event KIND [N]`` — wait until ``N`` (default 1) sync events of ``KIND`` were seen.
- ``report ID`` — ``{"report": …}``: content digest and keys, known state, every session's
  count/head/keys, what the store file holds on disk, the acknowledged heads, the current
  session and the sync events so far.
- ``hang`` — print ``{"hanging": true}`` and wait to be killed.
- ``quit`` — stop reading steps.

On the way out the connection is closed cleanly and the node closed (which flushes).
Logging goes to stderr as ``LEVEL logger: message`` (the ``kintsugi.security`` warnings).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import codec
from engine.crypto import AccountKey
from engine.demo.held import HeldStore
from engine.ids import AccountID, CoValueID, SessionID, session_account
from engine.model.header import OwnedByGroup
from engine.model.transaction import decode_transaction
from engine.net.client import Backoff, SyncClient
from engine.net.shell import SyncShell
from engine.node.facade import LocalNode
from engine.protocol.messages import Correction, Known, Load, Message
from engine.storage import open_store
from engine.storage.sqlite.store import SQLiteStore, store_file
from engine.sync.events import SyncEvent

Heads = dict[str, tuple[int, bytes]]


class StepFailed(Exception):
    pass


def emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
    sys.stdout.flush()


def content_digest(items: dict[str, Any]) -> str:
    """BLAKE2b of the canonical CBOR of the content: equal digests mean byte-identical content."""
    return hashlib.blake2b(codec.encode(items), digest_size=16).hexdigest()


def keys_written(txs: list[bytes]) -> list[str]:
    """The CoMap keys that ``set`` changes of these transactions name, in order."""
    keys = []
    for tx in txs:
        for change in decode_transaction(tx).changes:
            if change and change[0] == "set":
                keys.append(change[1])
    return keys


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url: str | None = args.url
        self.store = Path(args.store)
        self.timeout: float = args.timeout
        self.key = AccountKey.load(args.key)
        session = SessionID(args.session) if args.session else None
        #: the store under the node, whose commits ``pause-persist`` holds back
        self.held = HeldStore(open_store(self.store, writer=args.instance))
        self.node = LocalNode.open(self.held, self.key, instance_id=args.instance, session=session)
        self.shell = SyncShell(self.node)
        self.events: list[SyncEvent] = []
        self.shell.event_listeners.append(self.events.append)
        #: heads the node itself announced (``known``/``load`` from upstream), per CoValue
        self.acked: dict[CoValueID, Heads] = {}
        self.sync: SyncClient | None = None
        self.hang = asyncio.Event()
        #: sessions this process wrote into (and conflict sessions its corrections created) ...
        self.written: set[SessionID] = set()
        #: ... and sessions a correction replaced (the node's history now, no longer ours)
        self.replaced: set[SessionID] = set()
        receive = self.shell.manager.receive

        def receive_and_record(peer_id: str, message: Message) -> None:
            if isinstance(message, Correction):
                emit({"correction_received": message.sid, "covalue": message.id})
                if args.stall_before_correction:
                    time.sleep(args.stall_before_correction)  # a slow moment, to be killed in
                core = self.node.get_or_none(message.id)
                if args.known_crosses_correction and core is not None:
                    # Our known state, sent just before the correction arrived: the two
                    # messages cross on the wire (deterministically, here).
                    self.shell.manager.send_to(peer_id, Known(message.id, core.known_state()))
                    self.shell.dispatch()
                before = set(core.sessions) if core is not None else set()
                receive(peer_id, message)
                if core is not None and core.sessions.get(message.sid) is not None:
                    self.written.update(set(core.sessions) - before)
                    if any(e.kind == "correction_applied" and e.session == message.sid for e in self.events):
                        self.replaced.add(message.sid)
                return
            receive(peer_id, message)
            if peer_id.startswith("out:") and isinstance(message, Known | Load) and message.known.header:
                self.acked.setdefault(message.id, {}).update(message.known.sessions)

        self.shell.manager.receive = receive_and_record  # type: ignore[method-assign]

    # -- helpers -----------------------------------------------------------------------------

    async def wait(self, cond: Callable[[], bool], what: str, seconds: float | None = None) -> None:
        seconds = self.timeout if seconds is None else seconds
        deadline = time.monotonic() + seconds
        while not cond():
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out after {seconds:.1f}s waiting for {what}")
            await asyncio.sleep(0.005)

    def own_heads(self, cid: CoValueID) -> Heads:
        """Heads of the sessions of ``cid`` that this process wrote and still owns."""
        core = self.node.get(cid)
        return {
            sid: log.head()
            for sid, log in core.sessions.items()
            if log.signed_count and sid in self.written and sid not in self.replaced
        }

    def is_acked(self, cid: CoValueID) -> bool:
        """The node announced ``cid`` and, at their current heads, everything we wrote in it.

        (Sessions of this account written by another process, or replaced by a correction,
        reach us from the node, which need not announce them to us again.)
        """
        if cid not in self.acked:
            return False
        acked = self.acked[cid]
        return all(acked.get(sid) == head for sid, head in self.own_heads(cid).items())

    def has_all_the_node_announced(self, cid: CoValueID) -> bool:
        """``cid`` and its owner group are here, with everything the node said it holds.

        (A node that had to fetch ``cid`` from its own upstream first answers "unknown" and
        later sends the content without another ``known``; then presence is all we can see.)
        """
        core = self.node.get_or_none(cid)
        if core is None:
            return False
        ruleset = core.header.ruleset
        if isinstance(ruleset, OwnedByGroup) and self.node.get_or_none(ruleset.group) is None:
            return False
        mine = core.known_state().sessions
        return all(sid in mine and mine[sid][0] >= n for sid, (n, _h) in self.acked.get(cid, {}).items())

    def on_disk(self, cid: CoValueID) -> dict[str, int]:
        """Signed counts of ``cid``'s sessions as the store file holds them right now."""
        if not store_file(self.store).exists():
            return {}
        store = SQLiteStore(self.store, readonly=True)
        try:
            core = store.load_covalue(cid)
            return {} if core is None else {sid: log.signed_count for sid, log in core.sessions.items()}
        finally:
            store.close()

    def report(self, cid: CoValueID) -> dict[str, Any]:
        self.node.flush()
        core = self.node.get(cid)
        items = core.comap().items() if core.type == "comap" else {"roles": dict(core.group().roles)}
        return {
            "covalue": cid,
            "account": self.key.account_id,
            "session": self.node.session,
            "digest": content_digest(items),
            "keys": sorted(items),
            "known": {sid: [n, h.hex()] for sid, (n, h) in sorted(core.known_state().sessions.items())},
            "sessions": {
                sid: {
                    "count": log.signed_count,
                    "head": log.head()[1].hex(),
                    "keys": keys_written(log.txs[: log.signed_count]),
                }
                for sid, log in sorted(core.sessions.items())
            },
            "on_disk": self.on_disk(cid),
            "acked": {sid: n for sid, (n, _h) in sorted(self.acked.get(cid, {}).items())},
            "events": [
                {"kind": e.kind, "covalue": e.covalue, "session": e.session, "detail": e.detail} for e in self.events
            ],
        }

    # -- steps -------------------------------------------------------------------------------

    async def step(self, words: list[str]) -> dict[str, Any]:
        name, args = words[0], words[1:]
        if name == "connect":
            if self.url is None:
                raise StepFailed("connect needs --url")
            # ``--url`` may name several nodes, comma-separated: the client moves between them.
            urls = self.url.split(",")
            self.sync = SyncClient(self.shell, urls, backoff=Backoff(initial=0.1, cap=1.0))
            self.sync.start()
            await self.wait(self.sync.connected.is_set, f"a connection to {self.url}")
            return {"session": self.node.session, "connected": self.url}
        if name == "disconnect":
            if self.sync is not None:
                await self.sync.stop()
                self.sync = None
            return {}
        if name == "create-group":
            return {"id": self.node.create_group().id}
        if name == "create-map":
            return {"id": self.node.create_map(CoValueID(args[0])).id}
        if name == "role":
            self.written.add(self.node.session)
            self.node.set_role(CoValueID(args[0]), AccountID(args[1]), args[2])
            return {}
        if name == "load":
            cid = CoValueID(args[0])
            self.shell.manager.load(cid)
            self.shell.dispatch()
            await self.wait(lambda: self.has_all_the_node_announced(cid), f"{cid} from the node")
            return {"id": cid}
        if name == "write":
            cid, prefix, n = CoValueID(args[0]), args[1], int(args[2])
            pause = float(args[3]) / 1000 if len(args) > 3 else 0.0
            for i in range(n):
                self.written.add(self.node.session)
                self.node.set(cid, f"{prefix}{i}", {"by": self.node.instance_id, "i": i})
                if pause:
                    await asyncio.sleep(pause)
            self.node.flush()
            return {"session": self.node.session}
        if name == "pause-persist":
            self.node.flush()
            self.held.hold()
            return {}
        if name == "resume-persist":
            self.held.release()
            self.node.flush()
            return {}
        if name == "ack":
            cid = CoValueID(args[0])
            self.node.flush()
            await self.wait(lambda: self.is_acked(cid), f"the node's acknowledgement of {cid}")
            return {"acked": {sid: n for sid, (n, _h) in self.own_heads(cid).items()}}
        if name == "ack-account":
            cid = CoValueID(args[0])
            self.node.flush()

            def all_acked() -> bool:
                acked = self.acked.get(cid)
                core = self.node.get(cid)
                return acked is not None and all(
                    acked.get(sid) == log.head()
                    for sid, log in core.sessions.items()
                    if log.signed_count and session_account(sid) == self.key.account_id
                )

            await self.wait(all_acked, f"the node's acknowledgement of every session of this account in {cid}")
            return {}
        if name == "wait-keys":
            cid, n = CoValueID(args[0]), int(args[1])
            await self.wait(
                lambda: self.node.get_or_none(cid) is not None and len(self.node.get_map(cid)) >= n,
                f"{n} keys in {cid}",
                float(args[2]) if len(args) > 2 else None,
            )
            return {"keys": len(self.node.get_map(cid))}
        if name == "wait-event":
            kind, n = args[0], int(args[1]) if len(args) > 1 else 1
            await self.wait(lambda: sum(e.kind == kind for e in self.events) >= n, f"{n} {kind} event(s)")
            return {}
        if name == "report":
            return {"report": self.report(CoValueID(args[0]))}
        if name == "hang":
            emit({"hanging": True})
            await self.hang.wait()
            return {}
        raise StepFailed(f"unknown step {name!r}")

    async def close(self) -> None:
        if self.sync is not None:
            await self.sync.stop()
        self.shell.close()
        self.node.close()


async def read_stdin_lines() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(args: argparse.Namespace) -> int:
    client = Client(args)
    seq = 0
    stdin = await read_stdin_lines() if args.interactive else None
    pending = [shlex.split(s) for s in args.steps]
    try:
        while True:
            if pending:
                words = pending.pop(0)
            elif stdin is not None:
                line = (await stdin.readline()).decode()
                if not line:
                    break
                words = shlex.split(line)
                if not words:
                    continue
            else:
                break
            if words[0] == "quit":
                emit({"seq": seq, "step": "quit"})
                break
            try:
                result = await client.step(words)
            except Exception as exc:
                emit({"seq": seq, "step": words[0], "error": f"{type(exc).__name__}: {exc}"})
                return 1
            emit({"seq": seq, "step": words[0], **result})
            seq += 1
    finally:
        await client.close()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="_client.py")
    parser.add_argument("--url")
    parser.add_argument("--key", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--session", help="write in this session, bypassing the lease (on purpose)")
    parser.add_argument("--instance", default="client")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds any one wait may take")
    parser.add_argument("--interactive", action="store_true", help="then read more steps from stdin")
    parser.add_argument(
        "--stall-before-correction",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="block this long between announcing a correction and applying it",
    )
    parser.add_argument(
        "--known-crosses-correction",
        action="store_true",
        help="when a correction arrives, first send the node our known state of that CoValue, as "
        "if it had been sent a moment before (the two cross on the wire)",
    )
    parser.add_argument("steps", nargs="*")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
