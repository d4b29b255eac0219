"""The network proxy, as a real process in front of a real TCP echo server."""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import processes_mentioning

from graduate.chaos.proxy import Proxy, ProxyState
from graduate.errors import ServiceError

# How long silence must last to count as "nothing came back": a bounded check of absence.
SILENCE = 1.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: EchoServer = self.server  # type: ignore[assignment]
        while data := self.request.recv(4096):
            with server.lock:
                server.received.extend(data)
            self.request.sendall(data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64  # the default backlog of 5 would drop connections made at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.received = bytearray()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def proxy(tmp_path: Path, echo: EchoServer) -> Iterator[Proxy]:
    started = Proxy.start(tmp_path, "proxy", "127.0.0.1", echo.port)
    yield started
    started.stop()


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=SILENCE)


def echoed(conn: socket.socket, data: bytes) -> bytes:
    conn.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = conn.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


def state_of(proxy: Proxy) -> ProxyState:
    # A call, not the property, so that the type checker does not carry one assert's
    # narrowing over to the next after the state changed.
    return proxy.state


def closed(conn: socket.socket) -> bool:
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True


def test_forwards_both_ways_on_many_connections(proxy: Proxy) -> None:
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    assert proxy.state is ProxyState.FORWARDING
    conns = [connect(proxy) for _ in range(20)]
    try:
        for number, conn in enumerate(conns):
            conn.sendall(f"hello {number}".encode())
        for number, conn in enumerate(conns):
            want = f"hello {number}".encode()
            got = b""
            while len(got) < len(want):
                got += conn.recv(4096)
            assert got == want
    finally:
        for conn in conns:
            conn.close()


def test_cut_blackholes_and_heal_closes_what_lived_through_it(
        tmp_path: Path, proxy: Proxy, echo: EchoServer) -> None:
    before = connect(proxy)
    assert echoed(before, b"before") == b"before"

    proxy.cut()
    assert state_of(proxy) is ProxyState.CUT
    during = connect(proxy)  # accepted, but leads nowhere
    before.sendall(b"lost-1")
    during.sendall(b"lost-2")
    readable, _, _ = select.select([before, during], [], [], SILENCE)
    assert readable == []
    assert echo.received == bytearray(b"before")

    proxy.heal()
    assert state_of(proxy) is ProxyState.FORWARDING
    assert closed(before)
    assert closed(during)
    after = connect(proxy)
    assert echoed(after, b"after") == b"after"
    # What was sent into the cut was dropped, not delivered late.
    assert echo.received == bytearray(b"beforeafter")
    for conn in (before, during, after):
        conn.close()

    proxy.stop()
    assert state_of(proxy) is ProxyState.STOPPED
    assert processes_mentioning(str(tmp_path)) == []
    with pytest.raises(ServiceError, match="not running"):
        proxy.cut()


def test_target_down_closes_the_client_connection(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        nobody = int(holder.getsockname()[1])  # bound, not listening: connections refused
        proxy = Proxy.start(tmp_path, "proxy", "127.0.0.1", nobody)
        try:
            conn = connect(proxy)
            assert closed(conn)
            conn.close()
        finally:
            proxy.stop()
