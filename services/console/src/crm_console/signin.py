"""The sign-in page, the development sign-in form and sign-out.

``/`` shows the sign-in page to someone not signed in (the development form when
``CRM_CONSOLE_DEV_SIGNIN`` is on; the single sign-on link when an OpenID provider is
configured) and the leads overview to someone who is.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from crm_console import signin_oidc
from crm_console.i18n import LANGUAGES
from crm_console.session import current_identity, safe_next, sign_in, sign_out
from crm_kit.web.auth import DEFAULT_ROLE_PERMISSIONS, issue_token
from crm_kit.web.problem import Problem

bp = Blueprint("signin", __name__)
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


def _dev_enabled() -> bool:
    return bool(current_app.extensions["crm_console"].settings.get("CRM_CONSOLE_DEV_SIGNIN"))


def _known_roles() -> list[str]:
    configured = current_app.extensions["crm_console"].settings.get("CRM_ROLE_PERMISSIONS")
    return sorted(configured or DEFAULT_ROLE_PERMISSIONS)


@bp.get("/")
def home() -> Any:
    if current_identity() is not None:
        return redirect(url_for("overview.board", records="leads"))
    return page()


@bp.get("/signin")
def page() -> Any:
    if current_identity() is not None:
        return redirect(safe_next(request.args.get("next")) or url_for("overview.board", records="leads"))
    nxt = safe_next(request.args.get("next"))
    if nxt:
        session["next"] = nxt
    return render_template("signin.html", dev=_dev_enabled(), sso=signin_oidc.enabled(current_app),
                           roles=_known_roles(), form={}, errors={})


@bp.post("/signin/dev")
def dev() -> Any:
    """Development only: mint a token for the person typed in (``CRM_CONSOLE_DEV_SIGNIN``)."""
    if not _dev_enabled():
        abort(404)
    form = {k: request.form.get(k, "").strip() for k in ("user", "office", "roles")}
    roles = [r.strip() for r in form["roles"].split(",") if r.strip()]
    errors: dict[str, str] = {}
    if not _NAME.match(form["user"]):
        errors["user"] = _("A user name: letters, digits and . _ @ - (at most 64).")
    if not _NAME.match(form["office"]):
        errors["office"] = _("An office: letters, digits and . _ @ - (at most 64).")
    unknown = [r for r in roles if r not in _known_roles()]
    if not roles or unknown:
        errors["roles"] = _("One or more of: %(roles)s.", roles=", ".join(_known_roles()))
    if errors:
        return render_template("signin.html", dev=True, sso=signin_oidc.enabled(current_app),
                               roles=_known_roles(), form=form, errors=errors), 422
    settings = current_app.extensions["crm_console"].settings
    token = issue_token(settings["CRM_JWT_SECRET"], user_id=form["user"], name=form["user"],
                        office_id=form["office"], roles=roles, ttl_seconds=12 * 3600)
    try:
        sign_in(token)
    except Problem as exc:  # a misconfigured platform (another secret): say so
        flash(exc.detail, "error")
        return redirect(url_for("signin.page"))
    return redirect(safe_next(session.pop("next", None)) or url_for("overview.board", records="leads"))


@bp.post("/signout")
def signout() -> Any:
    sign_out()
    flash(_("You are signed out."), "info")
    return redirect(url_for("signin.page"))


@bp.post("/language")
def language() -> Any:
    chosen = request.form.get("lang", "")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    return redirect(safe_next(request.form.get("back")) or url_for("signin.home"))
