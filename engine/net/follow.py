"""Following the other nodes of a cluster (DESIGN §9): a node on a store that other nodes
write (PostgreSQL) catches up from the store's change log and tells its peers.

:class:`ClusterFollower` keeps the node's cursor in the change log (it starts at the newest
change when the node starts: what was written before is loaded from the store on first use).
It catches up when the store's feed is woken by a notification, and every ``poll_interval``
seconds anyway, so a lost notification costs latency, never data
(:mod:`engine.storage.postgres.feed`). For the CoValues other nodes changed that the node holds
in memory, one read (off the loop) brings what the store holds beyond memory, and the node
takes it in, verified (:meth:`engine.node.LocalNode.absorb_tails`); a CoValue not in memory
that a peer asked for is loaded now. Either way the sync manager then sends each interested
peer what it lacks, exactly as for content that arrived from a peer. CAS slots other nodes
stored are handed to the sync manager, which tells the watches that cover them.

For a CoValue the follower is :meth:`~ClusterFollower.unsure` of (a commit of it announced and
not taken in yet, or the follower not listening or failing), the shell reads through the feed,
before judging content from a peer, the sessions it names (:attr:`SyncShell.follower
<engine.net.shell.SyncShell.follower>`).

A failed read (the database unreachable) is logged and tried again at the next wake or poll,
from the same cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engine.errors import KintsugiError
from engine.ids import CoValueID
from engine.net.shell import SyncShell
from engine.storage.interface import ChangeFeed

__all__ = ["DEFAULT_POLL_INTERVAL", "MAX_COVALUES_PER_READ", "MAX_PAGES_PER_CATCH_UP", "ClusterFollower"]

logger = logging.getLogger(__name__)

#: Seconds between catch-ups without a notification (the store's feed module documents the
#: same default): the most a lost notification delays this node.
DEFAULT_POLL_INTERVAL = 1.0
#: Pages read in one catch-up before the loop yields to other work (the rest follows at once).
MAX_PAGES_PER_CATCH_UP = 10
#: CoValues whose stored sessions one read brings (a catch-up that names more reads in turns).
MAX_COVALUES_PER_READ = 1_000


class ClusterFollower:
    """Catches a node up with what other nodes wrote to its store (see the module)."""

    def __init__(self, shell: SyncShell, feed: ChangeFeed, *, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        self.shell = shell
        self.node = shell.node
        self.feed = feed
        self.poll_interval = poll_interval
        #: the last change number caught up to
        self.cursor = 0
        #: the newest change number the store had at the last catch-up
        self.newest = 0
        #: catch-ups done, and CoValues refreshed by them
        self.catch_ups = 0
        self.refreshed = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed = False
        self._stopping = False
        #: CoValues other nodes' commits were announced for since the last catch-up began
        #: (None: unknown, some were not named), and those of the catch-up under way
        self._announced: set[str] | None = set()
        self._catching: set[str] | None = set()

    @property
    def current(self) -> bool:
        """Listening, caught up, and nothing announced since: memory holds what the store
        held a notification's delay ago."""
        return self._sure() and not self._announced and not self._catching

    def unsure(self, covalue: CoValueID) -> bool:
        """Whether the store may hold more of ``covalue`` than memory, beyond a notification's
        delay: a commit of it was announced and not yet taken in, or the follower cannot tell
        (not listening, its last catch-up failed, a notification that named no ids)."""
        if not self._sure() or self._announced is None or self._catching is None:
            return True
        return covalue in self._announced or covalue in self._catching

    def _sure(self) -> bool:
        return self._task is not None and self.feed.listening and not self._failed

    @property
    def lag(self) -> int:
        """Change numbers this node is behind the store, as of its last catch-up."""
        return max(0, self.newest - self.cursor)

    async def start(self) -> None:
        """Take the newest change as the cursor, listen, and follow until :meth:`stop`.
        Raises the store's typed errors when the feed cannot start."""
        self._loop = asyncio.get_running_loop()
        self.cursor = self.newest = await asyncio.to_thread(self.feed.newest)
        await asyncio.to_thread(self.feed.start, self._announce_threadsafe)
        self._task = self._loop.create_task(self._run(), name="kintsugi-cluster-follower")
        self.shell.follower = self

    async def stop(self) -> None:
        if self.shell.follower is self:
            self.shell.follower = None
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.feed.close)

    def wake(self) -> None:
        """Catch up now (on the node's loop)."""
        self._wake.set()

    def _announce(self, ids: tuple[str, ...] | None) -> None:
        if ids is None or self._announced is None:
            self._announced = None
        else:
            self._announced.update(ids)
        self._wake.set()

    def _announce_threadsafe(self, ids: tuple[str, ...] | None) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._announce, ids)

    async def _run(self) -> None:
        while not self._stopping:
            # asyncio.timeout, not wait_for: wait_for may swallow a cancellation that comes
            # as the wake-up does, and the follower would then outlive stop().
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            if self._stopping:
                return
            self._wake.clear()
            # What was announced so far is in the log this catch-up reads; announced later
            # is for the next one.
            self._catching, self._announced = self._announced, set()
            try:
                await self.catch_up()
                self._failed = False
                self._catching = set()
            except KintsugiError as exc:
                self._failed = True
                self._announced = None  # what it did not take in: unknown
                logger.warning("could not catch up with the store (at change %d): %s", self.cursor, exc)

    async def catch_up(self) -> None:
        """Read the changes after the cursor and refresh what they name (see the module)."""
        self.catch_ups += 1
        for _page in range(MAX_PAGES_PER_CATCH_UP):
            page = await asyncio.wrap_future(self.feed.read(self.cursor))
            self.newest = page.newest
            named = list(page.covalues)
            if page.gap:
                logger.warning("changes after %d were pruned; refreshing everything held", self.cursor)
                named = list(self.node.covalues) + named
            for first in range(0, len(named), MAX_COVALUES_PER_READ):
                await self._refresh(named[first : first + MAX_COVALUES_PER_READ])
            if page.slots and not self.node.closed:
                self.shell.manager.kv_stored_elsewhere(page.slots)
                self.shell.schedule_dispatch()
            self.cursor = page.cursor
            if page.newest <= page.cursor:
                return
        self._wake.set()  # more to read: go on after other work had its turn

    async def _refresh(self, covalues: list[CoValueID]) -> None:
        """Bring the CoValues held in memory up to the store (one read for all of them, off
        the loop), and load those a peer asked for before they were here."""
        requests = {}
        late = []
        for cid in dict.fromkeys(covalues):
            request = self.node.stored_request(cid, None)
            if request is not None:
                requests[cid] = request
            elif cid not in self.node.covalues and any(
                cid in peer.interested for peer in self.shell.manager.peers.values()
            ):
                late.append(cid)
        changed = 0
        if requests:
            tails = await asyncio.wrap_future(self.feed.read_tails(requests, exclude=self.node.session))
            for cid in requests:
                if self.node.closed:
                    return
                try:
                    changed += self.node.absorb_tails(cid, tails.get(cid, []))
                except KintsugiError as exc:
                    logger.warning("could not refresh %s from the store: %s", cid, exc)
        for cid in late:  # a peer asked for it before it was here: load it now and answer
            if self.node.closed:
                return
            try:
                loaded = self.node.get_or_none(cid) is not None
            except KintsugiError as exc:
                logger.warning("could not load %s from the store: %s", cid, exc)
                continue
            if loaded:
                self.shell.manager.local_changed(cid)
                changed += 1
        if changed:
            self.refreshed += changed
            self.shell.schedule_dispatch()
