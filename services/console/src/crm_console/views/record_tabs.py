"""Screen 3, the tabs of a lead's or opportunity's record page (all but General).

**Attachments**, **Job orders**, **Contacts**, **Activities**, **Placements** and **Timeline**,
one implementation for both kinds. The record page renders a tab inside itself with
``render_tab(kind, record, tab)`` (``?tab=contacts``: works without script); htmx loads the same
fragment from ``GET /<records>/<id>/tabs/<tab>`` and every write here answers with the tab's
fragment again (its 4xx status and the API's reason in a ``role=alert`` message when refused).
Without script a write redirects back to the record page (a refusal shows a small page with the
tab, its message and what was typed).

A tab's **New** and **Add** are GET forms (``?form=new|add``, and ``q`` for the search of Add):
they open the form in the tab, through htmx or as a plain page load.

Attachments upload with a progress bar (static/upload.js posts the form with XMLHttpRequest)
or as a plain multipart form; the console passes the file on to the API, and downloads stream
the API's bytes through. Every call is the signed-in person's: the API decides who sees what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import format_datetime, lazy_gettext
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.exceptions import RequestEntityTooLarge

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import Kind, kind_of
from crm_console.session import caller, can, gateway, login_required, permitted_kind
from crm_console.times import api_time

bp = Blueprint("record_tabs", __name__)

TABS: dict[str, Any] = {
    "attachments": lazy_gettext("Attachments"),
    "job-orders": lazy_gettext("Job orders"),
    "contacts": lazy_gettext("Contacts"),
    "activities": lazy_gettext("Activities"),
    "placements": lazy_gettext("Placements"),
    "timeline": lazy_gettext("Timeline"),
}
PROTECTED_ROLES = ("MAIN", "SIGN")  # set on the record, never from the list
SEARCH_RESULTS = 20
DOWNLOAD_CHUNK = 64 * 1024
RECORD = "/<any(leads, opportunities):records>/<record_id>"


class TabState:
    """What a tab shows besides its data: an open form, what was typed, the last outcome."""

    def __init__(self, form: str = "", values: Mapping[str, Any] | None = None, error: ApiError | None = None,
                 message: str = "", query: str = "") -> None:
        self.form = form
        self.values = dict(values or {})
        self.error = error
        self.message = message
        self.query = query

    @property
    def field_errors(self) -> dict[str, str]:
        return self.error.field_errors if self.error is not None else {}


# -- rendering -------------------------------------------------------------------------------------

def render_tab(kind: Kind | str, record: Mapping[str, Any], tab: str, state: TabState | None = None) -> str:
    """The HTML of ``tab`` for ``record`` (the record page puts it inside itself).

    An unknown tab is a 404. ``?form=new|add`` (and ``q``) of the current request open the
    tab's New or Add form, so the page works without script.
    """
    kind = kind if isinstance(kind, Kind) else kind_of(kind)
    if tab not in TABS:
        abort(404)
    if state is None:
        form = request.args.get("form", "")
        state = TabState(form=form if form in ("new", "add") else "", query=request.args.get("q", "").strip())
    context: dict[str, Any] = {
        "kind": kind, "records": kind.records, "record": record, "tab": tab, "tab_name": TABS[tab],
        "state": state, "may_edit": can(kind.permission("edit")),
        "may_link": can(kind.permission("edit")) and can("files:edit"),
        "record_url": record_url(kind.records, record["id"]),
        "tab_url": url_for("record_tabs.tab", records=kind.records, record_id=record["id"], tab=tab),
    }
    try:
        context.update(_LOADERS[tab](kind, record, state))
        context["unavailable"] = None
    except ApiError as exc:
        if exc.status not in (403, 404):
            raise
        # No files:view (or the record went away): the tab says so, the rest of the page works.
        context["unavailable"] = exc.message if exc.status == 404 else _("You may not see this tab.")
    return Markup(render_template(f"record_tabs/{tab.replace('-', '_')}.html", **context))  # noqa: S704 - a template


def record_url(records: str, record_id: str, **params: str) -> str:
    """The record page (``?tab=...``), whoever builds it."""
    if "records.show" in current_app.view_functions:
        base = url_for("records.show", records=records, record_id=record_id)
    else:
        base = f"/{records}/{record_id}"
    params = {k: v for k, v in params.items() if v}
    return base + ("?" + urlencode(params) if params else "")


def _when(value: Any, fmt: str = "short") -> str:
    parsed = api_time(value)
    return format_datetime(parsed, fmt) if parsed is not None else str(value or "")


def _size(value: Any) -> str:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@bp.app_template_filter("tab_when")
def _when_filter(value: Any) -> str:
    return _when(value)


@bp.app_template_filter("tab_size")
def _size_filter(value: Any) -> str:
    return _size(value)


# -- what each tab shows ---------------------------------------------------------------------------

def _path(kind: Kind, record: Mapping[str, Any], tail: str = "") -> str:
    return f"/v1/{kind.records}/{record['id']}{tail}"


def _attachments(kind: Kind, record: Mapping[str, Any], state: TabState) -> dict[str, Any]:
    items = gateway().all_pages(caller(), _path(kind, record, "/attachments"))
    return {"items": items}


def _company_names(company_ids: set[str | None]) -> dict[str, str]:
    names = {}
    for company_id in sorted(i for i in company_ids if i):
        try:
            names[company_id] = gateway().get(caller(), f"/v1/companies/{company_id}").get("name", "")
        except ApiError:
            names[company_id] = ""
    return names


def _job_orders(kind: Kind, record: Mapping[str, Any], state: TabState) -> dict[str, Any]:
    items = gateway().all_pages(caller(), _path(kind, record, "/job-orders"))
    found: list[dict[str, Any]] = []
    if state.form == "add" and state.query:
        linked = {item["job_order_id"] for item in items}
        page = gateway().get(caller(), "/v1/job-orders", q=state.query, page_size=SEARCH_RESULTS)
        found = [j for j in page.get("items", []) if j["id"] not in linked]
    companies = _company_names({(i.get("job_order") or {}).get("company_id") for i in items}
                               | {j.get("company_id") for j in found})
    return {"items": items, "found": found, "companies": companies}


def _roles(kind: Kind) -> list[dict[str, Any]]:
    return [r for r in catalogue.table(kind.kind, "roles") if r.get("active", True)]


def _contacts(kind: Kind, record: Mapping[str, Any], state: TabState) -> dict[str, Any]:
    items = gateway().all_pages(caller(), _path(kind, record, "/contacts"))
    roles = _roles(kind)
    found: list[dict[str, Any]] = []
    if state.form == "add" and state.query:
        linked = {item["contact_id"] for item in items}
        page = gateway().get(caller(), "/v1/contacts", q=state.query, page_size=SEARCH_RESULTS)
        found = [c for c in page.get("items", []) if c["id"] not in linked]
    rows = []
    for item in items:
        code = (item.get("role") or {}).get("code")
        if code == "MAIN" or item.get("contact_id") == record.get("contact_id"):
            locked = _("Main contact: change it on General.")
        elif code == "SIGN":
            locked = _("Signing authority: remove the contact, then add the new signing authority.")
        else:
            locked = ""
        rows.append({**item, "locked": locked})
    return {
        "items": rows, "found": found,
        # A role change from the list never moves a contact to or from MAIN or SIGN (the API's rule).
        "changeable_roles": [r for r in roles if r.get("code") not in PROTECTED_ROLES],
        # Adding: any role but MAIN (the main contact is the record's own contact_id).
        "addable_roles": [r for r in roles if r.get("code") != "MAIN"],
    }


def activity_form_url(kind: Kind, record: Mapping[str, Any]) -> str:
    """The activity form of the activities screen, for a new activity of this record."""
    params = {f"{kind.kind}_id": record["id"]}  # the form comes back to the record's Activities tab
    if "activities.new" in current_app.view_functions:
        return url_for("activities.new", **params)
    return "/activities/new?" + urlencode(params)


def activity_url(activity_id: str) -> str | None:
    for endpoint in ("activities.show", "activities.edit", "activities.record", "activities.page"):
        if endpoint in current_app.view_functions:
            return url_for(endpoint, activity_id=activity_id)
    return None


def _activities(kind: Kind, record: Mapping[str, Any], state: TabState) -> dict[str, Any]:
    items = gateway().all_pages(caller(), _path(kind, record, "/activities"))
    types = {"email": _("Email"), "task": _("Task"), "calendar": _("Calendar"), "note": _("Note")}
    return {"items": items, "types": types, "new_url": activity_form_url(kind, record), "activity_url": activity_url}


def _placements(kind: Kind, record: Mapping[str, Any], state: TabState) -> dict[str, Any]:
    items = gateway().all_pages(caller(), _path(kind, record, "/placements"))
    titles = {i["job_order_id"]: (i.get("job_order") or {}).get("title", "")
              for i in gateway().all_pages(caller(), _path(kind, record, "/job-orders"))}
    for item in items:
        if item.get("job_order_id") not in titles:
            try:
                order = gateway().get(caller(), f"/v1/job-orders/{item['job_order_id']}")
                titles[item["job_order_id"]] = order["title"]
            except ApiError:
                titles[item["job_order_id"]] = ""
    return {"items": items, "job_order_titles": titles}


def _timeline(kind: Kind, record: Mapping[str, Any], state: TabState) -> dict[str, Any]:
    entries = gateway().all_pages(caller(), _path(kind, record, "/timeline"), most=500)
    names = {}  # contact id -> name, for entries that name a contact only by id
    for entry in entries:
        data = entry.get("data") or {}
        if data.get("contact_id") and data.get("contact_name"):
            names[data["contact_id"]] = data["contact_name"]
    unnamed = [e for e in entries if e.get("type") == "contact_role_changed"
               and (e.get("data") or {}).get("contact_id") not in names]
    if unnamed:
        for link in gateway().all_pages(caller(), _path(kind, record, "/contacts")):
            names[link["contact_id"]] = _full_name(link.get("contact") or {})
    return {"entries": [describe(kind, entry, names) for entry in entries]}


_LOADERS = {"attachments": _attachments, "job-orders": _job_orders, "contacts": _contacts,
            "activities": _activities, "placements": _placements, "timeline": _timeline}


def describe(kind: Kind, entry: Mapping[str, Any], contact_names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A timeline entry in words: what happened, by whom, when."""
    data: Mapping[str, Any] = entry.get("data") or {}
    stages = catalogue.by_id(catalogue.stages(kind.kind))
    groups = catalogue.by_id(catalogue.stage_groups(kind.kind))

    def name_of(table: str, entry_id: Any) -> str:
        if not entry_id:
            return _("none")
        if table == "stages":
            found = stages.get(entry_id)
        elif table == "stage-groups":
            found = groups.get(entry_id)
        else:
            found = catalogue.by_id(catalogue.table(kind.kind, table)).get(entry_id)
        return (found or {}).get("name") or str(entry_id)

    what = str(entry.get("type") or "")
    link: tuple[str, str] | None = None
    if what == "created":
        text = _("Created “%(title)s” in stage %(stage)s", title=data.get("title", ""),
                 stage=name_of("stages", data.get("stage_id")))
    elif what == "stage_changed":
        text = _("Stage changed from %(old)s to %(new)s", old=name_of("stages", data.get("from_stage_id")),
                 new=name_of("stages", data.get("to_stage_id")))
    elif what == "stage_group_changed":
        text = _("Stage group changed from %(old)s to %(new)s",
                 old=name_of("stage-groups", data.get("from_stage_group_id")),
                 new=name_of("stage-groups", data.get("to_stage_group_id")))
    elif what == "added_to_group":
        text = _("Added to group %(group)s", group=name_of("groups", data.get("group_id")))
    elif what == "removed_from_group":
        text = _("Removed from group %(group)s", group=name_of("groups", data.get("group_id")))
    elif what == "contact_linked":
        text = _("Contact %(name)s added with role %(role)s", name=data.get("contact_name", ""),
                 role=name_of("roles", data.get("role_id")))
    elif what == "contact_unlinked":
        text = _("Contact %(name)s removed", name=data.get("contact_name", ""))
    elif what == "contact_role_changed":
        text = _("Role of %(name)s changed from %(old)s to %(new)s",
                 name=(contact_names or {}).get(str(data.get("contact_id")), "") or _("a contact"),
                 old=name_of("roles", data.get("from_role_id")), new=name_of("roles", data.get("to_role_id")))
    elif what == "job_order_linked":
        text = _("Job order “%(title)s” linked", title=data.get("title", ""))
    elif what == "job_order_unlinked":
        text = _("Job order “%(title)s” removed", title=data.get("title", ""))
    elif what == "activity_added":
        text = _("Activity “%(subject)s” added", subject=data.get("subject", ""))
    elif what == "activity_removed":
        text = _("Activity “%(subject)s” removed", subject=data.get("subject", ""))
    elif what == "converted":
        text = _("Converted into an opportunity")
        if data.get("opportunity_id"):
            link = (record_url("opportunities", str(data["opportunity_id"])), _("Open the opportunity"))
    elif what == "converted_from_lead":
        text = _("Created by converting a lead")
        if data.get("lead_id"):
            link = (record_url("leads", str(data["lead_id"])), _("Open the lead"))
    else:
        text = what.replace("_", " ").capitalize()
    cause = str(data.get("cause") or "")
    if cause == "main_contact":
        text += " " + _("(the main contact was set on General)")
    elif cause == "conversion":
        text += " " + _("(by the conversion)")
    elif cause.startswith("trigger:"):
        text += " " + _("(by a trigger)")
    return {"at": entry.get("at"), "text": text, "by": data.get("by") or "", "link": link, "type": what}


# -- reading a record and answering ----------------------------------------------------------------

def _load(records: str, record_id: str) -> tuple[Kind, dict[str, Any]]:
    kind = permitted_kind(records, "view")
    return kind, gateway().get(caller(), f"/v1/{records}/{record_id}")


def _htmx() -> bool:
    return bool(request.headers.get("HX-Request"))


def _answer(kind: Kind, record: dict[str, Any], tab: str, state: TabState, status: int = 200) -> Any:
    """After a write: the tab again (htmx / upload.js), or back to the record page (plain forms)."""
    if _htmx():
        # A change shows in other tabs too (the timeline at least): the page reloads them when opened.
        headers = {"HX-Trigger": "crmRecordChanged"} if state.error is None else {}
        return render_tab(kind, record, tab, state), status, headers
    if state.error is None:
        if state.message:
            flash(state.message, "ok")
        return redirect(record_url(kind.records, record["id"], tab=tab), 303)
    html = render_tab(kind, record, tab, state)
    return render_template("record_tabs/page.html", kind=kind, record=record, tab=tab, tab_html=html,
                           back=record_url(kind.records, record["id"], tab=tab)), status


def _refused(kind: Kind, record: dict[str, Any], tab: str, exc: ApiError, form: str = "",
             values: Mapping[str, Any] | None = None) -> Any:
    if exc.status == 412 or exc.status >= 500:
        raise exc
    state = TabState(form=form, values=values, error=exc, query=str((values or {}).get("q", "")))
    return _answer(kind, record, tab, state, exc.status)


def _editable(records: str, record_id: str, files: bool = True) -> tuple[Kind, dict[str, Any]]:
    """The record, if the person may change it (and, for links, the files: ``files:edit``); else 403."""
    kind, record = _load(records, record_id)
    if not (can(kind.permission("edit")) and (not files or can("files:edit"))):
        abort(403)
    return kind, record


def _write(kind: Kind, record: dict[str, Any], tab: str, call: Callable[[], Any],
           message: str | Callable[[Any], str], form: str = "", values: Mapping[str, Any] | None = None) -> Any:
    """A tab's write: ``call`` (the form's checks and the API call); the tab again with ``message``
    (or ``message(answer)``), or with the refusal and what was typed."""
    try:
        answer = call()
    except ApiError as exc:
        return _refused(kind, record, tab, exc, form=form, values=values)
    return _answer(kind, record, tab, TabState(message=message(answer) if callable(message) else message))


def _link_form(*names: str) -> tuple[str, dict[str, str]]:
    """A New or Add form's mode and what was typed in ``names`` (and ``q``, the Add search)."""
    form = request.form
    return ("new" if form.get("mode") == "new" else "add"), {k: form.get(k, "") for k in (*names, "q")}


def _link_body(key: str, mode: str, values: Mapping[str, str], required: Mapping[str, str],
               optional: tuple[str, ...], choose: str) -> dict[str, Any]:
    """The API body that links a ``key`` (contact, job_order): a new one from the New form (each of
    ``required`` with its message when empty; ``optional`` ones when typed), or the one chosen in Add."""
    if mode == "new":
        for name, message in required.items():
            if not values[name].strip():
                raise _invalid(f"{key}.{name}", message)
        new = {k: values[k] for k in required}
        new.update({k: values[k] for k in optional if values[k].strip()})
        return {key: new}
    if not values[f"{key}_id"]:
        raise _invalid(f"{key}_id", choose)
    return {f"{key}_id": values[f"{key}_id"]}


def _delete(kind: Kind, record: Mapping[str, Any], tail: str) -> None:
    gateway().request(caller(), "DELETE", _path(kind, record, tail)).close()


def _full_name(contact: Mapping[str, Any]) -> str:
    return f"{contact.get('first_name', '')} {contact.get('last_name', '')}".strip()


def _invalid(field: str, message: str) -> ApiError:
    """A form error found before calling the API (shown like the API's own 422)."""
    return ApiError(422, {"title": message, "detail": message, "errors": [{"field": field, "message": message}]})


# -- routes ----------------------------------------------------------------------------------------

@bp.get(f"{RECORD}/tabs/<tab>")
@login_required
def tab(records: str, record_id: str, tab: str) -> Any:
    """One tab's fragment (htmx); a plain browser goes to the record page showing that tab."""
    if tab not in TABS:
        abort(404)
    if not _htmx():
        return redirect(record_url(records, record_id, tab=tab, form=request.args.get("form", ""),
                                   q=request.args.get("q", "")))
    kind, record = _load(records, record_id)
    return render_tab(kind, record, tab)


# Attachments

@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> Any:
    limit = int(current_app.extensions["crm_console"].settings["CRM_MAX_UPLOAD_BYTES"])
    message = _("The file is too large: attachments may have at most %(size)s.", size=_size(limit))
    args = request.view_args or {}
    if request.endpoint == "record_tabs.upload" and args.get("record_id"):
        kind, record = _load(str(args["records"]), str(args["record_id"]))
        return _answer(kind, record, "attachments", TabState(error=ApiError(413, {"detail": message})), 413)
    return render_template("error.html", status=413, message=message, conflict=False), 413


@bp.post(f"{RECORD}/tabs/attachments")
@login_required
def upload(records: str, record_id: str) -> Any:
    kind, record = _editable(records, record_id, files=False)
    upload = request.files.get("file")
    values = {"type": request.form.get("type", "")}

    def call() -> Any:
        if upload is None or not upload.filename:
            raise _invalid("file", _("Choose a file to upload."))
        if not values["type"].strip():
            raise _invalid("type", _("Say what kind of file this is."))
        return gateway().json(caller(), "POST", _path(kind, record, "/attachments"), data={"type": values["type"]},
                              files={"file": (upload.filename, upload.stream,
                                              upload.mimetype or "application/octet-stream")})

    return _write(kind, record, "attachments", call,
                  lambda _result: _("%(name)s was uploaded.", name=upload.filename), values=values)


@bp.get(f"{RECORD}/attachments/<attachment_id>")
@login_required
def download(records: str, record_id: str, attachment_id: str) -> Any:
    """The attachment's bytes, streamed from the API as they come (always a download)."""
    permitted_kind(records, "view")
    upstream = gateway().request(caller(), "GET", f"/v1/{records}/{record_id}/attachments/{attachment_id}",
                                 headers={"Accept": "*/*"}, stream=True)

    def chunks() -> Iterator[bytes]:
        try:
            yield from upstream.iter_content(DOWNLOAD_CHUNK)
        finally:
            upstream.close()

    headers = {
        "Content-Disposition": upstream.headers.get("Content-Disposition") or "attachment",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    }
    if upstream.headers.get("Content-Length"):
        headers["Content-Length"] = upstream.headers["Content-Length"]
    return Response(stream_with_context(chunks()), status=200, headers=headers,
                    content_type=upstream.headers.get("Content-Type") or "application/octet-stream")


@bp.post(f"{RECORD}/tabs/attachments/<attachment_id>/delete")
@login_required
def delete_attachment(records: str, record_id: str, attachment_id: str) -> Any:
    kind, record = _editable(records, record_id, files=False)
    return _write(kind, record, "attachments", lambda: _delete(kind, record, f"/attachments/{attachment_id}"),
                  _("%(name)s was deleted.", name=request.form.get("name", "")))


# Job orders

@bp.post(f"{RECORD}/tabs/job-orders")
@login_required
def link_job_order(records: str, record_id: str) -> Any:
    kind, record = _editable(records, record_id)
    mode, values = _link_form("title", "status", "description", "job_order_id")

    def call() -> Any:
        body = _link_body("job_order", mode, values, {"title": _("A job order needs a title.")},
                          ("status", "description"), _("Choose a job order."))
        return gateway().json(caller(), "POST", _path(kind, record, "/job-orders"), json=body)

    def linked(answer: Any) -> str:
        title = (answer or {}).get("job_order", {}).get("title") or values["title"]
        return _("Job order “%(title)s” linked.", title=title)

    return _write(kind, record, "job-orders", call, linked, form=mode, values=values)


@bp.post(f"{RECORD}/tabs/job-orders/<job_order_id>/remove")
@login_required
def unlink_job_order(records: str, record_id: str, job_order_id: str) -> Any:
    kind, record = _editable(records, record_id)
    return _write(kind, record, "job-orders", lambda: _delete(kind, record, f"/job-orders/{job_order_id}"),
                  _("Job order “%(title)s” removed.", title=request.form.get("name", "")))


# Contacts

@bp.post(f"{RECORD}/tabs/contacts")
@login_required
def link_contact(records: str, record_id: str) -> Any:
    kind, record = _editable(records, record_id)
    mode, values = _link_form("first_name", "last_name", "email", "phone", "contact_id", "role_id")

    def call() -> Any:
        if not values["role_id"]:
            raise _invalid("role_id", _("Choose a role."))
        body = _link_body("contact", mode, values, {"first_name": _("A contact needs a first name."),
                                                    "last_name": _("A contact needs a last name.")},
                          ("email", "phone"), _("Choose a contact."))
        return gateway().json(caller(), "POST", _path(kind, record, "/contacts"),
                              json={**body, "role_id": values["role_id"]})

    return _write(kind, record, "contacts", call,
                  lambda answer: _("%(name)s added.", name=_full_name((answer or {}).get("contact") or {})),
                  form=mode, values=values)


@bp.post(f"{RECORD}/tabs/contacts/<contact_id>/role")
@login_required
def change_role(records: str, record_id: str, contact_id: str) -> Any:
    kind, record = _editable(records, record_id)
    name = request.form.get("name", "")

    def call() -> Any:
        role_id = request.form.get("role_id", "")
        if not role_id:
            raise _invalid("role_id", _("Choose a role for %(name)s.", name=name))
        return gateway().json(caller(), "PATCH", _path(kind, record, f"/contacts/{contact_id}"),
                              json={"role_id": role_id})

    return _write(kind, record, "contacts", call, _("The role of %(name)s was saved.", name=name))


@bp.post(f"{RECORD}/tabs/contacts/<contact_id>/remove")
@login_required
def unlink_contact(records: str, record_id: str, contact_id: str) -> Any:
    kind, record = _editable(records, record_id)
    return _write(kind, record, "contacts", lambda: _delete(kind, record, f"/contacts/{contact_id}"),
                  _("%(name)s removed.", name=request.form.get("name", "")))
