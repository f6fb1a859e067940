"""Single sign-on with an OpenID Connect provider (authorization code flow with PKCE).

Installed when ``CRM_CONSOLE_OIDC_ISSUER`` is set. Authlib's Flask client does the protocol:
discovery (``<issuer>/.well-known/openid-configuration``, fetched at the first sign-in, so the
console starts while the provider is down), ``state`` and ``nonce`` kept in the session,
``code_challenge_method=S256``, the code exchange with the client secret, and the ID token's
signature, issuer, audience and nonce checks.

The console then signs in with the provider's **access token**, not the ID token: with
``CRM_CONSOLE_OIDC_RESOURCE`` set, the resource indicator (RFC 8707) is sent both with the
authorization request and with the code exchange, so the provider issues a JWT for the API
(``aud`` = the resource) carrying the contract's claims (``sub``, ``office``, ``roles``,
``name``). The platform verifies it as it verifies every bearer token
(``CRM_JWT_PUBLIC_KEY`` or ``CRM_JWT_JWKS_URL``, ``CRM_JWT_AUDIENCE``, ``CRM_JWT_ISSUER``);
a token it does not accept ends the sign-in with the reason on the page.

Routes (blueprint ``oidc``):

* ``GET /signin/sso`` (``oidc.start``): to the provider. A link, not a form: the console's CSP
  (``form-action 'self'``) blocks a cross-origin redirect after a form post.
* ``GET /signin/callback`` (``oidc.callback``): back from the provider; signs in and goes to
  the page kept by the sign-in page (``next``, same-origin paths only) or to ``/``. Anything
  that goes wrong (the person cancelled, a stale or forged ``state``, the provider down, a token
  the platform refuses) goes to ``/`` with a message, never a 500.

The redirect URI given to the provider is this route's external URL as the request sees it
(``url_for(..., _external=True)``): register ``<console URL>/signin/callback`` at the provider,
and behind a TLS-terminating proxy make sure the app sees the original scheme and host.
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, current_app, flash, redirect, request, session, url_for
from flask_babel import gettext as _

from crm_console.session import safe_next, sign_in
from crm_kit.settings import Settings
from crm_kit.web.problem import Problem

log = logging.getLogger(__name__)

EXTENSION = "crm_console_oidc"
CLIENT_NAME = "crm_sso"
bp = Blueprint("oidc", __name__)


def enabled(app: Flask) -> bool:
    """Whether single sign-on is configured (the sign-in page then offers it)."""
    return EXTENSION in app.extensions


def install(app: Flask, settings: Settings) -> None:
    """Register the provider and the two routes; nothing when no issuer is configured."""
    issuer = (settings.get("CRM_CONSOLE_OIDC_ISSUER") or "").strip()
    if not issuer:
        return
    client_id = settings.get("CRM_CONSOLE_OIDC_CLIENT_ID") or ""
    if not client_id:
        log.warning("CRM_CONSOLE_OIDC_ISSUER is set but CRM_CONSOLE_OIDC_CLIENT_ID is empty: "
                    "the provider will refuse the sign-in")
    oauth = OAuth(app)
    client = oauth.register(
        name=CLIENT_NAME,
        client_id=client_id,
        client_secret=settings.get("CRM_CONSOLE_OIDC_CLIENT_SECRET") or None,
        server_metadata_url=issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={
            "scope": settings.get("CRM_CONSOLE_OIDC_SCOPE") or "openid profile",
            "code_challenge_method": "S256",
            "default_timeout": float(settings.get("CRM_UPSTREAM_TIMEOUT") or 10),
        },
    )
    app.extensions[EXTENSION] = {"client": client, "resource": settings.get("CRM_CONSOLE_OIDC_RESOURCE") or ""}
    app.register_blueprint(bp)


def _client() -> Any:
    return current_app.extensions[EXTENSION]["client"]


def _resource() -> dict[str, str]:
    resource = current_app.extensions[EXTENSION]["resource"]
    return {"resource": resource} if resource else {}


@bp.get("/signin/sso")
def start() -> Any:
    nxt = safe_next(request.args.get("next"))
    if nxt:
        session["next"] = nxt
    try:
        return _client().authorize_redirect(url_for("oidc.callback", _external=True), **_resource())
    except Exception:  # noqa: BLE001 - discovery failed (provider down, bad issuer): say so
        log.exception("single sign-on could not start")
        flash(_("Single sign-on is not available right now. Please try again later."), "error")
        return redirect(url_for("signin.page"))


@bp.get("/signin/callback")
def callback() -> Any:
    try:
        token = _client().authorize_access_token(**_resource())
    except MismatchingStateError:
        log.info("single sign-on callback with an unknown state")
        return _failed(_("The sign-in could not be completed: it was started elsewhere, took too long or was "
                         "already used. Please sign in again."))
    except OAuthError as exc:
        log.info("single sign-on refused: %s", exc.error)
        if exc.error in {"access_denied", "login_required", "consent_required", "interaction_required"}:
            return _failed(_("The sign-in was cancelled or refused at the identity provider."))
        return _failed(_("Single sign-on failed. Please try again."))
    except AuthlibBaseError as exc:  # e.g. an ID token that fails its checks
        log.warning("single sign-on: the provider's answer failed its checks: %s", exc)
        return _failed(_("Single sign-on failed. Please try again."))
    except Exception:  # noqa: BLE001 - the provider unreachable or answering nonsense: never a 500
        log.exception("single sign-on: the code exchange failed")
        return _failed(_("Single sign-on is not available right now. Please try again later."))
    access_token = token.get("access_token") if isinstance(token, dict) else None
    if not access_token:
        log.warning("single sign-on: the provider's answer has no access token")
        return _failed(_("Single sign-on failed. Please try again."))
    nxt = safe_next(session.pop("next", None))
    try:
        sign_in(access_token)
    except Problem as exc:  # the platform does not accept the provider's token (key, audience, claims)
        log.warning("single sign-on: the provider's access token was refused: %s", exc.detail)
        return _failed(_("You signed in at the identity provider, but this platform does not accept its "
                         "token: %(reason)s", reason=exc.detail))
    return redirect(nxt or "/")


def _failed(message: str) -> Any:
    session.pop("next", None)
    flash(message, "error")
    return redirect("/")
