"""Screen 6, Maintenance > **Templates** (``catalogue:admin``): email, document and print templates.

- The list (kind, name, **Visible at**) with **New**; an editor per template: kind, name,
  subject (email), body, **Visible at** (lead stages, opportunity stages, or none) with its
  stages (checkboxes of the stages of that kind), **Save** (``If-Match`` on the version),
  **Delete**.
- A live **Preview** for a record picked by search (leads, or opportunities for a template
  visible at opportunity stages), rendered by the API's sandboxed print with the editor's
  unsaved text (``POST /v1/{records}/{id}/print`` with ``template``): htmx asks the console to
  check it (``preview``: the API's 422 is shown with its line next to the body and in the
  preview area); when it renders, template_editor.js posts the form into the preview's iframe
  (``preview_frame``), which the console serves under the print's sandboxing CSP
  (``records.printed``), framed by the console only.

Everyone else gets 403 on every route (the API would refuse the writes, and the preview, too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.wrappers import Response

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.session import caller, gateway, permission_guard
from crm_console.views.records import print_headers, printed

bp = Blueprint("templates_admin", __name__, url_prefix="/maintenance/templates")

PERMISSION = "catalogue:admin"
API = "/v1/templates"
TEMPLATE_KINDS = {"email": _l("Email"), "document": _l("Document"), "print": _l("Print")}
VISIBLE_AT = {"": _l("No stage"), "lead_stage": _l("Lead stages"), "opportunity_stage": _l("Opportunity stages")}
STAGE_KIND = {"lead_stage": "lead", "opportunity_stage": "opportunity"}
RECORDS_OF = {"lead_stage": "leads", "opportunity_stage": "opportunities"}  # whose records preview
BODY_LENGTH = 500_000  # the API's limit
_LINE_PREFIX = re.compile(r"^Line \d+: ")


bp.before_request(permission_guard(PERMISSION))


@bp.app_template_filter("visible_at_label")
def visible_at_label(value: str | None) -> str:
    return str(VISIBLE_AT.get(value or "", value or ""))


@bp.app_template_filter("template_kind_label")
def template_kind_label(value: str | None) -> str:
    return str(TEMPLATE_KINDS.get(value or "", value or ""))


@bp.app_template_filter("without_line")
def without_line(message: str | None) -> str:
    """The API's message without its own "Line 3: " (the page says the line in its language)."""
    return _LINE_PREFIX.sub("", str(message or ""), count=1)


def _if_match(version: Any) -> dict[str, str]:
    return {"If-Match": f'"{version}"'} if str(version).isdigit() else {}


# -- the list --------------------------------------------------------------------------------------

@bp.get("")
@bp.get("/")
def index() -> Any:
    templates = gateway().all_pages(caller(), API)
    templates.sort(key=lambda t: (str(t.get("kind")), str(t.get("name") or "").casefold()))
    return render_template("templates_admin_list.html", templates=templates)


# -- the editor ------------------------------------------------------------------------------------

def _values(form: Mapping[str, Any]) -> dict[str, Any]:
    """What the form holds (as the editor shows it again)."""
    visible_at = form.get("visible_at", "")
    return {
        "kind": form.get("kind", ""),
        "name": form.get("name", ""),
        "subject": form.get("subject", ""),
        "body": form.get("body", "").replace("\r\n", "\n"),
        "visible_at": visible_at if visible_at in STAGE_KIND else "",
        "stage_ids": form.getlist("stage_ids") if hasattr(form, "getlist") else list(form.get("stage_ids") or []),
        "version": form.get("version", ""),
    }


def _form_of(template: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": template.get("kind") or "", "name": template.get("name") or "",
            "subject": template.get("subject") or "", "body": template.get("body") or "",
            "visible_at": template.get("visible_at") or "", "stage_ids": list(template.get("stage_ids") or []),
            "version": template.get("version") or ""}


def _check(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body of the template and the errors the console sees before asking."""
    errors: dict[str, str] = {}
    if values["kind"] not in TEMPLATE_KINDS:
        errors["kind"] = _("Choose a kind.")
    if not values["name"].strip():
        errors["name"] = _("A name is required.")
    if len(values["body"]) > BODY_LENGTH:
        errors["body"] = _("The body is at most %(count)d characters long.", count=BODY_LENGTH)
    visible_at = values["visible_at"] or None
    body: dict[str, Any] = {
        "kind": values["kind"], "name": values["name"].strip(),
        "subject": (values["subject"].strip() or None) if values["kind"] == "email" else None,
        "body": values["body"], "visible_at": visible_at,
        # Only the stages of the kind Visible at names (the other kind's boxes are ignored).
        "stage_ids": _stages_of(visible_at, values["stage_ids"]),
    }
    return body, errors


def _stages_of(visible_at: str | None, chosen: list[str]) -> list[str]:
    if not visible_at:
        return []
    known = {s["id"] for s in catalogue.stages(STAGE_KIND[visible_at])}
    return [s for s in chosen if s in known]


def body_error(exc: ApiError) -> tuple[str | None, int | None]:
    """The API's error about the template's body (``body`` on save, ``template.body`` on print),
    and its line when it has one."""
    for item in exc.problem.get("errors") or []:
        if isinstance(item, Mapping) and str(item.get("field", "")).split(".")[-1] in ("body", "template_id"):
            line = item.get("line")
            return str(item.get("message") or exc.message), line if isinstance(line, int) else None
    return None, None


def _api_errors(exc: ApiError) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, message in exc.field_errors.items():
        out.setdefault(name.split(".")[-1] or "form", message)
    return out


def _render_editor(values: Mapping[str, Any], *, template: Mapping[str, Any] | None = None,
                   errors: Mapping[str, str] | None = None, message: str | None = None,
                   conflict: bool = False, line: int | None = None, status: int = 200) -> Any:
    stages = {kind: catalogue.stages(kind) for kind in ("lead", "opportunity")}
    records = RECORDS_OF.get(values.get("visible_at") or "", "leads")
    return render_template(
        "templates_admin_edit.html", template=template, values=values, errors=errors or {}, message=message,
        conflict=conflict, line=line, stages=stages, kinds=TEMPLATE_KINDS, visible_choices=VISIBLE_AT,
        body_length=BODY_LENGTH, preview_records=records, matches=_matches(records, ""),
    ), status


def _refused(exc: ApiError, values: Mapping[str, Any], template: Mapping[str, Any] | None) -> Any:
    message, line = body_error(exc)
    errors = _api_errors(exc)
    if message:
        errors["body"] = message
    if exc.conflict:
        text = _("Someone else changed this template since you opened it. Reload it to see their version; "
                 "your text is still in the form.")
    else:
        text = _("The template was not saved: %(reason)s", reason=exc.message)
    return _render_editor(values, template=template, errors=errors, message=text, conflict=exc.conflict,
                          line=line, status=exc.status if 400 <= exc.status < 500 else 422)


@bp.route("/new", methods=["GET", "POST"])
def new() -> Any:
    if request.method == "GET":
        return _render_editor({"kind": "print", "name": "", "subject": "", "body": "", "visible_at": "",
                               "stage_ids": [], "version": ""})
    values = _values(request.form)
    body, errors = _check(values)
    if errors:
        return _render_editor(values, errors=errors, message=_("The template was not saved: check the fields."),
                              status=422)
    try:
        saved = gateway().json(caller(), "POST", API, json=body)
    except ApiError as exc:
        return _refused(exc, values, None)
    flash(_("Template %(name)s created.", name=saved.get("name") or body["name"]), "ok")
    return redirect(url_for("templates_admin.edit", template_id=saved["id"]))


def _load(template_id: str) -> dict[str, Any]:
    try:
        return gateway().get(caller(), f"{API}/{template_id}")
    except ApiError as exc:
        if exc.status == 404:
            abort(404)
        raise


@bp.route("/<template_id>", methods=["GET", "POST"])
def edit(template_id: str) -> Any:
    template = _load(template_id)
    if request.method == "GET":
        return _render_editor(_form_of(template), template=template)
    values = _values(request.form)
    body, errors = _check(values)
    if errors:
        return _render_editor(values, template=template, errors=errors,
                              message=_("The template was not saved: check the fields."), status=422)
    try:
        saved = gateway().json(caller(), "PATCH", f"{API}/{template_id}", json=body,
                               headers=_if_match(values["version"]))
    except ApiError as exc:
        return _refused(exc, values, template)
    flash(_("Template %(name)s saved.", name=saved.get("name") or body["name"]), "ok")
    return redirect(url_for("templates_admin.edit", template_id=template_id))


@bp.post("/<template_id>/delete")
def delete(template_id: str) -> Any:
    template = _load(template_id)
    try:
        gateway().json(caller(), "DELETE", f"{API}/{template_id}", headers=_if_match(request.form.get("version")))
    except ApiError as exc:
        flash(_("The template was not deleted: %(reason)s", reason=exc.message), "error")
        return redirect(url_for("templates_admin.edit", template_id=template_id))
    flash(_("Template %(name)s deleted.", name=template.get("name") or ""), "ok")
    return redirect(url_for("templates_admin.index"))


# -- the preview -----------------------------------------------------------------------------------

def _matches(records: str, q: str) -> list[dict[str, Any]]:
    """Records to preview with: the first page of the kind's list, searched by ``q``."""
    params: dict[str, Any] = {"page_size": 20}
    if q:
        params["q"] = q[:200]
    try:
        found = gateway().get(caller(), f"/v1/{records}", **params)
    except ApiError:
        return []
    return list((found or {}).get("items") or [])


@bp.get("/records")
def records() -> Any:
    """The **Record** choices for the preview (htmx): records of the kind Visible at names."""
    visible_at = request.args.get("visible_at", "")
    kind_records = RECORDS_OF.get(visible_at, "leads")
    return render_template("templates_admin_records.html", preview_records=kind_records,
                           matches=_matches(kind_records, request.args.get("preview_q", "").strip()),
                           chosen=request.args.get("preview_record", ""))


def _preview_request(form: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    values = _values(form)
    records = RECORDS_OF.get(values["visible_at"], "leads")
    template: dict[str, Any] = {"kind": values["kind"] if values["kind"] in TEMPLATE_KINDS else "print",
                                "body": values["body"]}
    if template["kind"] == "email" and values["subject"].strip():
        template["subject"] = values["subject"].strip()[:500]
    return records, str(form.get("preview_record", "")).strip(), template


@bp.post("/preview")
def preview() -> Any:
    """Whether the editor's text renders for the chosen record (htmx): the preview area with the
    iframe that shows it, or why it cannot render (and the line next to the body)."""
    records, record_id, template = _preview_request(request.form)
    if not record_id:
        return render_template("templates_admin_preview.html", reason=_("Choose a record to preview with."),
                               line=None, records=records), 422
    if not template["body"].strip():
        return render_template("templates_admin_preview.html", reason=None, empty=True, line=None,
                               records=records)
    try:
        gateway().request(caller(), "POST", f"/v1/{records}/{record_id}/print", json={"template": template},
                          headers={"Accept": "text/html"})
    except ApiError as exc:
        message, line = body_error(exc)
        return render_template("templates_admin_preview.html", reason=message or exc.message, line=line,
                               records=records), 422 if exc.status < 500 else exc.status
    return render_template("templates_admin_preview.html", reason=None, line=None, records=records)


@bp.post("/preview/frame")
def preview_frame() -> Any:
    """The editor's text rendered for the chosen record, on its own sandboxed page (the iframe's)."""
    records, record_id, template = _preview_request(request.form)
    try:
        return printed(records, record_id, template=template, framed=True)
    except ApiError as exc:
        message, _line = body_error(exc)
        reason = _("The preview cannot be shown: %(reason)s", reason=message or exc.message)
        return print_headers(Response(reason, status=exc.status, mimetype="text/plain"), framed=True)
