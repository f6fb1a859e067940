"""A real HTTP receiver on loopback for webhook tests: it records every request it gets, answers
as the test says (a status, or holding the request until released), can go down and come back
on the same port, and verifies signatures with the Standard Webhooks reference verifier."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """``answer(received_count) -> status`` decides each answer (default 200); ``headers`` are sent
    with every answer; ``hold`` (an Event) keeps each request open until it is set."""

    def __init__(self, answer: Callable[[int], int] | None = None, headers: dict[str, str] | None = None) -> None:
        self.headers = dict(headers or {})
        self.answer = answer or (lambda _n: 200)
        self.hold: threading.Event | None = None
        self.requests: list[Received] = []
        self.processed: dict[str, Received] = {}  # an idempotent receiver: the first 2xx per webhook-id
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                with receiver.lock:
                    status = receiver.answer(len(receiver.requests))
                    got = Received({k.lower(): v for k, v in self.headers.items()}, body, status)
                    receiver.requests.append(got)
                    if 200 <= status < 300:
                        receiver.processed.setdefault(got.webhook_id, got)
                    receiver.arrived.notify_all()
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, done: Callable[[Receiver], bool], timeout: float = 60, what: str = "") -> None:
        """Wait until ``done(self)`` holds (checked on each request that arrives)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not done(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}: {len(self.requests)} requests, "
                                         f"{len(self.processed)} processed")
                self.arrived.wait(left)

    def verified(self, secret: str) -> list[Any]:
        """The processed deliveries' payloads, each verified by the reference verifier (raises if one is not)."""
        verifier = Webhook(secret)
        with self.lock:
            return [verifier.verify(r.body, r.headers) for r in self.processed.values()]
