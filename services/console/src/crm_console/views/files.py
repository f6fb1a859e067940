"""Screen 4, contacts, companies and job orders: lists and record pages.

The three files are one implementation: a ``FileKind`` declares what differs (the words, the
fields of the form, the list's columns, the tabs of records a file is on, whether it shows
**Related to**), and the same views list, create, show, save and delete each of them.

- Lists: a table with simple search (the API's ``q``) and paging (``next_page_token``), a
  **New** button, rows linked to the record page by the file's name.
- Record pages: the file's fields as a form (**Save**, **Delete**, both with ``If-Match`` on
  the version the page showed: a 412 says someone else changed it, with **Reload**); a contact
  has **Leads** and **Opportunities** tabs (each row with **Remove from lead** /
  **Remove from opportunity**), a company a **Leads** tab, a job order **Related to** (the API's
  ``related_to``).
- The API's shared-file rules (409 ``hidden_record``, ``in_use``) are shown in words, with the
  API's own reason.
- ``files:edit`` shows the writing controls, ``{records}:edit`` the remove buttons; a person
  without them reads the fields as text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import kind_of
from crm_console.session import caller, can, gateway, login_required

bp = Blueprint("files", __name__)

COLLECTIONS = 'any(contacts, companies, "job-orders")'
PAGE_SIZE = 50
COMPANY_CHOICES = 500  # companies offered in a contact's or job order's Company selector


@dataclass(frozen=True)
class Field:
    """One field of a file's form: its API name, label, and input type."""

    name: str
    label: Any
    input: str = "text"  # text | email | url | tel | textarea | company
    required: bool = False
    max_length: int | None = None


@dataclass(frozen=True)
class Tab:
    """Records a file is on, as a tab of its record page (``GET /v1/{collection}/{id}/{records}``)."""

    records: str  # leads | opportunities (also the tab's id)
    label: Any
    remove: Any = None  # the button that takes a contact off the record, when the file is a contact


@dataclass(frozen=True)
class FileKind:
    collection: str  # the URL segment, the console's and the API's: contacts, companies, job-orders
    title: Any  # "Contacts"
    singular: Any  # "Contact"
    fields: tuple[Field, ...]
    name_of: Callable[[Mapping[str, Any]], str]
    columns: tuple[str, ...] = ()  # fields shown in the list after the name
    name_label: Any = _l("Name")
    tabs: tuple[Tab, ...] = ()
    related: bool = False  # job orders: Related to

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def _contact_name(item: Mapping[str, Any]) -> str:
    return " ".join(p for p in (item.get("first_name"), item.get("last_name")) if p) or str(item.get("id", ""))


KINDS: dict[str, FileKind] = {
    "companies": FileKind(
        "companies", _l("Companies"), _l("Company"),
        fields=(Field("name", _l("Name"), required=True, max_length=300),
                Field("website", _l("Website"), "url", max_length=500),
                Field("phone", _l("Phone"), "tel", max_length=50),
                Field("email", _l("Email"), "email", max_length=320),
                Field("address", _l("Address"), max_length=500),
                Field("city", _l("City"), max_length=200),
                Field("country", _l("Country"), max_length=100)),
        name_of=lambda item: str(item.get("name") or item.get("id", "")),
        columns=("city", "country", "phone", "email"),
        tabs=(Tab("leads", _l("Leads")),),
    ),
    "contacts": FileKind(
        "contacts", _l("Contacts"), _l("Contact"),
        fields=(Field("first_name", _l("First name"), required=True, max_length=200),
                Field("last_name", _l("Last name"), required=True, max_length=200),
                Field("email", _l("Email"), "email", max_length=320),
                Field("phone", _l("Phone"), "tel", max_length=50),
                Field("company_id", _l("Company"), "company")),
        name_of=_contact_name,
        columns=("email", "phone"),
        tabs=(Tab("leads", _l("Leads"), _l("Remove from lead")),
              Tab("opportunities", _l("Opportunities"), _l("Remove from opportunity"))),
    ),
    "job-orders": FileKind(
        "job-orders", _l("Job orders"), _l("Job order"),
        fields=(Field("title", _l("Title"), required=True, max_length=500),
                Field("company_id", _l("Company"), "company"),
                Field("status", _l("Status"), max_length=50),
                Field("description", _l("Description"), "textarea", max_length=20_000)),
        name_of=lambda item: str(item.get("title") or item.get("id", "")),
        columns=("status",),
        name_label=_l("Title"),
        related=True,
    ),
}


def file_kind(collection: str) -> FileKind:
    found = KINDS.get(collection)
    if found is None:
        abort(404)
    return found


def _require(permission: str) -> None:
    if not can(permission):
        abort(404)


# -- the form ------------------------------------------------------------------------------------

def form_values(kind: FileKind) -> dict[str, Any]:
    """The submitted fields, trimmed; an empty optional field is null (the API's own reading)."""
    values: dict[str, Any] = {}
    for f in kind.fields:
        raw = request.form.get(f.name, "")
        raw = raw.strip() if f.input != "textarea" else raw.replace("\r\n", "\n")
        values[f.name] = raw if raw.strip() or f.required else None
    return values


def local_errors(kind: FileKind, values: Mapping[str, Any]) -> dict[str, str]:
    """What the console can tell before asking the API (the API checks everything again)."""
    errors: dict[str, str] = {}
    for f in kind.fields:
        value = values.get(f.name)
        if f.required and not (value or "").strip():
            errors[f.name] = _("%(field)s is required.", field=f.label)
        elif f.max_length and value and len(value) > f.max_length:
            errors[f.name] = _("%(field)s is at most %(n)d characters.", field=f.label, n=f.max_length)
    return errors


def company_choices(kind: FileKind, current: str | None) -> list[dict[str, Any]]:
    """The companies a Company selector offers (by name), the current one included."""
    if not any(f.input == "company" for f in kind.fields) or not can("files:edit"):
        return []
    items = gateway().all_pages(caller(), "/v1/companies", most=COMPANY_CHOICES)
    if current and current not in {c["id"] for c in items}:
        try:
            items.append(gateway().get(caller(), f"/v1/companies/{current}"))
        except ApiError:
            pass
    return sorted(items, key=lambda c: str(c.get("name", "")).casefold())


def shared_file_message(kind: FileKind, exc: ApiError) -> str:
    """The API's refusal in words, with its own reason after ours for the shared-file rules."""
    reason = exc.problem.get("reason")
    what = str(kind.singular).lower()
    if exc.status == 409 and reason == "in_use":
        return _("This %(what)s is still used by a lead or opportunity, so it cannot be deleted.", what=what) \
            + " " + exc.message
    if exc.status == 409 and reason == "hidden_record":
        return _("A lead or opportunity of another office shows this %(what)s, so this change was refused: only "
                 "someone who may see that record can make it.", what=what)
    return exc.message


# -- what a record page shows ----------------------------------------------------------------------

def _tab_rows(kind: FileKind, tab: Tab, file_id: str) -> list[dict[str, Any]]:
    """The records of a tab, with their stage and (for a contact) role names."""
    records_kind = kind_of(tab.records)
    items = gateway().all_pages(caller(), f"/v1/{kind.collection}/{file_id}/{tab.records}", most=500)
    stages = catalogue.by_id(catalogue.stages(records_kind.kind))
    roles = catalogue.by_id(catalogue.table(records_kind.kind, "roles")) if tab.remove else {}
    rows = []
    for item in items:
        stage = stages.get(item.get("stage_id") or "")
        role = roles.get(item.get("role_id") or "")
        main = item.get("contact_id") == file_id or (role or {}).get("code") == "MAIN"
        rows.append({"item": item, "stage": stage, "role": role, "main": main})
    return rows


def _related(job_order: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lead and the opportunity a job order is linked to (``related_to``), with their titles
    when the person may see them."""
    related = job_order.get("related_to") or {}
    out = []
    for records in ("leads", "opportunities"):
        record_kind = kind_of(records)
        record_id = related.get(f"{record_kind.kind}_id")
        if not record_id:
            continue
        record = None
        if can(record_kind.permission("view")):
            try:
                record = gateway().get(caller(), f"/v1/{records}/{record_id}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
        out.append({"kind": record_kind, "records": records, "id": record_id, "record": record})
    return out


def render_file(kind: FileKind, item: Mapping[str, Any], *, values: Mapping[str, Any] | None = None,
                errors: Mapping[str, str] | None = None, message: str | None = None, conflict: bool = False,
                tab_message: str | None = None, status: int = 200) -> Any:
    """A file's record page: the form (with ``values`` and ``errors`` after a refused save), its
    tabs or Related to, and a message."""
    tabs = [t for t in kind.tabs if can(kind_of(t.records).permission("view"))]
    tab = next((t for t in tabs if t.records == request.args.get("tab")), tabs[0] if tabs else None)
    shown = dict(values if values is not None else item)
    context = {
        "fk": kind, "item": item, "values": shown, "errors": errors or {}, "message": message,
        "conflict": conflict, "tabs": tabs, "tab": tab, "tab_message": tab_message,
        "rows": _tab_rows(kind, tab, item["id"]) if tab else [],
        "related": _related(item) if kind.related else [],
        "companies": company_choices(kind, shown.get("company_id")),
        "company": _company_of(kind, shown.get("company_id")),
    }
    return render_template("files_show.html", **context), status


def _company_of(kind: FileKind, company_id: str | None) -> Mapping[str, Any] | None:
    """The company the page links to (a contact's or job order's)."""
    if not company_id or not any(f.input == "company" for f in kind.fields):
        return None
    try:
        return gateway().get(caller(), f"/v1/companies/{company_id}")
    except ApiError:
        return {"id": company_id, "name": company_id}


def _load(kind: FileKind, file_id: str) -> dict[str, Any]:
    return gateway().get(caller(), f"/v1/{kind.collection}/{file_id}")


# -- the views -----------------------------------------------------------------------------------

@bp.get(f"/<{COLLECTIONS}:collection>")
@login_required
def index(collection: str) -> Any:
    kind = file_kind(collection)
    _require("files:view")
    q = request.args.get("q", "").strip()
    page_token = request.args.get("page_token") or None
    try:
        page = gateway().get(caller(), f"/v1/{collection}", q=q, page_size=PAGE_SIZE, page_token=page_token)
        error = None
    except ApiError as exc:
        if exc.status not in (400, 422):
            raise
        page, error = {"items": [], "next_page_token": None}, exc.message
    return render_template("files_list.html", fk=kind, items=page.get("items", []), q=q, error=error,
                           next_page_token=page.get("next_page_token"), paged=bool(page_token)), \
        (422 if error else 200)


@bp.route(f"/<{COLLECTIONS}:collection>/new", methods=["GET", "POST"])
@login_required
def new(collection: str) -> Any:
    kind = file_kind(collection)
    _require("files:edit")
    values: dict[str, Any] = {"company_id": request.args.get("company_id") or None}
    errors: dict[str, str] = {}
    message = None
    status = 200
    if request.method == "POST":
        values = form_values(kind)
        errors = local_errors(kind, values)
        if not errors:
            try:
                created = gateway().json(caller(), "POST", f"/v1/{collection}", json=values)
            except ApiError as exc:
                errors, message, status = exc.field_errors, shared_file_message(kind, exc), exc.status
            else:
                flash(_("%(what)s %(name)s created.", what=kind.singular, name=kind.name_of(created)), "ok")
                return redirect(url_for("files.show", collection=collection, file_id=created["id"]))
        else:
            message, status = _("Please correct the marked fields."), 422
    return render_template("files_new.html", fk=kind, values=values, errors=errors, message=message,
                           companies=company_choices(kind, values.get("company_id"))), status


@bp.get(f"/<{COLLECTIONS}:collection>/<file_id>")
@login_required
def show(collection: str, file_id: str) -> Any:
    kind = file_kind(collection)
    _require("files:view")
    return render_file(kind, _load(kind, file_id))


@bp.post(f"/<{COLLECTIONS}:collection>/<file_id>")
@login_required
def save(collection: str, file_id: str) -> Any:
    """**Save**: PATCH the form's fields with ``If-Match`` on the version the page showed."""
    kind = file_kind(collection)
    _require("files:edit")
    item = _load(kind, file_id)
    values = form_values(kind)
    errors = local_errors(kind, values)
    if errors:
        return render_file(kind, item, values=values, errors=errors,
                           message=_("Please correct the marked fields."), status=422)
    version = request.form.get("version", "")
    try:
        saved = gateway().json(caller(), "PATCH", f"/v1/{collection}/{file_id}", json=values,
                               headers=_if_match(version))
    except ApiError as exc:
        if exc.conflict:
            return render_file(kind, item, values=values, conflict=True, status=412,
                               message=_("Someone else changed this %(what)s since you opened it. Reload it to "
                                         "see their changes (yours are not saved).", what=str(kind.singular).lower()))
        return render_file(kind, item, values=values, errors=exc.field_errors, message=shared_file_message(kind, exc),
                           status=exc.status)
    flash(_("%(what)s %(name)s saved.", what=kind.singular, name=kind.name_of(saved)), "ok")
    return redirect(url_for("files.show", collection=collection, file_id=file_id))


@bp.post(f"/<{COLLECTIONS}:collection>/<file_id>/delete")
@login_required
def delete(collection: str, file_id: str) -> Any:
    kind = file_kind(collection)
    _require("files:edit")
    version = request.form.get("version", "")
    try:
        gateway().json(caller(), "DELETE", f"/v1/{collection}/{file_id}", headers=_if_match(version))
    except ApiError as exc:
        item = _load(kind, file_id)
        if exc.conflict:
            return render_file(kind, item, conflict=True, status=412,
                               message=_("Someone else changed this %(what)s since you opened it; it was not "
                                         "deleted. Reload it and try again.", what=str(kind.singular).lower()))
        return render_file(kind, item, message=shared_file_message(kind, exc), status=exc.status)
    flash(_("%(what)s deleted.", what=kind.singular), "ok")
    return redirect(url_for("files.index", collection=collection))


@bp.post("/contacts/<file_id>/<any(leads, opportunities):records>/<record_id>/remove")
@login_required
def remove_contact(file_id: str, records: str, record_id: str) -> Any:
    """**Remove from lead** / **Remove from opportunity**: the contact leaves the record (the API
    refuses the main contact, and says why)."""
    kind, record_kind = KINDS["contacts"], kind_of(records)
    _require(record_kind.permission("edit"))
    try:
        gateway().json(caller(), "DELETE", f"/v1/{records}/{record_id}/contacts/{file_id}")
    except ApiError as exc:
        return render_file(kind, _load(kind, file_id), tab_message=exc.message, status=exc.status)
    flash(_("Removed from %(what)s.", what=str(record_kind.singular).lower()), "ok")
    return redirect(url_for("files.show", collection="contacts", file_id=file_id, tab=records))


def _if_match(version: str) -> dict[str, str]:
    return {"If-Match": f'"{version}"'} if version.isdigit() else {}


def page_link(**changes: Any) -> str:
    """The list's URL with ``changes`` to its query (search, page)."""
    args = {k: v for k, v in request.args.items() if k not in changes}
    args.update({k: v for k, v in changes.items() if v})
    return url_for(request.endpoint or "files.index", **(request.view_args or {}), **args)


@bp.app_template_global("files_page_link")
def _page_link(**changes: Any) -> str:
    return page_link(**changes)

