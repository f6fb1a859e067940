"""Forwarding a request to the service that owns it, streamed both ways.

One pooled ``requests.Session`` per service (keep-alive connections retired before the service
would close them, ``crm_kit.keepalive``; no cookies kept, no proxies or ``.netrc`` taken from the
environment). The request body is read from the
client in chunks while it is sent upstream, and the response body is passed on the same
way: the gateway never holds a whole body in memory.

Failures never hang and never leak an internal address or a stack trace:

* the service cannot be reached (connection refused, unknown host, connect timeout):
  503 with ``Retry-After`` - idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE) are
  first tried again ``CRM_UPSTREAM_RETRIES`` times with a short backoff;
* no answer within ``CRM_UPSTREAM_TIMEOUT``: 504 (not retried: the service may be working);
* anything that is not a valid HTTP response: 502.

A request that is not idempotent (POST, PATCH) is sent once, whatever happens; an
idempotent one is tried again only when the connection failed before a response, and
never once its body has begun to flow (it cannot be sent twice).
"""

from __future__ import annotations

import http.client
import logging
import time
from collections.abc import Iterator
from http.cookiejar import DefaultCookiePolicy
from typing import IO, Any
from urllib.parse import quote

import requests
import urllib3.exceptions
from flask import Response, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from crm_gateway import metrics
from crm_kit import correlation
from crm_kit.keepalive import pooled_session
from crm_kit.web import Problem

log = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

# End-to-end request headers the services need; everything else stays at the gateway.
FORWARDED_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Accept", "Accept-Language", "Accept-Encoding",
    "If-Match", "If-None-Match", "Idempotency-Key",
)
# Response headers a client may see; the rest (Server, Set-Cookie, internal ones) is dropped.
FORWARDED_RESPONSE_HEADERS = (
    "Content-Type", "Content-Length", "Content-Encoding", "Content-Language", "Content-Disposition",
    "ETag", "Last-Modified", "Location", "Link", "Retry-After", "Idempotent-Replayed", "Allow",
    "WWW-Authenticate", "Cache-Control", "Vary", "Content-Security-Policy",
)

CHUNK = 64 * 1024
RETRY_AFTER_SECONDS = 2
_NO_BODY_STATUSES = frozenset({204, 304})
# Characters left as they are when the (decoded) path is quoted again for the service.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?%[]"


class ClientBodyError(Exception):
    """The client's request body could not be read (too large, or the client went away)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UpstreamError(Exception):
    """A service gave no usable answer: ``kind`` is connect_error, timeout or bad_response."""

    def __init__(self, service: str, kind: str, detail: str = "") -> None:
        super().__init__(f"{service}: {kind}: {detail}")
        self.service = service
        self.kind = kind

    def problem(self, timeout: float) -> Problem:
        if self.kind == CONNECT_ERROR:
            return Problem(503, f"The {self.service} service is unavailable; retry shortly.",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        if self.kind == TIMEOUT:
            return Problem(504, f"The {self.service} service did not answer within {timeout:g} seconds.")
        return Problem(502, f"The {self.service} service sent an invalid response.")


CONNECT_ERROR, TIMEOUT, BAD_RESPONSE = "connect_error", "timeout", "bad_response"
_CONNECT_FAILURES = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError,
                     requests.exceptions.ConnectTimeout)
_TIMEOUTS = (urllib3.exceptions.ReadTimeoutError, requests.exceptions.ReadTimeout, TimeoutError)
# The connection dropped before any response: a stale keep-alive connection, a restarting service.
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]


def classify(exc: BaseException) -> tuple[str, bool]:
    """(kind, dropped): what went wrong, and whether the connection merely dropped before a response."""
    causes = list(_causes(exc))
    if any(isinstance(c, _CONNECT_FAILURES) for c in causes):
        return CONNECT_ERROR, False
    if any(isinstance(c, _TIMEOUTS) for c in causes):
        return TIMEOUT, False
    return BAD_RESPONSE, any(isinstance(c, _DROPPED) for c in causes)


class _NoCookies(DefaultCookiePolicy):
    """A service's cookies must never be kept and sent on another caller's request."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


class RequestBody:
    """The client's body, read in chunks as the upstream connection takes them."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.started = False
        self.error: ClientBodyError | None = None

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        try:
            while True:
                chunk = self._stream.read(CHUNK)
                if not chunk:
                    return
                yield chunk
        except RequestEntityTooLarge:
            self.error = ClientBodyError(413, "The request body is larger than this endpoint accepts.")
        except (ClientDisconnected, OSError, ValueError):
            self.error = ClientBodyError(400, "The request body ended before its announced length.")
        raise self.error


class SizedRequestBody(RequestBody):
    """A body whose ``Content-Length`` is known: sent with that length, not chunked."""

    def __init__(self, stream: IO[bytes], length: int) -> None:
        super().__init__(stream)
        self._length = length

    def __len__(self) -> int:
        return self._length


class Upstream:
    """One service: its base URL, a pooled session, timeouts and the retry policy."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        retries: int,
        pool_size: int = 32,
        backoff: float = 0.05,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        # Retries are ours (see request()); urllib3 itself never retries.
        session = pooled_session(pool_size=pool_size, max_retries=0)
        session.trust_env = False  # no proxy variables, no .netrc credentials
        session.cookies.set_policy(_NoCookies())
        session.headers.clear()
        session.headers.update({"User-Agent": "crm-gateway", "Accept-Encoding": "identity"})
        self.session = session

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: bytes | str = b"",
        headers: dict[str, str] | None = None,
        body: RequestBody | None = None,
        timeout: tuple[float, float] | None = None,
        retries: int | None = None,
        log_level: int = logging.WARNING,
    ) -> requests.Response:
        """Send one request (tried again only as the module says); the response body is not read yet.

        Raises ``ClientBodyError`` when the client's body failed, ``UpstreamError`` otherwise.
        """
        method = method.upper()
        if isinstance(query, bytes):  # as the client sent it; only bytes that cannot be in a URL get escaped
            query = quote(query, safe=_QUERY_SAFE)
        url = self.base_url + path + (f"?{query}" if query else "")
        timeout = timeout or (self.connect_timeout, self.read_timeout)
        retries = self.retries if retries is None else retries
        attempts = 1 + (retries if method in IDEMPOTENT_METHODS else 0)
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                resp = self.session.request(method, url, headers=headers, data=body, stream=True,
                                            timeout=timeout, allow_redirects=False)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                metrics.UPSTREAM_DURATION.labels(self.name).observe(time.perf_counter() - started)
                if body is not None and body.error is not None:
                    raise body.error from None
                kind, dropped = classify(exc)
                metrics.UPSTREAM_REQUESTS.labels(self.name, kind).inc()
                again = (method in IDEMPOTENT_METHODS and attempt + 1 < attempts
                         and (kind == CONNECT_ERROR or dropped) and not (body is not None and body.started))
                log.log(log_level, "%s %s to the %s service failed (%s, attempt %d of %d%s): %s", method, path,
                        self.name, kind, attempt + 1, attempts, ", trying again" if again else "", exc)
                if again:
                    metrics.UPSTREAM_RETRIES.labels(self.name).inc()
                    time.sleep(min(self.backoff * (2 ** attempt), 1.0))
                    continue
                raise UpstreamError(self.name, kind, type(exc).__name__) from None
            except ClientBodyError:
                metrics.UPSTREAM_REQUESTS.labels(self.name, "client_error").inc()
                raise
            metrics.UPSTREAM_DURATION.labels(self.name).observe(time.perf_counter() - started)
            metrics.UPSTREAM_REQUESTS.labels(self.name, str(resp.status_code)).inc()
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, path: str, timeout: tuple[float, float] | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A small JSON document (readiness, OpenAPI, a record): (status, parsed body or None). No retries."""
        resp = self.request("GET", path, headers={"Accept": "application/json", **(headers or {})}, timeout=timeout,
                            retries=0, log_level=logging.DEBUG)  # the caller reports it
        try:
            try:
                data = resp.json()
            except ValueError:
                data = None
            return resp.status_code, data
        finally:
            resp.close()

    # -- the client-facing side ---------------------------------------------------------------

    def rewrite_url(self, value: str) -> str:
        """A service's absolute URL (Location, Link) as a path on the gateway."""
        if value.startswith(self.base_url):
            rest = value[len(self.base_url):]
            return rest if rest.startswith("/") else "/" + rest
        return value.replace(f"<{self.base_url}/", "</")


def request_headers() -> dict[str, str]:
    """The headers sent upstream: the forwarded ones plus the correlation id (always set)."""
    headers = {name: value for name in FORWARDED_REQUEST_HEADERS if (value := request.headers.get(name)) is not None}
    headers.setdefault("Accept-Encoding", "identity")
    headers[correlation.HEADER] = correlation.get() or correlation.new_id()
    return headers


def request_body() -> RequestBody | None:
    """The client's body as a stream (None when the request has none)."""
    length = request.content_length
    if length:
        return SizedRequestBody(request.stream, length)
    if "chunked" in (request.headers.get("Transfer-Encoding") or "").lower():
        return RequestBody(request.stream)
    return None


def upstream_path() -> str:
    """The request's path, quoted again exactly as the service must see it."""
    return quote(request.path, safe=_PATH_SAFE)


class _Relay:
    """The service's response body, passed on chunk by chunk.

    A body read to its end gives its connection back to the pool (keep-alive); one the
    client abandoned, or that broke off, closes it.
    """

    def __init__(self, upstream: Upstream, resp: requests.Response) -> None:
        self._upstream = upstream
        self._resp = resp
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._resp.raw.stream(CHUNK, decode_content=False):
                if chunk:
                    yield chunk
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            # The status line has gone out: all we can do is cut the body short (the client sees
            # a truncated body: Content-Length not reached, or no final chunk).
            log.warning("the %s service's response broke off: %s", self._upstream.name, exc)
            self.close()
            raise UpstreamError(self._upstream.name, BAD_RESPONSE, "response broke off") from None
        self._done = True
        self._resp.raw.release_conn()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._resp.close()


def json_of_ok(resp: requests.Response) -> Any:
    """The parsed body of a service's 200 answer (None for any other status or unreadable JSON);
    the response is closed either way."""
    try:
        return resp.json() if resp.status_code == 200 else None
    except ValueError:
        return None
    finally:
        resp.close()


def _drained(resp: requests.Response) -> None:
    """A response without a body (HEAD, 204, 304): its connection goes back to the pool."""
    try:
        resp.raw.read()
        resp.raw.release_conn()
    except (urllib3.exceptions.HTTPError, OSError):
        resp.close()


def client_response(upstream: Upstream, resp: requests.Response) -> Response:
    """The service's answer for the client: status, safe headers, body streamed."""
    headers = Headers()
    upstream_headers = resp.raw.headers
    for name in FORWARDED_RESPONSE_HEADERS:
        for value in upstream_headers.getlist(name):
            if name in ("Location", "Link"):
                value = upstream.rewrite_url(value)
            headers.add(name, value)
    typed = "Content-Type" in headers
    if request.method == "HEAD" or resp.status_code in _NO_BODY_STATUSES or resp.status_code < 200:
        _drained(resp)
        out = Response(b"", status=resp.status_code, headers=headers)
    else:
        out = Response(_Relay(upstream, resp), status=resp.status_code, headers=headers, direct_passthrough=True)
    if not typed:
        del out.headers["Content-Type"]  # Flask's text/html default would lie
    return out


def forward(upstream: Upstream) -> Response:
    """Send the current request to ``upstream`` and answer with what it says."""
    try:
        resp = upstream.request(request.method, upstream_path(), query=request.query_string,
                                headers=request_headers(), body=request_body())
    except ClientBodyError as exc:
        raise Problem(exc.status, exc.detail) from None
    except UpstreamError as exc:
        raise exc.problem(upstream.read_timeout) from None
    return client_response(upstream, resp)
