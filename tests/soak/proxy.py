"""A loopback TCP proxy that misbehaves on command, between the soak's clients and its node.

:class:`FaultyProxy` listens on 127.0.0.1 and relays each accepted connection to the node's
current address (:meth:`FaultyProxy.set_upstream`; None while the node is down: new
connections are then closed at once). It runs its own asyncio loop in a thread; every
control method is called from the test's thread and returns once the loop applied it.

A WebSocket is a TCP byte stream, so the proxy never removes bytes from the middle of one:
its faults are those a network really has.

- :meth:`cut`: abort one connection, or all (both sides see a reset).
- :meth:`stall`: stop forwarding (the bytes wait; TCP backpressure then stalls the senders)
  for some seconds, then resume — or cut, as a link that went dark and never came back.
- :meth:`delay`: forward each chunk only after a latency, for some seconds.
- :meth:`refuse`: close every new connection at once, for some seconds (a link that is down).
- :meth:`heal`: end every fault now; connections pass untouched from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

#: Bytes read from one side before they are forwarded to the other.
CHUNK = 64 * 1024
#: Seconds the proxy may take to reach the node before it gives a connection up.
CONNECT_TIMEOUT = 5.0
#: Seconds a control call waits for the proxy's loop to apply it.
CONTROL_TIMEOUT = 10.0

T = TypeVar("T")


@dataclass
class Link:
    """One relayed connection: the client's side, the node's side, the two pumps."""

    number: int
    client: asyncio.StreamWriter
    node: asyncio.StreamWriter
    #: set while this link forwards (cleared by a stall)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.node):
            writer.transport.abort()


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cut: int = 0
    stalled: int = 0
    delayed: int = 0
    bytes: int = 0


class FaultyProxy:
    """See the module docstring. Use as a context manager: ``with FaultyProxy() as p:``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="soak-proxy", daemon=True)
        self.stats = ProxyStats()
        self.port = 0
        self._upstream: int | None = None
        self._links: dict[int, Link] = {}
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._latency = 0.0
        self._refusing = False
        self._timers: list[asyncio.TimerHandle] = []
        self._handlers: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FaultyProxy:
        self.thread.start()
        self.port = self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(CONTROL_TIMEOUT)
            self.loop.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CONTROL_TIMEOUT)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _stop(self) -> None:
        self._heal()
        if self._server is not None:
            self._server.close()
        for link in list(self._links.values()):
            link.abort()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- controls (from the test's thread) ---------------------------------------------------

    def set_upstream(self, port: int | None) -> None:
        """Relay new connections to 127.0.0.1:``port`` (None: the node is down)."""

        def assign() -> None:
            self._upstream = port

        self._call(self._run(assign))

    def connections(self) -> int:
        return self._call(self._run(lambda: len(self._links)))

    def cut(self, which: int | None = None) -> int:
        """Abort connection number ``which`` (modulo the open ones, oldest first) or, with
        None, all of them; returns how many were cut."""
        return self._call(self._run(lambda: self._cut(self._pick(which))))

    def stall(self, seconds: float, *, which: int | None = None, then_cut: bool = False) -> int:
        """Stop forwarding on one connection (or all open ones) for ``seconds``; then resume,
        or cut them. Returns how many were stalled."""
        return self._call(self._run(lambda: self._stall(self._pick(which), seconds, then_cut)))

    def delay(self, latency: float, seconds: float) -> None:
        """Forward every chunk ``latency`` seconds late, for ``seconds``."""
        self._call(self._run(lambda: self._delay(latency, seconds)))

    def refuse(self, seconds: float) -> None:
        """Close every new connection at once, for ``seconds``."""
        self._call(self._run(lambda: self._refuse(seconds)))

    def heal(self) -> None:
        """End every fault now."""
        self._call(self._run(self._heal))

    @staticmethod
    async def _run(action: Callable[[], T]) -> T:
        return action()

    # -- on the loop -------------------------------------------------------------------------

    def _pick(self, which: int | None) -> list[Link]:
        links = sorted(self._links.values(), key=lambda link: link.number)
        if which is None or not links:
            return links
        return [links[which % len(links)]]

    def _cut(self, links: list[Link]) -> int:
        for link in links:
            link.abort()
        self.stats.cut += len(links)
        return len(links)

    def _stall(self, links: list[Link], seconds: float, then_cut: bool) -> int:
        for link in links:
            link.flowing.clear()

        def end() -> None:
            live = [link for link in links if link.number in self._links]
            if then_cut:
                self._cut(live)
            for link in live:
                link.flowing.set()

        self._later(seconds, end)
        self.stats.stalled += len(links)
        return len(links)

    def _delay(self, latency: float, seconds: float) -> None:
        self._latency = latency
        self.stats.delayed += 1
        self._later(seconds, lambda: setattr(self, "_latency", 0.0))

    def _refuse(self, seconds: float) -> None:
        self._refusing = True
        self._later(seconds, lambda: setattr(self, "_refusing", False))

    def _heal(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._latency = 0.0
        self._refusing = False
        for link in self._links.values():
            link.flowing.set()

    def _later(self, seconds: float, action: Callable[[], object]) -> None:
        timer: asyncio.TimerHandle

        def fire() -> None:
            self._timers.remove(timer)
            action()

        timer = self.loop.call_later(seconds, fire)
        self._timers.append(timer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _relay(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        upstream = self._upstream
        if self._refusing or upstream is None:
            self.stats.refused += 1
            client.transport.abort()
            return
        try:
            node_reader, node = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", upstream), CONNECT_TIMEOUT)
        except (OSError, TimeoutError):
            self.stats.refused += 1
            client.transport.abort()
            return
        except asyncio.CancelledError:
            client.transport.abort()
            raise
        self.stats.accepted += 1
        link = Link(next(self._numbers), client, node)
        link.flowing.set()
        self._links[link.number] = link
        link.tasks = [
            asyncio.create_task(self._pump(link, client_reader, node)),
            asyncio.create_task(self._pump(link, node_reader, client)),
        ]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # One side ended (or failed): the connection is over for both.
            del self._links[link.number]
            link.abort()
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)

    async def _pump(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    return
                await link.flowing.wait()
                if self._latency:
                    await asyncio.sleep(self._latency)
                    await link.flowing.wait()
                writer.write(data)
                self.stats.bytes += len(data)
                await writer.drain()
