"""The Flask app factory every service (and the gateway) builds its API with."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.exc import DBAPIError, IntegrityError

from crm_kit import consistency, correlation, metrics
from crm_kit.db import Database, database_unavailable
from crm_kit.settings import Settings
from crm_kit.web.api import Api, Route
from crm_kit.web.auth import TokenVerifier
from crm_kit.web.connection import finish_connection
from crm_kit.web.idempotency import IdempotencyStore
from crm_kit.web.pagination import Paginator
from crm_kit.web.problem import Problem, register_problem_handlers

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], None]  # raises when not ready

_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# On every response unless the view set its own (``/docs`` has a CSP that lets its assets run;
# a download or an asset its own Cache-Control). API answers are data: nothing in them may run,
# be framed, or be kept by a shared cache.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


@dataclass
class KitState:
    """What the kit keeps on ``app.extensions["crm"]``."""

    service: str
    settings: Settings
    verifier: TokenVerifier
    paginator: Paginator
    database: Database | None = None
    idempotency: IdempotencyStore | None = None
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or mimetype.endswith("+json")


def create_app(
    service: str,
    settings: Settings,
    apis: Iterable[Api] = (),
    *,
    database: Database | None = None,
    readiness: dict[str, ReadinessCheck] | None = None,
    openapi_title: str | None = None,
) -> Flask:
    """Build a service's Flask app: routes, edge rules, health, readiness, metrics, OpenAPI.

    ``readiness`` maps a name to a check that raises when that dependency is unavailable;
    ``/readyz`` runs them all (the database is checked when ``database`` is given).
    """
    app = Flask(service, static_folder=None)  # an API: no /static (the gateway may forward it to the console)
    app.config["MAX_CONTENT_LENGTH"] = settings["CRM_MAX_BODY_BYTES"]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    checks = dict(readiness or {})
    idempotency = None
    if database is not None:
        checks.setdefault("database", database.ping)
        from crm_kit.db import new_metadata

        idempotency = IdempotencyStore(new_metadata().tables["idempotency_keys"], settings["CRM_IDEMPOTENCY_TTL"])
    app.extensions["crm"] = KitState(
        service=service,
        settings=settings,
        verifier=TokenVerifier.from_settings(settings),
        paginator=Paginator(settings["CRM_JWT_SECRET"]),
        database=database,
        idempotency=idempotency,
        readiness=checks,
    )
    register_problem_handlers(app)

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> Response:
        log.info("integrity error answered with 409: %s", exc.orig)
        return Problem(409, "The request conflicts with data that already exists.").response(request.path)

    @app.errorhandler(DBAPIError)
    def _db_down(exc: DBAPIError) -> Response:
        if not database_unavailable(exc):
            raise exc  # a bug, not an outage: the 500 handler logs it
        log.error("database unavailable: %s", exc.orig)
        return Problem(503, "The service's database is unavailable; retry shortly.",
                       headers={"Retry-After": "2"}).response(request.path)

    _install_edge_rules(app, service)
    _install_operational_routes(app, service)
    for api in apis:
        api.register(app)
    from crm_kit.web.openapi import install_openapi

    install_openapi(app, title=openapi_title or f"{service} service")
    return app


def route_of_request() -> Route | None:
    """The declared route serving the current request, if any."""
    from flask import current_app

    if request.url_rule is None or request.endpoint is None:
        return None
    return getattr(current_app.view_functions.get(request.endpoint), "crm_route", None)


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every response gets (``SECURITY_HEADERS``, HSTS when configured)."""
    headers = dict(SECURITY_HEADERS)
    hsts = (settings.get("CRM_STRICT_TRANSPORT_SECURITY") or "").strip()
    if hsts:
        headers["Strict-Transport-Security"] = hsts
    return headers


def _install_edge_rules(app: Flask, service: str) -> None:
    defaults = security_headers(app.extensions["crm"].settings)

    @app.before_request
    def _start() -> None:
        g.crm_started = time.perf_counter()
        cid = correlation.sanitize(request.headers.get(correlation.HEADER)) or correlation.sanitize(
            request.headers.get(correlation.REQUEST_ID_HEADER)) or correlation.new_id()
        g.crm_correlation_token = correlation.set(cid)
        g.crm_correlation_id = cid
        route = route_of_request()
        if route is not None and route.max_body:
            request.max_content_length = route.max_body
        if request.method in _BODY_METHODS and (request.content_length or request.headers.get("Transfer-Encoding")):
            accepts = route.accepts if route else "application/json"
            mimetype = request.mimetype or ""
            ok = (accepts == "*/*" or (_is_json(mimetype) if accepts == "application/json"
                                        else mimetype == accepts))
            if not ok:
                raise Problem(415, f"This endpoint takes {accepts} bodies, not {mimetype or 'an untyped body'}.")
            if request.content_length and request.max_content_length \
                    and request.content_length > request.max_content_length:
                raise Problem(413, f"The request body is larger than {request.max_content_length} bytes.")

    @app.after_request
    def _finish(resp: Response) -> Response:
        cid = g.get("crm_correlation_id")
        if cid:
            resp.headers[correlation.HEADER] = cid
            resp.headers.setdefault(correlation.REQUEST_ID_HEADER, cid)
        for name, value in defaults.items():
            resp.headers.setdefault(name, value)
        if g.get("crm_stale"):  # answered from copies older than the gateway asked for (errors too)
            resp.headers[consistency.STALE] = "true"
        if g.get("crm_reads_copies") is False:  # a kit route that read no copy (other routes: unknown)
            resp.headers[consistency.COPIES] = "none"
        languages = g.get("crm_languages")
        if languages is not None:  # names resolved from Accept-Language (RequestContext.language)
            resp.vary.add("Accept-Language")
            if languages:
                resp.headers["Content-Language"] = ", ".join(languages)
        # A body refused unread (413, 401, ...) is drained, or the connection closed, so the
        # client's next request on this connection works (crm_kit.web.connection).
        finish_connection(request.environ)
        started = g.get("crm_started")
        # A catch-all route (the gateway's) names its real template in g.crm_route_label.
        route = g.get("crm_route_label") or (request.url_rule.rule if request.url_rule else "unmatched")
        if started is not None and route not in ("/metrics",):
            metrics.HTTP_REQUESTS.labels(service, request.method, route, str(resp.status_code)).inc()
            metrics.HTTP_DURATION.labels(service, request.method, route).observe(time.perf_counter() - started)
        return resp

    @app.teardown_request
    def _teardown(_exc: BaseException | None) -> None:
        session = g.pop("crm_session", None)
        if session is not None:  # an error escaped before the kit could finish it
            session.rollback()
            session.close()
        token = g.pop("crm_correlation_token", None)
        if token is not None:
            correlation.reset(token)


def _install_operational_routes(app: Flask, service: str) -> None:
    from crm_kit.web.api import Api

    ops = Api("operations")

    @ops.get("/healthz", public=True)
    def healthz(ctx: Any) -> dict[str, str]:
        """Liveness: the process answers. Checks nothing external on purpose."""
        return {"status": "ok", "service": service}

    @ops.get("/readyz", public=True)
    def readyz(ctx: Any) -> Response:
        """Readiness: every dependency (database, Kafka, ...) answers."""
        import json

        results: dict[str, str] = {}
        ready = True
        for name, check in ctx.kit.readiness.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                ready = False
                results[name] = f"unavailable: {type(exc).__name__}"
                log.warning("readiness check %s failed: %s", name, exc)
        body = {"status": "ready" if ready else "not ready", "service": service, "checks": results}
        return Response(json.dumps(body), status=200 if ready else 503, mimetype="application/json")

    @ops.get("/metrics", public=True, produces="text/plain")
    def metrics_view(ctx: Any) -> Response:
        """Prometheus metrics of this service's web processes."""
        data, content_type = metrics.render_latest()
        return Response(data, mimetype=content_type.split(";")[0], headers={"Content-Type": content_type})

    ops.register(app)
