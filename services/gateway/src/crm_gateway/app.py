"""The gateway's Flask app: crm_kit's edge plus the route table, forwarding, readiness and docs.

Request path for ``/v1/...``: the kit's edge rules first (correlation id, JSON-only bodies
(415), body limit (413), metrics), then the route table (404 / 405), the token (401) and
the route's permission (403) - all before anything is sent to a service, which checks the
token and permission again itself - then the streamed forward (``crm_gateway.proxy``).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, g, has_request_context, request
from werkzeug.routing import PathConverter

from crm_gateway import docs, openapi, wizard
from crm_gateway.consistency import Consistency, forward_consistently, install_cookie
from crm_gateway.console import gateway_own_methods, install_console
from crm_gateway.conversion import convert_and_wait
from crm_gateway.proxy import BAD_RESPONSE, CONNECT_ERROR, TIMEOUT, Upstream, UpstreamError
from crm_gateway.ratelimit import install_rate_limit
from crm_gateway.routes import ROUTES, MethodNotAllowedError, RouteNotFoundError, RouteTable
from crm_kit.settings import MAX_IMPORT_FILE_BYTES, MULTIPART_OVERHEAD, SERVICES, Settings
from crm_kit.web import Api, Problem, RequestContext
from crm_kit.web import create_app as kit_create_app
from crm_kit.web.api import Route
from crm_kit.web.auth import require_permission
from crm_kit.web.openapi import build_spec

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0  # seconds a service's /readyz may take before it counts as not ready
SPEC_FETCH_TIMEOUT = 5.0
FORWARD_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
CONVERT_TEMPLATE = "/v1/leads/{id}/convert"  # orchestrated here: crm_gateway.conversion
CORS_ALLOW_HEADERS = ("Authorization, Content-Type, Accept, Accept-Language, If-Match, If-None-Match, "
                      "Idempotency-Key, Consistency-Token, X-Correlation-ID, X-Request-ID")
CORS_EXPOSE_HEADERS = ("ETag, Location, Link, Retry-After, Idempotent-Replayed, Content-Disposition, "
                       "Consistency-Token, X-Correlation-ID, X-Request-ID, RateLimit-Limit, RateLimit-Remaining, "
                       "RateLimit-Reset")
# The longest request target (path and query) the gateway takes; the services' gunicorn
# refuses request lines over 8190 bytes, and a forwarded line adds the method and version.
MAX_REQUEST_TARGET = 8000
# Request headers: one field ("Name: value") at most MAX_HEADER_FIELD bytes - what the services'
# gunicorn takes - and all of them together at most MAX_HEADER_BYTES; larger is a 431.
MAX_HEADER_FIELD = 8190
MAX_HEADER_BYTES = 32 * 1024
_FORWARD_ENDPOINTS = frozenset({"gateway_forward", "gateway_upload"})


class AnyPathConverter(PathConverter):
    """werkzeug's ``path`` converter, matching line breaks too (the table decides what exists)."""

    regex = "[^/](?s:.*?)"


# -- readiness ---------------------------------------------------------------------------------

class ServiceNotReadyError(Exception):
    """A service is not ready; the class name is what /readyz shows for it."""


class ConnectionFailedError(ServiceNotReadyError):
    pass


class ReadyzTimeoutError(ServiceNotReadyError):
    pass


class BadResponseError(ServiceNotReadyError):
    pass


class NotReadyError(ServiceNotReadyError):
    pass


_NOT_READY_BY_KIND = {CONNECT_ERROR: ConnectionFailedError, TIMEOUT: ReadyzTimeoutError, BAD_RESPONSE: BadResponseError}


@dataclass
class GatewayState:
    """What the gateway keeps on ``app.extensions["crm_gateway"]``."""

    settings: Settings
    upstreams: dict[str, Upstream]
    executor: ThreadPoolExecutor
    consistency: Consistency
    routes: RouteTable = ROUTES
    documents: openapi.DocumentCache | None = None
    own_document: dict[str, Any] | None = field(default=None, repr=False)

    def probe_one(self, name: str) -> ServiceNotReadyError | None:
        upstream = self.upstreams[name]
        try:
            status, _ = upstream.get_json("/readyz", timeout=(min(upstream.connect_timeout, READY_TIMEOUT),
                                                              READY_TIMEOUT))
        except UpstreamError as exc:
            return _NOT_READY_BY_KIND.get(exc.kind, BadResponseError)(f"the {name} service: {exc.kind}")
        if status != 200:
            return NotReadyError(f"the {name} service's /readyz answered {status}")
        return None

    def probe_all(self) -> dict[str, ServiceNotReadyError | None]:
        """Every service's readiness, asked concurrently; at most READY_TIMEOUT (plus a little) in all."""
        futures = {name: self.executor.submit(self.probe_one, name) for name in self.upstreams}
        wait(futures.values(), timeout=READY_TIMEOUT + 0.25)
        results: dict[str, ServiceNotReadyError | None] = {}
        for name, future in futures.items():
            if not future.done():
                results[name] = ReadyzTimeoutError(f"the {name} service's /readyz took longer than {READY_TIMEOUT:g} s")
            elif future.exception() is not None:
                results[name] = BadResponseError(f"the {name} service: {future.exception()!r}")
            else:
                results[name] = future.result()
        return results

    def readiness_check(self, name: str) -> Any:
        """The kit's readiness check for one service (raises when it is not ready).

        The kit runs checks one after the other; the first of a request probes all the
        services at once and the others read that result, so /readyz takes one timeout, not five.
        """
        def check() -> None:
            if has_request_context():
                results = g.get("gateway_readiness")
                if results is None:
                    results = g.gateway_readiness = self.probe_all()
            else:
                results = {name: self.probe_one(name)}
            error = results.get(name)
            if error is not None:
                raise error

        check.__name__ = f"{name}_ready"
        return check

    def fetch_document(self, name: str) -> Any:
        upstream = self.upstreams[name]
        status, doc = upstream.get_json("/openapi.json", timeout=(min(upstream.connect_timeout, READY_TIMEOUT),
                                                                   min(upstream.read_timeout, SPEC_FETCH_TIMEOUT)))
        return doc if status == 200 else None


# -- views -------------------------------------------------------------------------------------

def _gateway() -> GatewayState:
    return current_app.extensions["crm_gateway"]


def forward_view(**_: str) -> Response:
    """Every /v1 path of the route table: route, token, permission, then the owning service."""
    # One of the gateway's own endpoints (/v1/me, the wizards), asked with another method: it
    # wins over a table pattern the path would also fit (/v1/leads/wizard is no lead id).
    own = gateway_own_methods(request.path)
    if own:
        raise Problem(405, f"{request.method} is not allowed here.", headers={"Allow": _allow_header(own)})
    try:
        match = _gateway().routes.resolve(request.method, request.path)
    except RouteNotFoundError:
        raise Problem(404, "There is no such endpoint.") from None
    except MethodNotAllowedError as exc:
        g.gateway_route = exc.route.pattern
        raise Problem(405, f"{request.method} is not allowed here.",
                      headers={"Allow": ", ".join(exc.allowed)}) from None
    g.gateway_route = match.template
    if request.method == "OPTIONS":
        resp = Response(status=204, headers={"Allow": ", ".join(match.route.methods)})
        del resp.headers["Content-Type"]
        return resp
    kit = current_app.extensions["crm"]
    identity = kit.verifier.identity_from_header(request.headers.get("Authorization"))
    g.crm_identity = identity
    require_permission(identity, match.permission)
    if request.method == "POST" and match.template == CONVERT_TEMPLATE:
        return convert_and_wait(_gateway())
    state = _gateway()
    return forward_consistently(state.consistency, state.upstreams[match.service])


def openapi_view() -> Response:
    import json

    return Response(json.dumps(_gateway().documents.get()), mimetype="application/json")  # type: ignore[union-attr]


def _own_api() -> Api:
    api = Api("gateway")

    @api.get("/v1/me")
    def me(ctx: RequestContext) -> dict[str, Any]:
        """The caller, as the bearer token says: id, name, office, roles and permissions."""
        return ctx.user.to_dict()

    wizard.declare(api)  # POST /v1/{records}/wizard: orchestrated here, see crm_gateway.wizard_flow
    return api


# -- the app -----------------------------------------------------------------------------------

def create_app(settings: Settings, routes: RouteTable = ROUTES) -> Flask:
    """Build the gateway's app from ``settings`` (``load_settings("gateway")``); ``routes`` is the
    table derived from the services' declarations (``crm_gateway.routes``)."""
    threads = int(settings.get("CRM_WEB_THREADS") or 4)
    upstreams = {
        name: Upstream(
            name,
            settings[f"CRM_{name.upper()}_URL"],
            connect_timeout=settings["CRM_UPSTREAM_CONNECT_TIMEOUT"],
            read_timeout=settings["CRM_UPSTREAM_TIMEOUT"],
            retries=settings["CRM_UPSTREAM_RETRIES"],
            pool_size=max(10, 2 * threads),
        )
        for name in SERVICES
    }
    executor = ThreadPoolExecutor(max_workers=4 * len(SERVICES), thread_name_prefix="crm-gateway")
    consistency = Consistency(upstreams, settings["CRM_JWT_SECRET"], settings["CRM_CONSISTENCY_WAIT"], executor)
    state = GatewayState(settings, upstreams, executor, consistency, routes)
    app = kit_create_app(
        "gateway", settings, [_own_api()],
        readiness={name: state.readiness_check(name) for name in SERVICES},
        openapi_title=openapi.TITLE,
    )
    app.extensions["crm_gateway"] = state

    # Forwarding: one catch-all rule, and a rule for each path of the table that takes uploads
    # (more specific, so it wins) whose declared route tells the kit's edge to take multipart
    # bodies up to the upload limit.
    # Any path, newlines included: werkzeug's ``path`` converter stops at a "\n" (its "." does
    # not match it), and the upload rule below would then answer such a GET with a 405.
    app.url_map.converters["anypath"] = AnyPathConverter
    app.add_url_rule("/v1/<anypath:path>", "gateway_forward", forward_view, methods=FORWARD_METHODS)

    def upload_view(**view_args: str) -> Response:
        """Attachment uploads: the same forwarding, with files up to CRM_MAX_UPLOAD_BYTES (plus their
        multipart envelope, MULTIPART_OVERHEAD), as the services take them."""
        return forward_view(**view_args)

    upload_view.crm_route = Route(  # type: ignore[attr-defined]  # read by the kit's edge rules
        method="POST", rule="/v1/<upload>", handler=upload_view, accepts="multipart/form-data",  # each rule below
        max_body=settings["CRM_MAX_UPLOAD_BYTES"] + MULTIPART_OVERHEAD,  # the limit is the file's
    )
    for upload in (r for r in routes if r.uploads):
        app.add_url_rule(upload.flask_rule, "gateway_upload", upload_view, methods=sorted(upload.uploads))

    # /openapi.json: the kit serves the gateway's own routes there; serve the merged one instead.
    def own_document() -> dict[str, Any]:
        if state.own_document is None:
            state.own_document = wizard.describe(
                openapi.gateway_document(build_spec(openapi.TITLE, app.extensions["crm_routes"])))
        return state.own_document

    state.documents = openapi.DocumentCache(SERVICES, state.fetch_document, own_document, state.executor,
                                            fetch_timeout=SPEC_FETCH_TIMEOUT, table=routes)
    app.view_functions["openapi_json"] = openapi_view
    docs.install_docs(app)
    install_console(app, settings.get("CRM_CONSOLE_URL") or "",
                    # the console's largest upload: an attachment's file or a CSV to import
                    max_body=max(settings["CRM_MAX_UPLOAD_BYTES"], MAX_IMPORT_FILE_BYTES) + MULTIPART_OVERHEAD,
                    connect_timeout=settings["CRM_UPSTREAM_CONNECT_TIMEOUT"],
                    read_timeout=settings["CRM_UPSTREAM_TIMEOUT"])
    install_cookie(app)
    _install_route_labels(app)
    _install_cors(app, settings.get("CRM_CORS_ORIGINS") or [])
    install_rate_limit(app, settings)  # after CORS: preflights are not counted
    _install_request_line_limit(app)
    _install_header_limit(app)
    _install_options(app)
    return app


def _install_route_labels(app: Flask) -> None:
    """Metrics per route template: a forwarded request is labelled with the table's pattern
    (``g.crm_route_label``, read by the kit), not with the catch-all rule; a path no route
    has is labelled ``unmatched``."""

    @app.after_request
    def _label(resp: Response) -> Response:
        rule = request.url_rule
        if rule is not None and rule.endpoint in _FORWARD_ENDPOINTS:
            template = g.get("gateway_route")
            if template is None:
                found = _gateway().routes.route_for_path(request.path)
                template = found[0].pattern if found else None
            g.crm_route_label = template or "unmatched"
        return resp


def _install_request_line_limit(app: Flask) -> None:
    """414 problem+json for a request line the services' servers would refuse.

    The gateway's gunicorn takes any request line (gunicorn can only cap it at 8190 bytes
    and answers HTML then); this check answers in the API's own shape, before anything is
    forwarded, and keeps forwarded lines under the services' gunicorn cap.
    """

    @app.before_request
    def _uri_limit() -> None:
        target = request.environ.get("RAW_URI") or request.full_path
        if len(target) > MAX_REQUEST_TARGET:
            raise Problem(414, f"The URL is longer than {MAX_REQUEST_TARGET} bytes; send fewer or shorter "
                               "query parameters.")


def _install_header_limit(app: Flask) -> None:
    """431 problem+json for request headers over MAX_HEADER_FIELD (one) or MAX_HEADER_BYTES (all).

    The gateway's gunicorn takes fields up to four times MAX_HEADER_FIELD (crm_kit.web.gunicorn_conf),
    so this check answers, naming the header; beyond that gunicorn answers 431 problem+json itself.
    """

    @app.before_request
    def _header_limit() -> None:
        total = 0
        largest = ("", 0)
        for name, value in request.headers.items():
            size = len(name) + len(value) + 4  # "Name: value\r\n", as gunicorn counts a field
            total += size
            if size > largest[1]:
                largest = (name, size)
        if largest[1] > MAX_HEADER_FIELD:
            raise Problem(431, f"The {largest[0]} header is {largest[1]} bytes long; a header field may have at "
                               f"most {MAX_HEADER_FIELD} bytes.", header=largest[0])
        if total > MAX_HEADER_BYTES:
            raise Problem(431, f"The request's headers are {total} bytes long, at most {MAX_HEADER_BYTES} are "
                               f"taken (the largest is {largest[0]}, {largest[1]} bytes).", header=largest[0])


def _allow_header(methods: set[str]) -> str:
    """``Allow`` for a resource taking ``methods`` (HEAD with GET; OPTIONS always), in one fixed order."""
    methods = methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
    return ", ".join(m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS") if m in methods)


def _install_options(app: Flask) -> None:
    """``OPTIONS`` answers with exactly the methods of the path's own route.

    Without this, Flask would list the methods of every rule matching the path - the
    catch-all forwarding rule's too - for the gateway's own endpoints and uploads.
    CORS preflights are answered before this (``_install_cors``).
    """

    @app.before_request
    def _options() -> Response | None:
        if request.method != "OPTIONS":
            return None
        methods = gateway_own_methods(request.path)  # the gateway's own, /v1 or not (/healthz, /docs, ...)
        if not methods and not request.path.startswith("/v1/"):
            return None  # Flask answers, or the console's forwarding
        if not methods:
            try:
                methods = set(_gateway().routes.resolve("OPTIONS", request.path).route.methods)
            except (RouteNotFoundError, MethodNotAllowedError):
                return None  # forward_view answers 404
        resp = Response(status=204, headers={"Allow": _allow_header(methods)})
        del resp.headers["Content-Type"]
        return resp


def _install_cors(app: Flask, origins: list[str]) -> None:
    """CORS for browser clients on the origins of CRM_CORS_ORIGINS (``*``: any); off when empty.

    Tokens travel in the Authorization header, never in cookies: no credentials mode.
    """
    if not origins:
        return
    any_origin = "*" in origins
    allowed = frozenset(origins)

    def allowed_origin() -> str | None:
        origin = request.headers.get("Origin")
        if origin and (any_origin or origin in allowed):
            return origin
        return None

    @app.before_request
    def _preflight() -> Response | None:
        origin = allowed_origin()
        if request.method != "OPTIONS" or origin is None or "Access-Control-Request-Method" not in request.headers:
            return None
        resp = Response(status=204, headers={
            "Access-Control-Allow-Methods": ", ".join(FORWARD_METHODS),
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": "600",
        })
        del resp.headers["Content-Type"]
        return resp

    @app.after_request
    def _cors(resp: Response) -> Response:
        origin = allowed_origin()
        resp.vary.add("Origin")
        if origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
            resp.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        return resp
