"""Pooled connections are retired before the server closes them for idleness.

The server here is a real one on loopback that behaves as a keep-alive server at its worst:
a connection idle for its keep-alive time is closed in the very moment the next request
arrives on it (unanswered), which is the race the pool must never run into. With a keep-alive
of 0 every reuse meets that close, so no test waits for time to pass.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from crm_kit import keepalive
from crm_kit.web import gunicorn_conf


class ClosingServer:
    """Answers ``200 ok`` on kept-alive connections; closes one idle for ``keepalive`` seconds, unanswered."""

    def __init__(self, keepalive: float) -> None:
        self.keepalive = keepalive
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.answered: list[int] = []  # the number of the connection each answer went out on
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        idle_since = None
        buffered = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffered) < length:
                    buffered += conn.recv(65536)
                buffered = buffered[length:]
                if idle_since is not None and time.monotonic() - idle_since >= self.keepalive:
                    return  # closed for idleness as the request came in: never answered
                self.answered.append(number)  # before the answer goes: the client may look at once
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                idle_since = time.monotonic()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def closing() -> Iterator[ClosingServer]:
    """Closes every connection that is used again: the race at its worst, on every reuse."""
    s = ClosingServer(keepalive=0.0)
    yield s
    s.close()


@pytest.fixture
def keeping() -> Iterator[ClosingServer]:
    s = ClosingServer(keepalive=math.inf)
    yield s
    s.close()


def _post_twice(session: requests.Session, url: str) -> requests.Response:
    assert session.post(url, data=b"first", timeout=5).text == "ok"
    return session.post(url, data=b"second", timeout=5)


def test_a_post_on_a_connection_idle_past_the_limit_goes_out_on_a_fresh_one(closing: ClosingServer) -> None:
    session = keepalive.pooled_session(pool_size=2, idle_seconds=0)
    assert _post_twice(session, closing.url).text == "ok"
    assert closing.answered == [1, 2]


def test_without_retiring_the_same_post_meets_the_closing_connection(closing: ClosingServer) -> None:
    """The control: what a plain pool does against the same server (so the test above can fail)."""
    session = requests.Session()
    with pytest.raises(requests.ConnectionError):
        _post_twice(session, closing.url)
    assert closing.answered == [1]


def test_connections_in_use_are_kept_alive(keeping: ClosingServer) -> None:
    session = keepalive.pooled_session(pool_size=2, idle_seconds=30)
    for n in range(5):
        assert session.post(keeping.url, data=str(n).encode(), timeout=5).text == "ok"
    assert keeping.answered == [1] * 5


def test_the_pool_retires_connections_before_our_servers_close_them() -> None:
    assert keepalive.IDLE_SECONDS * 2 <= gunicorn_conf.keepalive
