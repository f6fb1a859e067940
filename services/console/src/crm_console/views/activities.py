"""Screen 5, activities: emails, tasks, calendar items and notes.

- ``/activities``: the list, filtered by type, with simple search and paging, and **New**.
- ``/activities/new`` (``activities.new``): a new activity on its own, or from a record with
  ``?lead_id=`` / ``?opportunity_id=`` (the link prefilled); created from a record, it goes back
  to that record's Activities tab.
- ``/activities/<id>``: the activity's fields (**Save**, **Delete**, with ``If-Match``), and for
  the lead or opportunity it is on: its stage, and a **Stage** selector that changes the
  record's stage (``PATCH /v1/{records}/{id}`` with ``If-Match`` on the record's version; a 412
  says someone else changed the record, with **Reload**).

Times are entered and shown in UTC (the API's RFC 3339), so what is typed is what is stored.
``files:edit`` shows the writing controls; the Stage selector also needs ``{records}:edit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm_console.gateway import ApiError
from crm_console.kinds import KINDS as RECORD_KINDS
from crm_console.kinds import Kind
from crm_console.session import caller, can, gateway, login_required
from crm_console.times import api_time

bp = Blueprint("activities", __name__)

PAGE_SIZE = 50
TYPES = {"email": _l("Email"), "task": _l("Task"), "calendar": _l("Calendar"), "note": _l("Note")}
TIMES = (("due_at", _l("Due (UTC)")), ("starts_at", _l("Starts (UTC)")), ("ends_at", _l("Ends (UTC)")))
LINKS = (("lead_id", "leads"), ("opportunity_id", "opportunities"))  # an activity's record fields
SUBJECT_MAX = 500


def _require(permission: str) -> None:
    if not can(permission):
        abort(404)


# -- times ---------------------------------------------------------------------------------------

def to_input(value: str | None) -> str:
    """An API timestamp as a ``datetime-local`` value (UTC, to the minute)."""
    parsed = api_time(value)
    if parsed is None:
        return ""
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M")


def from_input(value: str) -> str | None:
    """A ``datetime-local`` value (taken as UTC) as RFC 3339; ``ValueError`` when it is not one."""
    value = value.strip()
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.app_template_filter("utc")
def shown_time(value: str | None) -> str:
    text = to_input(value)
    return text.replace("T", " ") + " UTC" if text else ""


# -- the form ------------------------------------------------------------------------------------

def form_values() -> tuple[dict[str, Any], dict[str, str]]:
    """The submitted activity (API fields) and what is wrong with it, before asking the API."""
    errors: dict[str, str] = {}
    kind = request.form.get("type", "")
    subject = request.form.get("subject", "").strip()
    body = request.form.get("body", "").replace("\r\n", "\n")
    values: dict[str, Any] = {"type": kind, "subject": subject, "body": body if body.strip() else None}
    if kind not in TYPES:
        errors["type"] = _("Choose a type.")
    if not subject:
        errors["subject"] = _("Subject is required.")
    elif len(subject) > SUBJECT_MAX:
        errors["subject"] = _("Subject is at most %(n)d characters.", n=SUBJECT_MAX)
    for name, _label in TIMES:
        raw = request.form.get(name, "")
        try:
            values[name] = from_input(raw)
        except ValueError:
            values[name] = raw
            errors[name] = _("Not a valid date and time.")
    return values, errors


def shown_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values as the form's inputs show them (times as ``datetime-local``)."""
    out = dict(values)
    for name, _label in TIMES:
        value = out.get(name)
        out[name] = to_input(value) or (value or "")  # a value the person typed that is no time stays
    return out


def _if_match(version: Any) -> dict[str, str]:
    text = str(version or "")
    return {"If-Match": f'"{text}"'} if text.isdigit() else {}


def _linked_from_args() -> tuple[str, str, Kind] | None:
    """The record an activity is created from (``?lead_id=`` / ``?opportunity_id=``, or the form's)."""
    for name, records in LINKS:
        record_id = (request.values.get(name) or "").strip()
        if record_id:
            return name, record_id, RECORD_KINDS[records]
    return None


def record_page(kind: Kind, record_id: str) -> str:
    return url_for("records.show", records=kind.records, record_id=record_id, tab="activities")


# -- the list ------------------------------------------------------------------------------------

@bp.get("/activities")
@login_required
def index() -> Any:
    _require("files:view")
    q = request.args.get("q", "").strip()
    kind = request.args.get("type", "")
    kind = kind if kind in TYPES else ""
    page_token = request.args.get("page_token") or None
    params = {"q": q, "type": kind, "page_size": PAGE_SIZE, "page_token": page_token,
              **{name: request.args.get(name) for name, _records in LINKS}}
    error = None
    try:
        page = gateway().get(caller(), "/v1/activities", **params)
    except ApiError as exc:
        if exc.status not in (400, 404, 422):
            raise
        page, error = {"items": [], "next_page_token": None}, exc.message
    return render_template("activity_list.html", items=page.get("items", []), q=q, type=kind, types=TYPES,
                           error=error, next_page_token=page.get("next_page_token"), paged=bool(page_token),
                           links=LINKS, record_kinds=RECORD_KINDS), (422 if error else 200)


# -- one activity --------------------------------------------------------------------------------

@bp.route("/activities/new", methods=["GET", "POST"])
@login_required
def new() -> Any:
    _require("files:edit")
    linked = _linked_from_args()
    record = None
    if linked:
        name, record_id, kind = linked
        _require(kind.permission("view"))
        if not can(kind.permission("edit")):  # putting an activity on a record changes that record
            return render_template("error.html", status=403, conflict=False,
                                   message=_("You may not add activities to this %(what)s.",
                                             what=str(kind.singular).lower())), 403
        record = gateway().get(caller(), f"/v1/{kind.records}/{record_id}")  # 404 for one the person may not see
    wanted = request.args.get("type", "task")
    values: dict[str, Any] = {"type": wanted if wanted in TYPES else "task"}
    errors: dict[str, str] = {}
    message, status = None, 200
    if request.method == "POST":
        values, errors = form_values()
        if linked:
            values[linked[0]] = linked[1]
        if errors:
            message, status = _("Please correct the marked fields."), 422
        else:
            try:
                created = gateway().json(caller(), "POST", "/v1/activities", json=values)
            except ApiError as exc:
                errors, message, status = exc.field_errors, exc.message, exc.status
            else:
                flash(_("%(type)s %(subject)s created.", type=TYPES[created["type"]], subject=created["subject"]),
                      "ok")
                if linked:
                    return redirect(record_page(linked[2], linked[1]))
                return redirect(url_for("activities.show", activity_id=created["id"]))
    return render_template("activity_new.html", values=shown_values(values), errors=errors, message=message,
                           types=TYPES, times=TIMES, linked=linked, record=record), status


def _linked_records(activity: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lead / opportunity the activity is on: title, stage, the stages it may move to and its
    version (for ``If-Match``), or only its id when the person may not see it."""
    out = []
    for name, records in LINKS:
        record_id = activity.get(name)
        if not record_id:
            continue
        kind = RECORD_KINDS[records]
        shown = dict(activity.get(kind.kind) or {"id": record_id})
        version = None
        if shown.get("title") and can(kind.permission("edit")):
            try:
                version = gateway().get(caller(), f"/v1/{records}/{record_id}").get("version")
            except ApiError as exc:
                if exc.status != 404:
                    raise
        stages = ([shown["stage"]] if shown.get("stage") else []) + list(shown.get("allowed_stages") or [])
        out.append({"kind": kind, "id": record_id, "record": shown, "version": version, "stages": stages,
                    "may_move": version is not None})
    return out


def render_activity(activity: Mapping[str, Any], *, values: Mapping[str, Any] | None = None,
                    errors: Mapping[str, str] | None = None, message: str | None = None, conflict: bool = False,
                    reload_url: str | None = None, status: int = 200) -> Any:
    return render_template("activity_show.html", activity=activity,
                           values=shown_values(values if values is not None else activity), errors=errors or {},
                           message=message, conflict=conflict, reload_url=reload_url, types=TYPES, times=TIMES,
                           linked=_linked_records(activity), may_delete=_may_delete(activity)), status


def _may_delete(activity: Mapping[str, Any]) -> bool:
    """Deleting takes the activity off its records too, which needs their edit permission."""
    return can("files:edit") and all(can(RECORD_KINDS[records].permission("edit"))
                                      for name, records in LINKS if activity.get(name))


def _load(activity_id: str) -> dict[str, Any]:
    return gateway().get(caller(), f"/v1/activities/{activity_id}")


@bp.get("/activities/<activity_id>")
@login_required
def show(activity_id: str) -> Any:
    _require("files:view")
    return render_activity(_load(activity_id))


@bp.post("/activities/<activity_id>")
@login_required
def save(activity_id: str) -> Any:
    _require("files:edit")
    activity = _load(activity_id)
    values, errors = form_values()
    here = url_for("activities.show", activity_id=activity_id)
    if errors:
        return render_activity(activity, values=values, errors=errors,
                               message=_("Please correct the marked fields."), status=422)
    try:
        saved = gateway().json(caller(), "PATCH", f"/v1/activities/{activity_id}", json=values,
                               headers=_if_match(request.form.get("version")))
    except ApiError as exc:
        if exc.conflict:
            return render_activity(activity, values=values, conflict=True, reload_url=here, status=412,
                                   message=_("Someone else changed this activity since you opened it. Reload it "
                                             "to see their changes (yours are not saved)."))
        return render_activity(activity, values=values, errors=exc.field_errors, message=exc.message,
                               status=exc.status)
    flash(_("%(type)s %(subject)s saved.", type=TYPES.get(saved["type"], ""), subject=saved["subject"]), "ok")
    return redirect(here)


@bp.post("/activities/<activity_id>/delete")
@login_required
def delete(activity_id: str) -> Any:
    _require("files:edit")
    try:
        gateway().json(caller(), "DELETE", f"/v1/activities/{activity_id}",
                       headers=_if_match(request.form.get("version")))
    except ApiError as exc:
        activity = _load(activity_id)
        here = url_for("activities.show", activity_id=activity_id)
        message = (_("Someone else changed this activity since you opened it; it was not deleted. Reload it and "
                     "try again.") if exc.conflict else exc.message)
        return render_activity(activity, message=message, conflict=exc.conflict, reload_url=here,
                               status=exc.status)
    flash(_("Activity deleted."), "ok")
    return redirect(url_for("activities.index"))


@bp.post("/activities/<activity_id>/stage")
@login_required
def stage(activity_id: str) -> Any:
    """The **Stage** of the record the activity is on: ``PATCH`` its ``stage_id`` with ``If-Match``."""
    records = request.form.get("records", "")
    kind = RECORD_KINDS.get(records)
    if kind is None:
        abort(404)
    _require(kind.permission("edit"))
    activity = _load(activity_id)
    field_name = f"{kind.kind}_id"
    record_id = activity.get(field_name)
    if not record_id:
        abort(404)
    here = url_for("activities.show", activity_id=activity_id)
    try:
        updated = gateway().json(caller(), "PATCH", f"/v1/{records}/{record_id}",
                                 json={"stage_id": request.form.get("stage_id", "")},
                                 headers=_if_match(request.form.get("version")))
    except ApiError as exc:
        if exc.conflict:
            return render_activity(activity, conflict=True, reload_url=here, status=412,
                                   message=_("Someone else changed this %(what)s since you opened the page; its "
                                             "stage was not changed. Reload to see the latest.",
                                             what=str(kind.singular).lower()))
        return render_activity(activity, message=exc.message, status=exc.status)
    flash(_("%(title)s moved to %(stage)s.", title=updated.get("title", ""),
            stage=(updated.get("stage") or {}).get("name", "")), "ok")
    return redirect(here)
