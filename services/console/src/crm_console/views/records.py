"""Screen 3, the record page of a lead or opportunity (one implementation for both kinds).

The page: the title as its heading, the **Stage** selector with the stage's colour and remarks,
the **Email template** and **Document template** selectors (only the templates visible at the
chosen stage: changing the stage re-renders them before anything is saved, with htmx), the
buttons **Save**, **Print**, **Link**, **Cancel** and on leads **+ Opportunity**, and the tabs.
**General** is the record's form on this page; the other tabs' panels come from the
``record_tabs`` blueprint (``GET /<records>/<id>/tabs/<tab>``), loaded with htmx, or rendered
into the page for ``?tab=<name>`` so that every tab works without script too.

**Save** sends the changed fields with ``If-Match`` on the version the page showed; a 412 says
that someone else changed the record, offers **Reload**, and keeps what the person typed on the
page (and lists it, next to what is saved now). **Print** renders a print template visible at
the stage through the API and serves that HTML under a ``sandbox`` CSP: its markup can never run
script in the console's origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from werkzeug.wrappers import Response

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import Kind, kind_of
from crm_console.session import caller, can, gateway, login_required, permitted_kind

bp = Blueprint("records", __name__)

RECORDS = "<any(leads, opportunities):records>"
# The tabs in CONSOLE.md's order: (name in URLs and ids, label). General is this page's form.
TABS = (("general", _l("General")), ("attachments", _l("Attachments")), ("job-orders", _l("Job orders")),
        ("contacts", _l("Contacts")), ("activities", _l("Activities")), ("placements", _l("Placements")),
        ("timeline", _l("Timeline")))
TAB_NAMES = {name for name, _label in TABS}
CHOICES = 200  # companies / contacts offered in a selector (the current one is always among them)
# The catalogue tables a record refers to, as (form field, table name, label).
TABLE_FIELDS = (("source_id", "sources", _l("Source")), ("priority_id", "priorities", _l("Priority")),
                ("category_id", "categories", _l("Category")), ("procedure_id", "procedures", _l("Procedure")))
# What a printed template may do in the browser: nothing but show itself (no script, no
# same-origin access, no forms), styled by its own inline CSS, images from data: URLs only.
PRINT_CSP = ("sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; "
             "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


# -- reading what the page shows ------------------------------------------------------------------

def _load(kind: Kind, record_id: str) -> dict[str, Any]:
    if not can(kind.permission("view")):
        abort(404)
    return gateway().get(caller(), f"/v1/{kind.records}/{record_id}")


def _safe_list(path: str, **params: Any) -> list[dict[str, Any]]:
    """One page of a list; nothing when the person may not read it (the selector then offers
    only the record's current value)."""
    try:
        return gateway().get(caller(), path, page_size=CHOICES, **params).get("items", [])
    except ApiError:
        return []


def _with_current(items: list[dict[str, Any]], current_id: str | None, path: str) -> list[dict[str, Any]]:
    """``items`` plus the record's current entry (read by id when the page of choices lacks it)."""
    if not current_id or any(item.get("id") == current_id for item in items):
        return items
    try:
        found = gateway().get(caller(), f"{path}/{current_id}")
    except ApiError:
        found = {"id": current_id}
    return [found, *items]


def stage_templates(kind: Kind, stage_id: str | None, template_kind: str) -> list[dict[str, Any]]:
    """The templates of ``template_kind`` visible at ``stage_id`` (the catalogue's stage links)."""
    if not stage_id:
        return []
    try:
        return gateway().all_pages(caller(), "/v1/templates", kind=template_kind,
                                   visible_at=f"{kind.kind}_stage", stage_id=stage_id)
    except ApiError:
        return []


def print_templates(kind: Kind, stage_id: str | None) -> list[dict[str, Any]]:
    """The print templates the API prints at the record's stage: linked to it, or to no stage."""
    try:
        found = gateway().all_pages(caller(), "/v1/templates", kind="print")
    except ApiError:
        return []
    out = []
    for template in found:
        visible_at, stage_ids = template.get("visible_at"), template.get("stage_ids") or []
        if visible_at is None and not stage_ids:
            out.append(template)
        elif visible_at == f"{kind.kind}_stage" and (not stage_ids or stage_id in stage_ids):
            out.append(template)
    return out


def stage_context(kind: Kind, stage_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    """The stage panel: the chosen stage (colour, remarks) and the templates visible at it."""
    stages = catalogue.stages(kind.kind)
    stage = catalogue.by_id(stages).get(stage_id or "") or record.get("stage") or {}
    return {"stage": stage,
            "email_templates": stage_templates(kind, stage.get("id"), "email"),
            "document_templates": stage_templates(kind, stage.get("id"), "document")}


def _contacts(company_id: str | None) -> list[dict[str, Any]]:
    return _safe_list("/v1/contacts", company_id=company_id) if company_id else _safe_list("/v1/contacts")


def form_context(kind: Kind, record: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Everything the General form offers, for the values shown (the record's or those typed)."""
    stages = catalogue.stages(kind.kind)
    stage_id = values.get("stage_id") or (record.get("stage") or {}).get("id")
    offered_stages = [s for s in stages if s.get("active", True) or s["id"] == (record.get("stage") or {}).get("id")]
    tables = {}
    for field, table, _label in TABLE_FIELDS:
        entries = catalogue.table(kind.kind, table)
        tables[field] = [e for e in entries if e.get("active", True) or e["id"] == values.get(field)]
    groups = [g for g in catalogue.table(kind.kind, "groups")
              if g.get("active", True) or g["id"] in (values.get("group_ids") or [])]
    companies = _with_current(_safe_list("/v1/companies"), values.get("company_id"), "/v1/companies")
    contacts = _with_current(_contacts(values.get("company_id")), values.get("contact_id"), "/v1/contacts")
    return {"stages": offered_stages, "tables": tables, "table_fields": TABLE_FIELDS, "groups": groups,
            "companies": companies, "contacts": contacts,
            "print_templates": print_templates(kind, (record.get("stage") or {}).get("id")),
            **stage_context(kind, stage_id, record)}


def record_values(record: dict[str, Any]) -> dict[str, Any]:
    """The form's values of a record as the API gives it."""
    values = {name: record.get(name) for name in
              ("title", "description", "company_id", "contact_id", "owner_id", "source_id", "priority_id",
               "category_id", "procedure_id", "amount", "currency", "probability", "expected_close_date")}
    values["stage_id"] = (record.get("stage") or {}).get("id") or record.get("stage_id")
    values["group_ids"] = list(record.get("group_ids") or [])
    return values


def _tab_url(records: str, record_id: str, tab: str) -> str | None:
    if "record_tabs.tab" not in current_app.view_functions:
        return None
    return url_for("record_tabs.tab", records=records, record_id=record_id, tab=tab)


def _render_tab(kind: Kind, record: dict[str, Any], tab: str) -> str | None:
    """A tab's panel rendered into the page (no script needed), by the tabs' own module."""
    try:
        from crm_console.views.record_tabs import render_tab  # type: ignore[attr-defined]
    except ImportError:
        return None
    return Markup(render_tab(kind, record, tab))  # noqa: S704 - the tabs module renders with autoescaping


def render_page(kind: Kind, record: dict[str, Any], *, values: dict[str, Any] | None = None, status: int = 200,
                errors: dict[str, str] | None = None, error: str | None = None,
                conflict: dict[str, Any] | None = None) -> Any:
    """The record page; ``values`` are what the form shows (typed ones after a refusal)."""
    records = kind.records
    shown = values if values is not None else record_values(record)
    tab = request.args.get("tab", "general")
    if tab not in TAB_NAMES or values is not None:
        tab = "general"
    tabs = [{"name": name, "label": label, "url": _tab_url(records, record["id"], name) if name != "general" else None}
            for name, label in TABS]
    panel = _render_tab(kind, record, tab) if tab != "general" else None
    context = {"kind": kind, "records": records, "record": record, "values": shown, "tabs": tabs, "tab": tab,
               "panel": panel, "errors": errors or {}, "error": error, "conflict": conflict,
               "editable": can(kind.permission("edit")),
               **form_context(kind, record, shown)}
    return render_template("record.html", **context), status


@bp.get(f"/{RECORDS}/<record_id>")
@login_required
def show(records: str, record_id: str) -> Any:
    kind = kind_of(records)
    return render_page(kind, _load(kind, record_id))


@bp.get(f"/{RECORDS}/<record_id>/stage-panel")
@login_required
def stage_panel(records: str, record_id: str) -> Any:
    """The stage's colour and remarks and the templates visible at it, for the stage chosen in
    the selector (nothing saved yet)."""
    kind = kind_of(records)
    record = _load(kind, record_id)
    stage_id = request.args.get("stage_id") or None
    if stage_id and stage_id not in catalogue.by_id(catalogue.stages(kind.kind)):
        stage_id = None
    return render_template("record_stage.html", kind=kind, records=records, record=record,
                           **stage_context(kind, stage_id, record))


@bp.get(f"/{RECORDS}/<record_id>/company-choices")
@login_required
def company_choices(records: str, record_id: str) -> Any:
    """The Company selector with the companies the search box finds (the chosen one kept)."""
    kind = kind_of(records)
    record = _load(kind, record_id)
    query = (request.args.get("company_q") or "").strip()[:200]
    company_id = request.args.get("company_id") or None
    found = _safe_list("/v1/companies", q=query) if query else _safe_list("/v1/companies")
    companies = _with_current(found, company_id, "/v1/companies")
    return render_template("record_company.html", kind=kind, records=records, record=record, companies=companies,
                           values={"company_id": company_id}, errors={})


@bp.get(f"/{RECORDS}/<record_id>/contact-choices")
@login_required
def contact_choices(records: str, record_id: str) -> Any:
    """The Contact selector for the company chosen (before saving)."""
    kind = kind_of(records)
    record = _load(kind, record_id)
    company_id = request.args.get("company_id") or None
    contact_id = request.args.get("contact_id") or None
    contacts = _with_current(_contacts(company_id), contact_id, "/v1/contacts")
    return render_template("record_contact.html", kind=kind, record=record, contacts=contacts,
                           values={"contact_id": contact_id}, errors={}, editable=can(kind.permission("edit")))


# -- saving ---------------------------------------------------------------------------------------

def typed_values(kind: Kind) -> dict[str, Any]:
    """What the person typed, as form values (strings; blanks as None)."""
    form = request.form
    names = ["title", "description", "company_id", "contact_id", "owner_id", "stage_id", "source_id", "priority_id",
             "category_id", "procedure_id"]
    if kind.has_amount:
        names += ["amount", "currency", "probability", "expected_close_date"]
    values: dict[str, Any] = {}
    for name in names:
        raw = form.get(name)
        values[name] = None if raw is None else (raw.strip() or None)
    if values.get("description") is None and "description" in form:
        values["description"] = ""
    values["group_ids"] = [g for g in form.getlist("group_ids") if g]
    return values


def _changes(kind: Kind, typed: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PATCH body (only what differs from what is saved) and the form's own errors."""
    saved = record_values(current)
    body: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in typed.items():
        if name == "group_ids":
            continue
        if name in ("title",) and not value:
            errors[name] = _("Enter a title.")
            continue
        if name in ("owner_id", "stage_id") and not value:
            continue  # required on the record: a blank keeps what is there
        if name == "probability" and value is not None:
            try:
                value = int(value)
            except ValueError:
                errors[name] = _("Enter a whole number from 0 to 100.")
                continue
        if name == "amount" and value is not None:
            try:
                Decimal(value)
            except InvalidOperation:
                errors[name] = _("Enter an amount such as 2500.00.")
                continue
            if saved.get("amount") is not None and Decimal(value) == Decimal(str(saved["amount"])):
                continue
        if name == "currency" and value:
            value = value.upper()
        before = saved.get(name)
        if name == "description":
            before = before or ""
            value = value or ""
        if value != before:
            body[name] = value
    return body, errors


def _typed_summary(kind: Kind, typed: dict[str, Any], latest: dict[str, Any]) -> list[dict[str, Any]]:
    """The fields the person typed differently from what is saved now (the conflict shows them)."""
    labels = {"title": _("Title"), "description": _("Description"), "company_id": _("Company"),
              "contact_id": _("Contact"), "owner_id": _("Owner"), "stage_id": _("Stage"), "amount": _("Amount"),
              "currency": _("Currency"), "probability": _("Probability"),
              "expected_close_date": _("Expected close date"),
              **{field: str(label) for field, _table, label in TABLE_FIELDS}}
    names = {s["id"]: s.get("name") for s in catalogue.stages(kind.kind)}
    for _field, table, _label in TABLE_FIELDS:
        names.update({e["id"]: e.get("name") for e in catalogue.table(kind.kind, table)})
    body, _errors = _changes(kind, typed, latest)
    return [{"label": labels.get(name, name), "value": names.get(str(value), value) if value is not None else ""}
            for name, value in body.items()]


@bp.post(f"/{RECORDS}/<record_id>")
@login_required
def save(records: str, record_id: str) -> Any:
    """**Save**: the changed fields with ``If-Match`` on the version the page showed."""
    kind = permitted_kind(records, "edit", 403)
    current = _load(kind, record_id)
    typed = typed_values(kind)
    version = request.form.get("version", "")
    api, who = gateway(), caller()

    def conflict(latest: dict[str, Any], message: str) -> Any:
        summary = _typed_summary(kind, typed, latest)
        return render_page(kind, latest, values=typed, status=412, conflict={"message": message, "typed": summary,
                                                                              "version": version})

    if not version.isdigit():
        return render_page(kind, current, values=typed, status=400,
                           error=_("The form was incomplete. Reload the page and try again."))
    if int(version) != current.get("version"):
        return conflict(current, "")
    body, errors = _changes(kind, typed, current)
    if errors:
        return render_page(kind, current, values=typed, status=422, errors=errors,
                           error=_("Some fields need attention."))
    updated = current
    if body:
        try:
            updated = api.json(who, "PATCH", f"/v1/{records}/{record_id}", json=body,
                               headers={"If-Match": f'"{version}"'})
        except ApiError as exc:
            if exc.conflict:
                return conflict(_load(kind, record_id), exc.message)
            return render_page(kind, current, values=typed, status=exc.status if 400 <= exc.status < 600 else 502,
                               errors=exc.field_errors, error=exc.message)
    had = set(current.get("group_ids") or [])
    wanted = set(typed["group_ids"])
    try:
        for group_id in sorted(wanted - had):
            api.json(who, "POST", f"/v1/{records}/{record_id}/groups", json={"group_id": group_id})
        for group_id in sorted(had - wanted):
            api.json(who, "DELETE", f"/v1/{records}/{record_id}/groups/{group_id}")
    except ApiError as exc:
        flash(_("Saved, but the groups were not all changed: %(reason)s", reason=exc.message), "error")
        return redirect(url_for("records.show", records=records, record_id=record_id))
    flash(_("%(title)s saved.", title=updated.get("title", "")), "ok")
    return redirect(url_for("records.show", records=records, record_id=record_id))


# -- printing and converting ----------------------------------------------------------------------

@bp.post(f"/{RECORDS}/<record_id>/print")
@login_required
def print_record(records: str, record_id: str) -> Any:
    """**Print**: the API renders the template; the HTML is served sandboxed (no script runs)."""
    permitted_kind(records, "view")
    template_id = request.form.get("template_id", "")
    if not template_id:
        flash(_("Choose a print template."), "error")
        return redirect(url_for("records.show", records=records, record_id=record_id))
    try:
        return printed(records, record_id, template_id)
    except ApiError as exc:
        return render_template("error.html", status=exc.status, message=exc.message, conflict=False), exc.status


def printed(records: str, record_id: str, template_id: str | None = None, *,
            template: Mapping[str, Any] | None = None, framed: bool = False) -> Response:
    """The record rendered with a print template by the API, served on its own page under a
    sandboxing CSP: the template's HTML can never run script in the console's origin.

    ``template``: an unsaved template instead of ``template_id`` (Maintenance > Templates'
    preview); ``framed``: the console's own pages may show it in an iframe (the preview's)."""
    body = {"template": dict(template)} if template is not None else {"template_id": template_id}
    resp = gateway().request(caller(), "POST", f"/v1/{records}/{record_id}/print",
                             json=body, headers={"Accept": "text/html"})
    out = Response(resp.content, status=200, mimetype="text/html")
    return print_headers(out, framed=framed)


def print_headers(out: Response, *, framed: bool = False) -> Response:
    """The print's sandboxing headers on ``out`` (``framed``: only the console may frame it)."""
    out.headers["Content-Security-Policy"] = (PRINT_CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'")
                                              if framed else PRINT_CSP)
    out.headers["X-Content-Type-Options"] = "nosniff"
    if framed:
        out.headers["X-Frame-Options"] = "SAMEORIGIN"
    return out


@bp.post("/<any(leads):records>/<record_id>/convert")
@login_required
def convert(records: str, record_id: str) -> Any:
    """**+ Opportunity**: convert the lead, then open the new opportunity (warnings flashed)."""
    permitted_kind(records, "edit", 403)
    back = url_for("records.show", records=records, record_id=record_id)
    version = request.form.get("version", "")
    try:
        answer = gateway().json(caller(), "POST", f"/v1/leads/{record_id}/convert",
                                headers={"If-Match": f'"{version}"'} if version.isdigit() else {})
    except ApiError as exc:
        if exc.conflict:
            flash(_("Someone else changed this record since you opened it. The page now shows the latest; "
                    "convert again if it still applies."), "error")
        else:
            flash(_("The lead was not converted: %(reason)s", reason=exc.message), "error")
        return redirect(back)
    opportunity = (answer or {}).get("opportunity") or {}
    flash(_("Converted to the opportunity %(title)s.", title=opportunity.get("title") or ""), "ok")
    for warning in (answer or {}).get("warnings") or []:
        text = warning.get("message") if isinstance(warning, dict) else str(warning)
        if text:
            flash(text, "warning")
    if not opportunity.get("id"):
        return redirect(back)
    return redirect(url_for("records.show", records="opportunities", record_id=opportunity["id"]))
