"""Who is signed in: the bearer token in the session cookie, verified on every request.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure unless turned off for
plain-HTTP development): it holds the person's access token, their language and the last
consistency token. A cookie, not server memory, so every console replica and worker serves
every person, a restart signs nobody out, and there is nothing to expire or evict. The token
never reaches page scripts (HttpOnly), and the console verifies it on every request with the
kit's ``TokenVerifier``, as every service does, before using it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from crm_console.gateway import Caller, Gateway
from crm_console.kinds import Kind, kind_of
from crm_kit.web.auth import Identity, TokenVerifier
from crm_kit.web.problem import Problem

F = TypeVar("F", bound=Callable[..., Any])


def verifier() -> TokenVerifier:
    return current_app.extensions["crm_console"].verifier


def gateway() -> Gateway:
    return current_app.extensions["crm_console"].gateway


def sign_in(token: str) -> Identity:
    """Start a session for ``token`` (a 401 ``Problem`` when it is not valid here).

    The old session is dropped first, so nothing of a session from before sign-in survives
    (session fixation); only the chosen language is kept.
    """
    identity = verifier().verify(token)
    language = session.get("lang")
    session.clear()
    session["token"] = token
    if language:
        session["lang"] = language
    session.permanent = True
    return identity


def sign_out() -> None:
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language


def current_identity() -> Identity | None:
    """The verified person of this request, or None (no session, or its token no longer valid)."""
    if "crm_identity" in g:
        return g.crm_identity
    token = session.get("token")
    identity = None
    if token:
        try:
            identity = verifier().verify(token)
        except Problem as exc:
            if exc.status != 401:  # the provider's keys cannot be fetched (503): not a reason to sign out
                from crm_console.gateway import ApiError

                raise ApiError(exc.status, {"detail": exc.detail}) from None
            sign_out()
    g.crm_identity = identity
    return identity


def caller() -> Caller:
    """The signed-in person as the gateway's caller; consistency tokens they receive are kept."""
    if "crm_caller" not in g:
        from crm_console.i18n import current_language

        g.crm_caller = Caller(token=session["token"], language=current_language(),
                              consistency=session.get("ct"))
    return g.crm_caller


def keep_consistency(resp: Response) -> Response:
    """After the request: the newest consistency token the person received goes into the session."""
    found = g.get("crm_caller")
    if found is not None and found.issued and session.get("token"):
        session["ct"] = found.issued[-1]
    return resp


def safe_next(target: str | None) -> str | None:
    """A same-origin path to go back to after sign-in, or None (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def to_sign_in() -> Response:
    """Where a request without a signed-in person goes: the sign-in page, coming back after
    (an htmx request gets ``HX-Redirect``, so the whole page goes there, not a fragment)."""
    if request.headers.get("HX-Request"):
        resp = Response(status=204)
        resp.headers["HX-Redirect"] = url_for("signin.page")
        return resp
    path = request.full_path if request.query_string else request.path
    return redirect(url_for("signin.page", next=path))  # type: ignore[return-value]


def login_required(view: F) -> F:
    """Pages for signed-in people: others go to the sign-in page (and come back after)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_identity() is None:
            return to_sign_in()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def permission_guard(permission: str) -> Callable[[], Response | None]:
    """A blueprint's ``before_request`` for screens of one permission: signed-in people with
    ``permission`` only; others go to sign-in, or get 403."""

    def guard() -> Response | None:
        if current_identity() is None:
            return to_sign_in()
        if not can(permission):
            abort(403)
        return None

    return guard


def can(permission: str) -> bool:
    """Whether the signed-in person holds ``permission`` (the page hides what they may not do)."""
    identity = current_identity()
    return identity is not None and identity.has(permission)


def permitted_kind(records: str, action: str, refused: int = 404) -> Kind:
    """The kind named in the URL, if the person may ``action`` it (``kind.permission(action)``);
    else ``refused`` (404: as if there were nothing; 403: a change they may not make)."""
    kind = kind_of(records)
    if not can(kind.permission(action)):
        abort(refused)
    return kind
