"""The embedded default: a live in-process node with the demo's clients.

:class:`LiveDemoTarget` starts an :class:`~engine.demo_embedded.EmbeddedDemo` in a temporary
working directory, on the loop the window runs on, and inspects its node live: the demo story
(two tabs forking a session, a client killed after the node acknowledged what it never
persisted, a deleted CoValue, contended CAS slots) plays while the target opens, and then
Alice and Bob keep editing and a peer that stopped reading is closed as lagged and comes back.
The target records the node's sync events from before the story starts, so the forks it
detected are all there; the peers view reads the node's shell.

Pace: the stalled peer is closed as lagged only once its socket buffers are full of the live
edits it follows, which at the demo's own pace (one edit per client every 0.5 s) takes
minutes. So the clients edit briskly (:data:`BRISK_EDIT_INTERVAL`) until the first lagged
close, then at :data:`CALM_EDIT_INTERVAL` (checked by :meth:`LiveDemoTarget.poll`).

Closing stops the demo (clients, stalled peer, server, shell, node) and removes the
directory.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engine import __version__
from engine.demo.embedded import EDIT_INTERVAL, EmbeddedDemo
from engine.protocol.limits import FEATURES, PROTOCOL_VERSION
from inspector.targets.base import NodeInfo, TargetSpec
from inspector.targets.node import NodeTarget
from inspector.workers import WorkerPool

__all__ = ["BRISK_EDIT_INTERVAL", "CALM_EDIT_INTERVAL", "LiveDemoTarget"]

#: Seconds between each live client's edits until the stalled peer was first closed as lagged.
BRISK_EDIT_INTERVAL = 0.02
#: ... and after that.
CALM_EDIT_INTERVAL = EDIT_INTERVAL


class LiveDemoTarget(NodeTarget):
    """``edit_interval``/``calm_interval``: the clients' pace before/after the first lag."""

    def __init__(
        self,
        spec: TargetSpec,
        pool: WorkerPool,
        *,
        edit_interval: float = BRISK_EDIT_INTERVAL,
        calm_interval: float = CALM_EDIT_INTERVAL,
    ) -> None:
        super().__init__(spec, pool, owns_node=False)
        self.edit_interval = edit_interval
        self.calm_interval = calm_interval
        self.demo: EmbeddedDemo | None = None
        self.directory: Path | None = None

    async def open(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="kintsugi-demo-"))
        try:
            demo = EmbeddedDemo(self.directory, edit_interval=self.edit_interval)
            self.demo = demo
            self.shell = demo.shell
            self.listen()  # before the story: its forks are detected while it plays
            await demo.start()
            self.node = demo.node
            self.node_info = NodeInfo(demo.server.name, __version__, PROTOCOL_VERSION, FEATURES, demo.url, True)
            await super().open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await super().close()
        demo, self.demo = self.demo, None
        if demo is not None:
            await demo.stop()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    @property
    def lagged_closes(self) -> int:
        """Times the node closed a peer as lagged (in the peer log it keeps)."""
        return sum(1 for entry in self.demo.shell.peer_log if entry.lagged) if self.demo is not None else 0

    async def poll(self) -> None:
        demo = self.demo
        if demo is not None and demo.edit_interval != self.calm_interval and self.lagged_closes:
            demo.edit_interval = self.calm_interval
