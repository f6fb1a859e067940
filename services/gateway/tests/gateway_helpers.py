"""Real servers for the gateway's tests: no mocked HTTP, only sockets on 127.0.0.1.

* ``ServerThread``: any WSGI app behind werkzeug's ``make_server`` on a free port.
* ``echo_app``: a fake service that answers with what it received (method, path, query,
  headers, body size and hash) and misbehaves on request (``?_sleep=``, ``?_status=``,
  ``?_headers=1``, ``?_stream=1``), serves ``/readyz`` and ``/openapi.json`` from its state.
* ``RawServer``: a TCP server that drops the first connections or answers garbage.
* ``closed_port``: a port nobody listens on (connections are refused).
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

from crm_kit.settings import SERVICES, load_settings
from crm_kit.web import issue_token

SECRET = "gateway-tests-secret-that-is-long-enough-for-hs256"
PROBLEM = "application/problem+json"


def token(roles: list[str] | None = None, *, ttl: int = 3600, secret: str = SECRET, user: str = "u-1") -> str:
    return issue_token(secret, user_id=user, name="Uma User", office_id="office-1",
                       roles=["admin"] if roles is None else roles, ttl_seconds=ttl)


def auth(roles: list[str] | None = None, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(roles, **kw)}"}


def gateway_settings(urls: dict[str, str] | str, **env: str) -> Any:
    """Gateway settings with every service at ``urls`` (one URL for all, or name -> URL)."""
    if isinstance(urls, str):
        urls = dict.fromkeys(SERVICES, urls)
    values = {
        "CRM_SERVICE_NAME": "gateway",
        "CRM_JWT_SECRET": SECRET,
        "CRM_UPSTREAM_TIMEOUT": "5",
        "CRM_UPSTREAM_CONNECT_TIMEOUT": "1",
        "CRM_UPSTREAM_RETRIES": "2",
        "CRM_LOG_FORMAT": "text",
        **{f"CRM_{name.upper()}_URL": urls.get(name, "http://127.0.0.1:9") for name in SERVICES},
        **env,
    }
    return load_settings("gateway", values)


class _ReadsWhatArrives:
    """A socket reader whose ``read(n)`` allocates what arrives, not ``n`` bytes up front.

    After each answer werkzeug discards what the client left unsent with
    ``rfile.read(10_000_000)``, and a buffered reader allocates those 10 MB before it sees
    the end of the stream. That happens in the server's own thread, at a moment the scheduler
    picks, so a test measuring traced memory while bytes flow through the gateway would count
    a test server's 9.5 MiB. Reads of any size keep their meaning: up to ``n`` bytes, fewer
    only at the end of the stream.
    """

    STEP = 64 * 1024

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size <= self.STEP:
            return self._raw.read(size)
        got = bytearray()
        while len(got) < size and (chunk := self._raw.read1(min(self.STEP, size - len(got)))):
            got += chunk
        return bytes(got)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _Handler(WSGIRequestHandler):
    def setup(self) -> None:
        super().setup()
        self.rfile = _ReadsWhatArrives(self.rfile)  # type: ignore[assignment]


class ServerThread:
    """``app`` served by werkzeug on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class EchoState:
    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: list[dict[str, Any]] = []
        self.ready_status = 200
        self.ready_sleep = 0.0
        self.spec: dict[str, Any] | None = None
        self.spec_fetches = 0
        self.consistency_asks = 0
        self.release = threading.Event()  # lets a ?_stream=1 response finish
        self.lock = threading.Lock()

    def count(self, path: str | None = None) -> int:
        with self.lock:
            return sum(1 for h in self.hits if path is None or h["path"] == path)


def echo_app(state: EchoState) -> Flask:
    app = Flask(f"fake-{state.name}")

    @app.route("/readyz")
    def readyz() -> Response:
        time.sleep(state.ready_sleep)
        return Response(json.dumps({"status": "x"}), status=state.ready_status, mimetype="application/json")

    @app.route("/openapi.json")
    def spec() -> Response:
        state.spec_fetches += 1
        if state.spec is None:
            return Response("{}", status=404, mimetype="application/json")
        return Response(json.dumps(state.spec), mimetype="application/json")

    @app.route("/internal/consistency")
    def consistency() -> Response:
        # Where its outbox stands: nothing written, nothing to wait for (not counted as a hit).
        state.consistency_asks += 1
        return Response(json.dumps({"outbox_id": 0, "positions": {}}), mimetype="application/json")

    @app.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    @app.route("/<path:path>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def echo(path: str) -> Response:
        digest, length, head = hashlib.sha256(), 0, b""
        while chunk := request.stream.read(65536):
            digest.update(chunk)
            length += len(chunk)
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
        hit = {
            "service": state.name,
            "method": request.method,
            "path": request.path,
            "remote_port": request.environ.get("REMOTE_PORT"),  # one value per connection
            "query": request.query_string.decode(),
            "args": request.args.to_dict(flat=False),
            "headers": dict(request.headers),
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "body": head.decode("utf-8", "replace"),
        }
        with state.lock:
            state.hits.append(hit)
        if "_sleep" in request.args:
            time.sleep(float(request.args["_sleep"]))
        status = int(request.args.get("_status", "200"))
        if "_stream" in request.args:
            def chunks() -> Iterator[bytes]:
                yield b"first\n"
                state.release.wait(10)
                yield b"second\n"
            return Response(chunks(), status=status, mimetype="text/plain")
        resp = Response(json.dumps(hit), status=status, mimetype="application/json")
        if status == 204:
            resp = Response(status=204)
            del resp.headers["Content-Type"]
        if request.args.get("_headers"):
            base = request.host_url.rstrip("/")
            resp.headers["ETag"] = '"7"'
            resp.headers["Location"] = f"{base}/v1/leads/abc"
            resp.headers["Link"] = f'<{base}/v1/leads?page_token=t2>; rel="next"'
            resp.headers["Retry-After"] = "3"
            resp.headers["Idempotent-Replayed"] = "true"
            resp.headers["Content-Disposition"] = 'attachment; filename="a.txt"'
            resp.headers["Set-Cookie"] = "session=secret; Path=/"
            resp.headers["X-Internal-Secret"] = "do-not-leak"
            resp.headers["Server"] = "internal-server/1.0"
        return resp

    return app


class Echo:
    """A running fake service."""

    def __init__(self, name: str = "leads") -> None:
        self.state = EchoState(name)
        self.server = ServerThread(echo_app(self.state))
        self.url = self.server.url

    @property
    def hits(self) -> list[dict[str, Any]]:
        return self.state.hits

    def close(self) -> None:
        self.state.release.set()
        self.server.close()


class RawServer:
    """A TCP server that resets the first ``drop`` connections, then answers ``reply``.

    ``connections`` counts the connections accepted (the upstream "hits"), ``requests`` the
    requests answered. With ``keep_alive`` a connection answers request after request (what
    werkzeug's development server never does), else it is closed after one.
    """

    OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: close\r\n\r\n" \
         b'{"ok":true}'
    KEEP_ALIVE_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n" \
                    b'{"ok":true}'

    def __init__(self, *, drop: int = 0, reply: bytes | None = None, keep_alive: bool = False) -> None:
        self.drop = drop
        self.keep_alive = keep_alive
        self.reply = reply if reply is not None else (self.KEEP_ALIVE_OK if keep_alive else self.OK)
        self.connections = 0
        self.requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.drop:
                # Reset: SO_LINGER with a zero timeout makes close() send RST.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        buffered = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffered += chunk
                _, _, buffered = buffered.partition(b"\r\n\r\n")  # requests without bodies only
                self.requests += 1
                conn.sendall(self.reply)
                if not self.keep_alive:
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(2)


class ClosedPort:
    """A port bound but not listening: connecting to it is refused, and nobody else can take it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
