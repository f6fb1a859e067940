"""Screen 6's Webhooks (``webhooks:admin`` only; everyone else gets 403 and sees no nav entry).

- ``/webhooks``: the list (URL, event types, filter, status with the reason a webhook was
  disabled, backlog and its oldest pending event) with **New**.
- ``/webhooks/new`` and ``/webhooks/<id>``: the form for URL, event types (the contract's, or
  **All events** ``*``), filter (the records' filter grammar), description and active. Saving
  an existing one sends ``If-Match`` on the version the form was opened at; a 412 says someone
  else changed it, with **Reload**.
- The secret is shown once: on the answer to **Create** and to **Rotate secret**, never in a
  redirect (a flashed message would travel in the session cookie) and never again after.
- ``/webhooks/<id>``'s actions: **Re-enable** (a disabled endpoint: ``PATCH {active: true}``,
  its backlog is delivered next), **Send test**, **Replay since** a time (UTC), **Rotate
  secret** and **Delete** (both ask first).
- ``/webhooks/<id>/deliveries``: the delivery log, newest attempt first, paged.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from crm_console.gateway import ApiError
from crm_console.session import caller, gateway, permission_guard
from crm_console.times import api_time
from crm_console.views.activities import from_input

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

PERMISSION = "webhooks:admin"
API = "/v1/webhooks"
PAGE_SIZE = 50
ALL_EVENTS = "*"
URL_LENGTH = 2000
_PIPELINE_EVENTS = ("created", "updated", "stage_changed", "stage_group_changed", "converted", "deleted",
                    "added_to_group", "removed_from_group")
_FILE_EVENTS = ("created", "updated", "deleted")
# The event types of the webhooks contract, grouped by what they are about, as the form offers them.
EVENT_GROUPS: tuple[tuple[str, Any, tuple[str, ...]], ...] = tuple(
    (about, label, tuple(f"{about}.{event}" for event in events)) for about, label, events in (
        ("lead", _l("Leads"), _PIPELINE_EVENTS),
        ("opportunity", _l("Opportunities"), _PIPELINE_EVENTS),
        ("company", _l("Companies"), _FILE_EVENTS),
        ("contact", _l("Contacts"), (*_FILE_EVENTS, "linked", "unlinked", "role_changed")),
        ("job_order", _l("Job orders"), (*_FILE_EVENTS, "linked", "unlinked")),
        ("placement", _l("Placements"), _FILE_EVENTS),
        ("activity", _l("Activities"), _FILE_EVENTS),
    ))
EVENT_TYPES = frozenset(t for _about, _label, types in EVENT_GROUPS for t in types)
# An attempt's result: failed, a non-2xx answer; error, no answer in time; refused, the address
# resolved to a non-public one at delivery.
RESULTS = {"delivered": _l("Delivered"), "failed": _l("Failed"), "error": _l("Error"), "refused": _l("Refused")}


bp.before_request(permission_guard(PERMISSION))


@bp.app_template_filter("logged_at")
def logged_at(value: str | None) -> str:
    """An API timestamp in UTC to the second (a delivery's attempts may be seconds apart)."""
    moment = api_time(value)
    if moment is None:
        return str(value or "")
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _if_match(version: Any) -> dict[str, str]:
    return {"If-Match": f'"{version}"'} if str(version).isdigit() else {}


# -- the form ------------------------------------------------------------------------------------

def values_of(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook (API shape) as the form's values."""
    return {"url": webhook.get("url") or "", "event_types": list(webhook.get("event_types") or []),
            "filter": webhook.get("filter") or "", "description": webhook.get("description") or "",
            "active": bool(webhook.get("active", True)), "version": str(webhook.get("version") or "")}


def values_from(form: Any) -> dict[str, Any]:
    """The form as typed (every value kept, to show it again)."""
    return {"url": form.get("url", "").strip(), "event_types": form.getlist("event_types"),
            "filter": form.get("filter", "").strip(), "description": form.get("description", "").strip(),
            "active": form.get("active") == "on", "version": form.get("version", "")}


def body_from(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body of the form's values, or the fields the person must correct first.

    Only what the console can tell alone: whether the address is public and the filter parses
    is the API's to say (its 422 comes back next to the same fields)."""
    errors: dict[str, str] = {}
    url = values["url"]
    if not url.lower().startswith(("https://", "http://")) or len(url) > URL_LENGTH:
        errors["url"] = _("Enter the address that receives the events, starting with https://.")
    chosen = [t for t in values["event_types"] if t]
    if ALL_EVENTS in chosen:
        chosen = [ALL_EVENTS]
    elif not chosen:
        errors["event_types"] = _("Choose at least one event type, or All events.")
    elif not set(chosen) <= EVENT_TYPES:
        errors["event_types"] = _("Choose event types from the list.")
    body = {"url": url, "event_types": chosen, "filter": values["filter"] or None,
            "description": values["description"], "active": values["active"]}
    return body, errors


def form_errors(exc: ApiError) -> dict[str, str]:
    """The API's field names (``event_types.2``, ``/url``) as the form's; a filter's error with the
    API's pointer (the filter's line and a caret under the fault)."""
    out: dict[str, str] = {}
    for field, message in exc.field_errors.items():
        head = field.lstrip("/").replace("/", ".").partition(".")[0] or "form"
        out.setdefault(head, message)
    pointer = exc.problem.get("pointer")
    if "filter" in out and isinstance(pointer, str) and pointer:
        out["filter"] = f"{out['filter']}\n{pointer}"
    return out


def render_form(values: Mapping[str, Any], *, webhook: Mapping[str, Any] | None = None,
                errors: Mapping[str, str] | None = None, message: str | None = None, conflict: bool = False,
                since: str = "", status: int = 200) -> Any:
    return render_template("webhooks_form.html", values=values, webhook=webhook, errors=errors or {},
                           message=message, conflict=conflict, since=since, event_groups=EVENT_GROUPS,
                           all_events=ALL_EVENTS, url_length=URL_LENGTH), status


def _refused(exc: ApiError, values: Mapping[str, Any], webhook: Mapping[str, Any] | None) -> Any:
    if exc.conflict:
        return render_form(values, webhook=webhook, conflict=True, status=412, message=_(
            "Someone else changed this webhook since you opened it. Reload it to see their changes "
            "(yours are not saved)."))
    return render_form(values, webhook=webhook, errors=form_errors(exc),
                       message=_("The webhook was not saved: %(reason)s", reason=exc.message),
                       status=exc.status if 400 <= exc.status < 500 else 422)


def _secret_page(webhook: Mapping[str, Any], secret: str, *, rotated: bool,
                 previous_valid_until: str | None = None) -> Any:
    """The one answer that shows a secret; nothing keeps it (no flash, no cache)."""
    return render_template("webhooks_secret.html", webhook=webhook, secret=secret, rotated=rotated,
                           previous_valid_until=previous_valid_until)


# -- routes --------------------------------------------------------------------------------------

@bp.get("")
def index() -> Any:
    items = gateway().all_pages(caller(), API)
    return render_template("webhooks_list.html", items=items, all_events=ALL_EVENTS)


@bp.route("/new", methods=["GET", "POST"])
def new() -> Any:
    if request.method == "GET":
        return render_form(values_of({"active": True}))
    values = values_from(request.form)
    body, errors = body_from(values)
    if errors:
        return render_form(values, errors=errors, message=_("Please correct the marked fields."), status=422)
    try:
        created = gateway().json(caller(), "POST", API, json={k: v for k, v in body.items() if v not in (None, "")})
    except ApiError as exc:
        return _refused(exc, values, None)
    return _secret_page(created, str(created.get("secret") or ""), rotated=False)


def _load(webhook_id: str) -> dict[str, Any]:
    try:
        webhook: dict[str, Any] = gateway().get(caller(), f"{API}/{webhook_id}")
    except ApiError as exc:
        if exc.status == 404:
            abort(404)
        raise
    return webhook


@bp.route("/<webhook_id>", methods=["GET", "POST"])
def show(webhook_id: str) -> Any:
    webhook = _load(webhook_id)
    if request.method == "GET":
        return render_form(values_of(webhook), webhook=webhook)
    values = values_from(request.form)
    body, errors = body_from(values)
    if errors:
        return render_form(values, webhook=webhook, errors=errors, message=_("Please correct the marked fields."),
                           status=422)
    try:
        gateway().json(caller(), "PATCH", f"{API}/{webhook_id}", json=body, headers=_if_match(values["version"]))
    except ApiError as exc:
        return _refused(exc, values, webhook)
    flash(_("Webhook %(url)s saved.", url=body["url"]), "ok")
    return redirect(url_for("webhooks.show", webhook_id=webhook_id))


def _action_refused(exc: ApiError, webhook: Mapping[str, Any], what: str, **kw: Any) -> Any:
    """An action the API refused: the webhook's page again, saying why (412: with Reload)."""
    if exc.conflict:
        return render_form(values_of(webhook), webhook=webhook, conflict=True, status=412, message=_(
            "Someone else changed this webhook since you opened it. Reload it and try again."), **kw)
    return render_form(values_of(webhook), webhook=webhook, message=_("%(what)s did not work: %(reason)s",
                                                                       what=what, reason=exc.message),
                       status=exc.status if 400 <= exc.status < 600 else 502, **kw)


@bp.post("/<webhook_id>/delete")
def delete(webhook_id: str) -> Any:
    webhook = _load(webhook_id)
    try:
        gateway().json(caller(), "DELETE", f"{API}/{webhook_id}", headers=_if_match(request.form.get("version")))
    except ApiError as exc:
        return _action_refused(exc, webhook, _("Delete"))
    flash(_("Webhook %(url)s deleted.", url=webhook.get("url") or ""), "ok")
    return redirect(url_for("webhooks.index"))


@bp.post("/<webhook_id>/enable")
def enable(webhook_id: str) -> Any:
    """Re-enable: the API clears the disabled reason and delivers the backlog."""
    webhook = _load(webhook_id)
    try:
        gateway().json(caller(), "PATCH", f"{API}/{webhook_id}", json={"active": True},
                       headers=_if_match(request.form.get("version")))
    except ApiError as exc:
        return _action_refused(exc, webhook, _("Re-enable"))
    flash(_("Webhook %(url)s is active again: its backlog is delivered next.", url=webhook.get("url") or ""), "ok")
    return redirect(url_for("webhooks.show", webhook_id=webhook_id))


@bp.post("/<webhook_id>/rotate-secret")
def rotate_secret(webhook_id: str) -> Any:
    webhook = _load(webhook_id)
    try:
        rotated = gateway().json(caller(), "POST", f"{API}/{webhook_id}/rotate-secret")
    except ApiError as exc:
        return _action_refused(exc, webhook, _("Rotate secret"))
    return _secret_page(webhook, str(rotated.get("secret") or ""), rotated=True,
                        previous_valid_until=rotated.get("previous_valid_until"))


@bp.post("/<webhook_id>/test")
def send_test(webhook_id: str) -> Any:
    webhook = _load(webhook_id)
    try:
        sent = gateway().json(caller(), "POST", f"{API}/{webhook_id}/test")
    except ApiError as exc:
        return _action_refused(exc, webhook, _("Send test"))
    flash(_("Test event %(event_id)s sent. Its delivery shows in the delivery log.",
            event_id=(sent or {}).get("event_id") or ""), "ok")
    return redirect(url_for("webhooks.show", webhook_id=webhook_id))


@bp.post("/<webhook_id>/replay")
def replay(webhook_id: str) -> Any:
    webhook = _load(webhook_id)
    since_text = request.form.get("since", "").strip()
    try:
        since = from_input(since_text)
    except ValueError:
        since = None
    if since is None:
        return render_form(values_of(webhook), webhook=webhook, since=since_text, status=422,
                           errors={"since": _("Enter the date and time (UTC) to replay from.")})
    try:
        answer = gateway().json(caller(), "POST", f"{API}/{webhook_id}/replay", json={"since": since})
    except ApiError as exc:
        if exc.status == 422:
            return render_form(values_of(webhook), webhook=webhook, since=since_text, status=422,
                               errors={"since": form_errors(exc).get("since") or exc.message})
        return _action_refused(exc, webhook, _("Replay"), since=since_text)
    queued = int((answer or {}).get("queued") or 0)
    flash(ngettext("%(num)d event since %(since)s queued for delivery again.",
                   "%(num)d events since %(since)s queued for delivery again.", queued,
                   since=logged_at(since)), "ok")
    return redirect(url_for("webhooks.show", webhook_id=webhook_id))


@bp.get("/<webhook_id>/deliveries")
def deliveries(webhook_id: str) -> Any:
    webhook = _load(webhook_id)
    token = request.args.get("page_token") or None
    result = request.args.get("result", "")
    result = result if result in RESULTS else ""
    page = gateway().get(caller(), f"{API}/{webhook_id}/deliveries", page_size=PAGE_SIZE, page_token=token,
                         result=result or None)
    next_token = page.get("next_page_token")
    next_url = url_for("webhooks.deliveries", webhook_id=webhook_id, result=result or None,
                       page_token=next_token) if next_token else None
    return render_template("webhooks_deliveries.html", webhook=webhook, rows=page.get("items") or [],
                           results=RESULTS, result=result, next_url=next_url, paged=bool(token))
