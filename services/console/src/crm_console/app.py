"""The console's Flask app: sessions, CSRF, CSP, languages, health, and the screens.

It has no database and calls no service but the gateway (``CRM_GATEWAY_URL``), with the
signed-in person's token: what they see and may do is exactly what the API gives them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Response, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix

from crm_console import i18n, signin, signin_oidc
from crm_console.gateway import ApiError, Gateway, SignedOutError
from crm_console.session import can, current_identity, keep_consistency, sign_out
from crm_kit import metrics
from crm_kit.settings import Settings
from crm_kit.web.auth import TokenVerifier

log = logging.getLogger(__name__)

# Scripts and styles only from the console's own origin (its files and the vendored libraries):
# no inline script or style, no eval; forms post only to the console; no framing.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass
class ConsoleState:
    settings: Settings
    gateway: Gateway
    verifier: TokenVerifier


def create_app(settings: Settings) -> Flask:
    """Build the console from ``settings`` (``load_settings("console")``)."""
    app = Flask("crm_console")
    # Behind one proxy (the gateway, or the ingress): its X-Forwarded-Proto and -Host say how the
    # browser reached us, for the absolute URLs the console builds (the OpenID redirect URI).
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    secure = bool(settings.get("CRM_CONSOLE_SECURE_COOKIES"))
    app.config.update(
        SECRET_KEY=settings["CRM_CONSOLE_SECRET_KEY"],
        SESSION_COOKIE_NAME="crm_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # Uploads stream through to the gateway, which enforces the attachment limit itself.
        MAX_CONTENT_LENGTH=int(settings["CRM_MAX_UPLOAD_BYTES"]) + 64 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        WTF_CSRF_SSL_STRICT=secure,
    )
    app.extensions["crm_console"] = ConsoleState(
        settings=settings,
        gateway=Gateway(settings["CRM_GATEWAY_URL"], timeout=float(settings.get("CRM_UPSTREAM_TIMEOUT") or 15)),
        verifier=TokenVerifier.from_settings(settings),
    )
    CSRFProtect(app)
    i18n.install(app)
    app.jinja_env.globals.update(can=can, identity=current_identity, csrf_token=generate_csrf)
    app.jinja_env.autoescape = True

    from crm_console.views import register_views

    app.register_blueprint(signin.bp)
    signin_oidc.install(app, settings)
    register_views(app)
    _install_operations(app)
    _install_edges(app)
    _install_errors(app)
    return app


def _install_operations(app: Flask) -> None:
    state: ConsoleState = app.extensions["crm_console"]

    @app.get("/healthz")
    def healthz() -> Any:
        return {"status": "ok", "service": "console"}

    @app.get("/readyz")
    def readyz() -> Any:
        try:
            state.gateway.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return {"status": "not ready", "service": "console",
                    "checks": {"gateway": f"unavailable: {type(exc).__name__}"}}, 503
        return {"status": "ready", "service": "console", "checks": {"gateway": "ok"}}

    @app.get("/metrics")
    def metrics_view() -> Response:
        # Prometheus scrapes the pod directly; the ingress (and the gateway) add X-Forwarded-For to
        # whatever they pass on, and the ingress routes "/" here: a proxied request is not a scrape.
        if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
            return Response("Not Found", status=404, mimetype="text/plain")
        data, content_type = metrics.render_latest()
        return Response(data, headers={"Content-Type": content_type})


def _install_edges(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.crm_started = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        keep_consistency(resp)
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        if not request.path.startswith("/static/"):
            resp.headers.setdefault("Cache-Control", "no-store")
        resp.vary.add("Cookie")
        route = request.url_rule.rule if request.url_rule else "unmatched"
        started = g.get("crm_started")
        if started is not None and route != "/metrics":
            metrics.HTTP_REQUESTS.labels("console", request.method, route, str(resp.status_code)).inc()
            metrics.HTTP_DURATION.labels("console", request.method, route).observe(time.perf_counter() - started)
        return resp


def _install_errors(app: Flask) -> None:
    @app.errorhandler(SignedOutError)
    def _signed_out(_exc: SignedOutError) -> Any:
        sign_out()
        flash(_("Your session has ended. Please sign in again."), "info")
        if request.headers.get("HX-Request"):
            return Response(status=204, headers={"HX-Redirect": url_for("signin.page")})
        return redirect(url_for("signin.page", next=request.path if request.method == "GET" else None))

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Any:
        """A refusal no view handled itself: the API's reason, on the page, with its status."""
        status = exc.status if 400 <= exc.status < 600 else 502
        if request.headers.get("HX-Request"):
            return render_template("partials/message.html", level="error", message=exc.message,
                                   conflict=exc.conflict), status
        return render_template("error.html", status=status, message=exc.message, conflict=exc.conflict), status

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> Any:
        message = _("The form was out of date or not sent from this console. Reload the page and try again.")
        return render_template("error.html", status=400, message=message, conflict=False), 400

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Any:
        if current_identity() is None and not request.path.startswith("/static/"):
            return redirect(url_for("signin.page"))
        return render_template("error.html", status=404, message=_("This page does not exist, or you may not see it."),
                               conflict=False), 404
