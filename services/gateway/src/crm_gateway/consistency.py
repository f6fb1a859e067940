"""Read-your-writes across services: consistency tokens, and forwarding that honours them.

**The token** is, per service, the id of the newest outbox row (event) of that service that
the client's writes produced: ``{"leads": 812, "catalogue": 40}``. It has at most one number per
service, so it stays small however many writes it covers; a write's answer says its row id
(``Crm-Written``) and the gateway merges it into the client's token (the highest id wins),
signs it (HMAC, so a client cannot make one up) and hands it back as the
``Consistency-Token`` header and the ``crm_ct`` cookie.

**Using it.** A service keeps read models of some other services' topics (the topic registry's
``readers``). Before forwarding a request to service S, the gateway turns each of the token's
numbers for those services into Kafka offsets - it asks the owner "once your outbox is on
Kafka up to row N, at which offsets?" (``GET /internal/consistency?upto=N``; answers are
remembered, they never change) - and sends them to S (``Crm-Require-Offsets``). S waits until
its consumers' offsets, which they commit with their effects, reach them. Nothing depends on
process memory: it holds across restarts, rebalances and rebuilt read models.

**Without a token** the gateway asks the owners for *every* row committed so far instead, and
S waits for that (best effort: if S is still behind when the wait is over it answers from
what it has and says so, ``Crm-Stale``). So a script that keeps no cookie still sees what it
just wrote. A tokenless ``POST`` (a create, the hot path) is sent at once instead, and only a
refusal is sent again after that wait (next paragraph); bulk calls, which refuse per item inside
a 200, wait first.

**Never a false 404/409/422.** When a request carrying a token (or a tokenless POST) is refused with one of those
(it may be about someone else's recent write, which the token does not cover), the gateway
asks again, waiting for every row committed so far; a refusal from a service that was still
behind becomes 503 with ``Retry-After``. Refusals write nothing, so asking again is safe. A
refusal that says it read no copy (``Crm-Copies: none``: invalid input, or a route of the
service's own data such as a webhook subscription) is final and goes to the client as it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Lock

import requests
from flask import Flask, Response, request

from crm_events.topics import sources_of
from crm_gateway import metrics
from crm_gateway.proxy import (
    ClientBodyError,
    RequestBody,
    SizedRequestBody,
    Upstream,
    UpstreamError,
    client_response,
    json_of_ok,
    request_body,
    request_headers,
    upstream_path,
)
from crm_kit import consistency as kit
from crm_kit.settings import SERVICES
from crm_kit.web import Problem

TOKEN_HEADER = "Consistency-Token"  # noqa: S105 - a header name, not a secret
COOKIE = "crm_ct"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Refusals that may come from a copy that lags: asked again, fresh, before they reach the client.
REPAIRABLE = frozenset({404, 409, 422})
_PREFIX = "ct1"
_MAC_BYTES = 16
_CACHE_SIZE = 4096
RETRY_AFTER = "1"


class InvalidTokenError(ValueError):
    """A consistency token the gateway did not issue (or cannot read)."""


class BehindError(Exception):
    """A service could not say (or show) within the wait that it is as fresh as asked."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Token:
    """Per service, the newest outbox id the client's writes produced there."""

    positions: Mapping[str, int] = field(default_factory=dict)

    def merge(self, more: Mapping[str, int]) -> Token:
        merged = dict(self.positions)
        for service, outbox_id in more.items():
            if outbox_id > merged.get(service, -1):
                merged[service] = outbox_id
        return Token(merged)

    def encode(self, key: bytes) -> str:
        payload = _b64(",".join(f"{s}:{n}" for s, n in sorted(self.positions.items())).encode())
        mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]
        return f"{_PREFIX}.{payload}.{_b64(mac)}"

    @classmethod
    def decode(cls, value: str, key: bytes) -> Token:
        parts = value.strip().split(".")
        if len(parts) != 3 or parts[0] != _PREFIX or len(value) > 512:
            raise InvalidTokenError("not a consistency token of this gateway")
        try:
            mac = _unb64(parts[2])
            text = _unb64(parts[1]).decode()
        except (ValueError, UnicodeDecodeError):
            raise InvalidTokenError("not a consistency token of this gateway") from None
        expected = hmac.new(key, parts[1].encode(), hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            raise InvalidTokenError("the consistency token's signature does not match")
        positions: dict[str, int] = {}
        for item in filter(None, text.split(",")):
            service, _, number = item.partition(":")
            if service not in SERVICES or not number.isdigit():
                raise InvalidTokenError("the consistency token names an unknown service")
            positions[service] = int(number)
        return cls(positions)


def token_key(secret: str) -> bytes:
    """The key tokens are signed with, derived from the gateway's secret (never the secret itself)."""
    return hmac.new(secret.encode(), b"crm consistency token v1", hashlib.sha256).digest()


@dataclass
class Plan:
    """What a forwarded request asks of its service: offsets, strict or lenient, and whether a
    source could not be resolved (lenient only: the answer may be older than the latest writes)."""

    offsets: kit.Offsets = field(default_factory=dict)
    mode: str = kit.STRICT
    stale: bool = False

    def headers(self, deadline: float) -> dict[str, str]:
        if not self.offsets:
            return {}
        return {kit.REQUIRE_OFFSETS: kit.encode_offsets(self.offsets), kit.REQUIRE_MODE: self.mode,
                kit.REQUIRE_WAIT: f"{max(deadline - time.monotonic(), 0.0):.3f}"}


class Consistency:
    """The gateway's side of read-your-writes (see the module's docstring)."""

    def __init__(self, upstreams: Mapping[str, Upstream], secret: str, wait: float,
                 executor: ThreadPoolExecutor) -> None:
        self.upstreams = upstreams
        self.key = token_key(secret)
        self.wait = wait
        self.executor = executor
        self._resolved: OrderedDict[tuple[str, int], kit.Offsets] = OrderedDict()
        self._lock = Lock()

    # -- tokens ---------------------------------------------------------------------------------

    def request_token(self) -> Token | None:
        """The client's token: the header wins over the cookie. A header that is not one of ours
        is 400; an unreadable cookie (an older secret, say) counts as none."""
        header = request.headers.get(TOKEN_HEADER)
        if header is not None:
            try:
                return Token.decode(header, self.key)
            except InvalidTokenError as exc:
                raise Problem(400, f"{TOKEN_HEADER}: {exc}. Send the value of an earlier answer's "
                                   f"{TOKEN_HEADER} header unchanged, or none.") from None
        cookie = request.cookies.get(COOKIE)
        if cookie:
            try:
                return Token.decode(cookie, self.key)
            except InvalidTokenError:
                return None
        return None

    def issue(self, resp: Response, token: Token) -> None:
        """Hand ``token`` to the client (``install_cookie`` adds the cookie for browsers)."""
        resp.headers[TOKEN_HEADER] = token.encode(self.key)

    # -- positions ------------------------------------------------------------------------------

    def position(self, service: str, upto: int | None, deadline: float, headers: Mapping[str, str],
                 require: kit.Offsets | None = None) -> tuple[int, kit.Offsets]:
        """Ask ``service`` where its outbox stands on Kafka up to row ``upto`` (None: every row
        committed now), after its read models reached ``require``; ``BehindError`` if it cannot say."""
        upstream = self.upstreams[service]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BehindError(f"the {service} service did not answer in time")
        sent = {**headers, "Accept": "application/json",
                **Plan(require or {}).headers(deadline), kit.REQUIRE_WAIT: f"{remaining:.3f}"}
        query = "" if upto is None else f"upto={upto}"
        try:
            resp = upstream.request("GET", "/internal/consistency", query=query, headers=sent,
                                    timeout=(upstream.connect_timeout, remaining + 1.0), retries=0)
        except UpstreamError as exc:
            raise BehindError(f"the {service} service: {exc.kind}") from None
        data = json_of_ok(resp)
        try:
            offsets = {str(t): {int(p): int(o) for p, o in ps.items()} for t, ps in data["positions"].items()}
            return int(data["outbox_id"]), offsets
        except (TypeError, KeyError, ValueError, AttributeError):
            raise BehindError(f"the {service} service answered {resp.status_code} without its positions") from None

    def offsets(self, service: str, upto: int | None, deadline: float, headers: Mapping[str, str]) -> kit.Offsets:
        """Kafka offsets covering ``service``'s outbox up to ``upto``; remembered (they never change)."""
        if upto is not None:
            with self._lock:
                found = self._resolved.get((service, upto))
                if found is not None:
                    self._resolved.move_to_end((service, upto))
                    metrics.CONSISTENCY_RESOLUTIONS.labels(service, "cached").inc()
                    return found
        _, offsets = self.position(service, upto, deadline, headers)
        metrics.CONSISTENCY_RESOLUTIONS.labels(service, "asked" if upto is not None else "latest").inc()
        if upto is not None:
            with self._lock:
                self._resolved[(service, upto)] = offsets
                while len(self._resolved) > _CACHE_SIZE:
                    self._resolved.popitem(last=False)
        return offsets

    def plan(self, service: str, token: Token | None, deadline: float, headers: Mapping[str, str],
             *, latest: bool = False) -> Plan:
        """What to ask of ``service``: the token's positions of its sources (strict), or, without a
        token or when ``latest``, every row committed so far (lenient)."""
        sources = sources_of(service)
        lenient = token is None or latest
        wanted = {owner: (None if lenient else token.positions.get(owner)) for owner in sources}  # type: ignore[union-attr]
        if not lenient:
            wanted = {owner: n for owner, n in wanted.items() if n is not None}
        if not wanted:
            return Plan(mode=kit.LENIENT if lenient else kit.STRICT)
        results: dict[str, kit.Offsets | BehindError] = {}

        def resolve(owner: str) -> kit.Offsets | BehindError:
            try:
                return self.offsets(owner, wanted[owner], deadline, headers)
            except BehindError as exc:
                return exc

        if len(wanted) == 1:
            results = {owner: resolve(owner) for owner in wanted}
        else:
            results = dict(zip(wanted, self.executor.map(resolve, wanted), strict=True))
        failed = [r for r in results.values() if isinstance(r, BehindError)]
        if failed and not lenient:
            raise behind_problem(str(failed[0]))
        found = [r for r in results.values() if not isinstance(r, BehindError)]
        return Plan(kit.merge_offsets(*found), kit.LENIENT if lenient else kit.STRICT, stale=bool(failed))

    # -- forwarding -----------------------------------------------------------------------------

    def send(self, service: str, method: str, path: str, *, query: bytes | str, headers: dict[str, str],
             body: Callable[[], RequestBody | None], replayable: bool, token: Token | None) -> requests.Response:
        """Send one request to ``service`` as fresh as ``token`` says (or as the latest writes, without
        one), asking again once, fresh, when a refusal may come from a lagging copy."""
        upstream = self.upstreams[service]
        deadline = time.monotonic() + self.wait
        auth: dict[str, str] = {name: headers[name] for name in ("Authorization", "X-Correlation-ID")
                                if name in headers}
        # A tokenless POST that can be sent again goes at once: if it is refused, it is sent again
        # after waiting for the latest writes (below). Creates, the hot path, so ask nobody first.
        # Not bulk: it answers 200 with a refusal per item, which cannot be told from outside.
        lazy = token is None and method == "POST" and replayable and not path.endswith("/bulk")
        plan = Plan(mode=kit.LENIENT) if lazy else self.plan(service, token, deadline, auth)

        def attempt(plan: Plan) -> requests.Response:
            return upstream.request(method, path, query=query, headers={**headers, **plan.headers(deadline)},
                                    body=body())

        resp = attempt(plan)
        if resp.status_code not in REPAIRABLE or not sources_of(service) or resp.headers.get(kit.COPIES) == "none":
            return resp  # not a refusal, or one that no copy had a part in: final
        if (token is not None or lazy) and replayable:
            resp.close()
            metrics.CONSISTENCY_REPAIRS.labels(service).inc()
            plan = self.plan(service, token, deadline, auth, latest=True)
            resp = attempt(plan)
        if resp.status_code in REPAIRABLE and (plan.stale or resp.headers.get(kit.STALE)):
            resp.close()
            raise behind_problem(f"the {service} service could not confirm its answer with the latest changes")
        return resp

    def written(self, token: Token | None, service: str, resp_headers: Mapping[str, str]) -> Token:
        """``token`` plus the write this answer reports (``Crm-Written``)."""
        token = token or Token()
        value = resp_headers.get(kit.WRITTEN)
        if value and value.isdigit():
            token = token.merge({service: int(value)})
        return token


def behind_problem(detail: str) -> Problem:
    metrics.CONSISTENCY_UNAVAILABLE.inc()
    return Problem(503, f"Not yet consistent with your last changes: {detail}; retry shortly.",
                   headers={"Retry-After": RETRY_AFTER})


def forward_consistently(consistency: Consistency, upstream: Upstream) -> Response:
    """The current request to ``upstream`` (see ``Consistency.send``), its answer streamed back,
    with the client's token (plus this write) on a successful write."""
    token = consistency.request_token()
    stream = request_body()
    data: bytes | None = None
    replayable = stream is None
    if stream is not None and (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        data = request.get_data()  # JSON bodies are small (CRM_MAX_BODY_BYTES): kept to ask again
        replayable = True

    def body() -> RequestBody | None:
        if data is None:
            return stream
        return SizedRequestBody(io.BytesIO(data), len(data)) if data else None

    try:
        resp = consistency.send(upstream.name, request.method, upstream_path(), query=request.query_string,
                                headers=request_headers(), body=body, replayable=replayable, token=token)
    except ClientBodyError as exc:
        raise Problem(exc.status, exc.detail) from None
    except UpstreamError as exc:
        raise exc.problem(upstream.read_timeout) from None
    out = client_response(upstream, resp)
    if request.method in WRITE_METHODS and 200 <= resp.status_code < 300:
        consistency.issue(out, consistency.written(token, upstream.name, resp.headers))
    return out


def decode_issued(consistency: Consistency, resp: Response) -> Token | None:
    """The token an answer of ``forward_consistently`` carries, if any."""
    value = resp.headers.get(TOKEN_HEADER)
    return Token.decode(value, consistency.key) if value else None



def install_cookie(app: Flask) -> None:
    """Every successful answer with a token also sets it as the ``crm_ct`` cookie (browsers send
    it back by themselves; the header wins when a client sends both)."""

    @app.after_request
    def _cookie(resp: Response) -> Response:
        value = resp.headers.get(TOKEN_HEADER)
        if value and 200 <= resp.status_code < 300:
            resp.set_cookie(COOKIE, value, httponly=True, samesite="Strict", path="/", secure=request.is_secure)
        return resp
