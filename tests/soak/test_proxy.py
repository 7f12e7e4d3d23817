"""The soak's faulty proxy over real loopback sockets: it relays bytes untouched, and each
fault does what it says (cut, stall then resume or cut, delay, refuse, node down, heal)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.soak.proxy import FaultyProxy
from tests.util import timeout, wait_until


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


@pytest.fixture
def proxy() -> Iterator[FaultyProxy]:
    server = EchoServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with FaultyProxy() as proxy:
            proxy.set_upstream(server.server_address[1])
            yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout(5))


def connect(proxy: FaultyProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout(5))
    sock.settimeout(timeout(5))
    return sock


def echo(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def is_closed(sock: socket.socket) -> bool:
    """The proxy ended this connection (reset or end of stream), within the socket timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_bytes_pass_untouched(proxy: FaultyProxy) -> None:
    payload = bytes(range(256)) * 1000
    with connect(proxy) as sock:
        assert echo(sock, payload) == payload
    assert proxy.stats.accepted == 1


def test_cut_one_or_all(proxy: FaultyProxy) -> None:
    socks = [connect(proxy) for _ in range(3)]
    try:
        for sock in socks:
            assert echo(sock, b"hi") == b"hi"
        assert proxy.cut(1) == 1
        assert is_closed(socks[1])
        assert echo(socks[0], b"still") == b"still"
        assert proxy.cut() == 2
        assert is_closed(socks[0]) and is_closed(socks[2])
        wait_until(lambda: proxy.connections() == 0, 5, "the cut connections to go")
    finally:
        for sock in socks:
            sock.close()


def test_a_stall_holds_bytes_then_resumes(proxy: FaultyProxy) -> None:
    with connect(proxy) as sock:
        assert echo(sock, b"before") == b"before"
        stall = 0.5
        started = time.monotonic()
        assert proxy.stall(stall) == 1
        assert echo(sock, b"held") == b"held"
        assert time.monotonic() - started >= stall


def test_a_stall_can_end_in_a_cut(proxy: FaultyProxy) -> None:
    with connect(proxy) as sock:
        assert echo(sock, b"x") == b"x"
        proxy.stall(0.2, then_cut=True)
        sock.sendall(b"never answered")
        assert is_closed(sock)


def test_a_delay_makes_every_chunk_late(proxy: FaultyProxy) -> None:
    with connect(proxy) as sock:
        proxy.delay(0.2, 10)
        started = time.monotonic()
        assert echo(sock, b"late") == b"late"
        assert time.monotonic() - started >= 0.4  # once each way
        proxy.heal()
        started = time.monotonic()
        assert echo(sock, b"prompt") == b"prompt"
        assert time.monotonic() - started < timeout(0.4)


def test_refusing_and_a_node_down_close_new_connections(proxy: FaultyProxy) -> None:
    proxy.refuse(10)
    with connect(proxy) as sock:
        assert is_closed(sock)
    proxy.heal()
    with connect(proxy) as sock:
        assert echo(sock, b"back") == b"back"
    proxy.set_upstream(None)
    with connect(proxy) as sock:
        assert is_closed(sock)
    assert proxy.stats.refused == 2


def test_heal_ends_a_stall_at_once(proxy: FaultyProxy) -> None:
    with connect(proxy) as sock:
        proxy.stall(60)
        sock.sendall(b"waiting")
        proxy.heal()
        got = b""
        while len(got) < len(b"waiting") and (chunk := sock.recv(100)):
            got += chunk
        assert got == b"waiting"
