"""Screen 1's list view: a table with simple and advanced search, paging, bulk actions, print
and a preview panel.

The list is the API's list of the tab (``q`` for the simple search, ``filter`` for the
advanced one, 50 a page with the API's next page token). A bad filter is the API's 422: its
message goes under the box. The bulk actions are the API's ``POST /v1/{records}/bulk``: the
answer's per-item results are shown by title above the list, which is read again (the
caller's consistency token makes it show the changes). The preview panel shows one record
(htmx loads the fragment; without script the page renders it), with a Print link per print
template visible at the record's stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, render_template, request
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import Kind
from crm_console.session import caller, can, gateway, login_required, permitted_kind
from crm_console.times import api_time

bp = Blueprint("listing", __name__)

PAGE_SIZE = 50
ACTIONS = {  # the API's bulk actions: label, the argument they need
    "set_stage": (_l("Set stage"), "stage_id"),
    "add_to_group": (_l("Add to group"), "group_id"),
    "remove_from_group": (_l("Remove from group"), "group_id"),
    "assign_owner": (_l("Assign owner"), "owner_id"),
    "delete": (_l("Delete"), None),
}


@bp.app_template_filter("when")
def when(value: Any) -> str:
    """An API timestamp (ISO 8601) in the person's locale."""
    moment = api_time(value)
    return format_datetime(moment, "short") if moment is not None else str(value or "")


def actions_for(kind: Kind) -> list[tuple[str, Any]]:
    if not can(kind.permission("edit")):
        return []
    return [(name, label) for name, (label, _arg) in ACTIONS.items()
            if name != "delete" or can(kind.permission("delete"))]


def list_context(kind: Kind, tab: str, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The list page's data; ``status`` is 422 when the API refused the search."""
    from crm_console.views.overview import tab_query

    values = request.values if values is None else values
    q = (values.get("q") or "").strip()
    text = (values.get("filter") or "").strip()
    token = values.get("page_token") or None
    context: dict[str, Any] = {"q": q, "filter": text, "page_token": token, "items": [], "next_page_token": None,
                               "filter_error": None, "search_error": None, "actions": actions_for(kind)}
    try:
        page = gateway().get(caller(), f"/v1/{kind.records}", page_size=PAGE_SIZE, page_token=token, q=q or None,
                             filter=text or None, order_by="modified_at desc", **tab_query(tab))
    except ApiError as exc:
        if exc.status not in (400, 422):
            raise
        errors = exc.field_errors
        if "filter" in errors:
            context["filter_error"] = errors["filter"]
        else:  # the simple search's own message when the API names it, else the API's reason
            context["search_error"] = errors.get("q") or exc.message
        context["status"] = exc.status
    else:
        context.update(items=page.get("items", []), next_page_token=page.get("next_page_token"))
    if context["actions"]:
        context["bulk_stages"] = catalogue.stages(kind.kind, active_only=True)
        context["bulk_groups"] = [g for g in catalogue.table(kind.kind, "groups") if g.get("active", True)]
    preview_id = values.get("preview")
    if preview_id and request.method == "GET":
        context["preview"] = preview_context(kind, preview_id)
    return context


def preview_context(kind: Kind, record_id: str) -> dict[str, Any]:
    """One record for the preview panel, with its print templates and its company's name."""
    api, who = gateway(), caller()
    record = api.get(who, f"/v1/{kind.records}/{record_id}")
    try:
        templates = api.get(who, f"/v1/{kind.records}/{record_id}/templates", kind="print").get("items", [])
    except ApiError:
        templates = []
    company = None
    if record.get("company_id") and can("files:view"):
        try:
            company = api.get(who, f"/v1/companies/{record['company_id']}")
        except ApiError:
            company = None
    return {"record": record, "templates": templates, "company": company}


@bp.get("/<any(leads, opportunities):records>/<record_id>/preview")
@login_required
def preview(records: str, record_id: str) -> Any:
    """The preview panel's fragment (the list's Preview links load it with htmx)."""
    kind = permitted_kind(records, "view")
    return render_template("overview_preview.html", kind=kind, records=records,
                           preview=preview_context(kind, record_id))


@bp.get("/<any(leads, opportunities):records>/<record_id>/print/<template_id>")
@login_required
def print_record(records: str, record_id: str, template_id: str) -> Any:
    """The record printed with a template: the API's rendered HTML, shown on its own, sandboxed."""
    from crm_console.views.records import printed

    permitted_kind(records, "view")
    return printed(records, record_id, template_id)


@bp.post("/<any(leads, opportunities):records>/bulk")
@login_required
def bulk(records: str) -> Any:
    """A bulk action over the selected rows; the list again with each item's result by title."""
    from crm_console.views.overview import tab_overview

    kind = permitted_kind(records, "edit")
    form = request.form
    action = form.get("action", "")
    ids = [i for i in form.getlist("ids") if i]
    titles = {i: form.get(f"title:{i}") or i for i in ids}
    bulk_error = None
    results: list[dict[str, Any]] = []
    status = 200
    if action not in dict(actions_for(kind)):
        bulk_error, status = _("Choose an action."), 422
    elif not ids:
        bulk_error, status = _("Select at least one row."), 422
    else:
        body: dict[str, Any] = {"ids": ids, "action": action}
        argument = ACTIONS[action][1]
        if argument:
            body[argument] = (form.get(argument) or "").strip()
        if argument and not body[argument]:
            names = {"stage_id": _("a stage"), "group_id": _("a group"), "owner_id": _("an owner")}
            bulk_error, status = _("Choose %(what)s for this action.", what=names[argument]), 422
        else:
            try:
                answer = gateway().json(caller(), "POST", f"/v1/{records}/bulk", json=body)
            except ApiError as exc:
                errors = exc.field_errors
                bulk_error = "; ".join(errors.values()) if errors else exc.message
                status = exc.status
            else:
                results = [{"id": r["id"], "title": titles.get(r["id"], r["id"]), "ok": r.get("status") == "ok",
                            "error": r.get("error")} for r in answer.get("results", [])]
    # The tab counts after the action (htmx swaps them in out of band).
    tab, _overview, tabs = tab_overview(kind, form.get("tab") or None)
    context = {"kind": kind, "records": records, "tab": tab, "view": "list", "tabs": tabs,
               "oob_tabs": tabs if request.headers.get("HX-Request") else None}
    context.update(list_context(kind, tab, form))
    context.update(results=results, bulk_error=bulk_error, bulk_action=action,
                   bulk_values={k: form.get(k, "") for k in ("stage_id", "group_id", "owner_id")},
                   selected=set(ids) if bulk_error else set())
    template = "overview_list_region.html" if request.headers.get("HX-Request") else "overview_list.html"
    return render_template(template, **context), status if status >= 400 else context.get("status", 200)
