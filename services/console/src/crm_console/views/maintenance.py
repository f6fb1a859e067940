"""Screen 6, Maintenance (``catalogue:admin``): the stages and the eight tables of each kind.

- **Lead stages** / **Opportunity stages** (one implementation, parameterised by kind): the
  stages in index order, optionally of one stage group; reordered by drag and drop (SortableJS)
  or with each row's **Move up** / **Move down** buttons, saved as indexes: each stage whose
  index changes is PATCHed with ``If-Match`` on the version the page showed. A stage's form has
  every field: names per configured language, code, index, colour, standard, end stage, default
  end stage, active, stage group, procedure, remarks, and the linked email and document
  templates. The catalogue's rules are said next to the controls they concern, and the API's
  own refusal is shown when it refuses.
- **The eight tables** (attributes, categories, groups, priorities, procedures, roles, sources,
  stage groups) of each kind: one generic list, create, edit and delete; the protected roles
  (``MAIN``, ``SIGN``) say so and offer no Delete.

Everyone else gets 403 on every route (the API would refuse the writes too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm_console.gateway import ApiError
from crm_console.kinds import KINDS, Kind, kind_of
from crm_console.session import caller, gateway, permission_guard

bp = Blueprint("maintenance", __name__, url_prefix="/maintenance")

PERMISSION = "catalogue:admin"
RECORDS = "any(leads, opportunities)"

# The eight tables of each kind: URL/API segment -> (plural title, singular).
TABLES: dict[str, tuple[Any, Any]] = {
    "attributes": (_l("Attributes"), _l("Attribute")),
    "categories": (_l("Categories"), _l("Category")),
    "groups": (_l("Groups"), _l("Group")),
    "priorities": (_l("Priorities"), _l("Priority")),
    "procedures": (_l("Procedures"), _l("Procedure")),
    "roles": (_l("Roles"), _l("Role")),
    "sources": (_l("Sources"), _l("Source")),
    "stage-groups": (_l("Stage groups"), _l("Stage group")),
}
TABLE_SEGMENTS = "any(" + ", ".join(f'"{t}"' for t in TABLES) + ")"
STAGE_TITLES = {"leads": _l("Lead stages"), "opportunities": _l("Opportunity stages")}
TEMPLATE_FIELDS = {"email_template_ids": "email", "document_template_ids": "document"}
LANGUAGE_LABELS = {"en": _l("English"), "nl": _l("Dutch")}
FLAGS = ("active", "is_default", "is_end", "is_default_end")


bp.before_request(permission_guard(PERMISSION))


def languages() -> list[str]:
    """The languages names are given in (the platform's ``CRM_LANGUAGES``)."""
    configured = current_app.extensions["crm_console"].settings.get("CRM_LANGUAGES") or ["en", "nl"]
    if isinstance(configured, str):
        configured = [part.strip() for part in configured.split(",") if part.strip()]
    return list(configured)


@bp.app_template_global("maintenance_tables")
def maintenance_tables() -> dict[str, tuple[Any, Any]]:
    return TABLES


@bp.app_template_global("maintenance_stage_title")
def maintenance_stage_title(records: str) -> str:
    return str(STAGE_TITLES[records])


@bp.app_template_global("language_label")
def language_label(tag: str) -> str:
    return str(LANGUAGE_LABELS.get(tag, tag))


def _if_match(version: Any) -> dict[str, str]:
    return {"If-Match": f'"{version}"'} if str(version).isdigit() else {}


def _all(path: str, **params: Any) -> list[dict[str, Any]]:
    return gateway().all_pages(caller(), path, **params)


def _sorted(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda s: (s.get("index", 0), str(s.get("name", "")).casefold()))


# -- the form's common part: names per language, code, index, active -------------------------------

def _names_values(form: Mapping[str, str]) -> dict[str, str]:
    return {tag: form.get(f"name_{tag}", "").strip() for tag in languages()}


def _entry_values(form: Mapping[str, str], *, protected: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body of a table entry (or a stage's common fields) and the errors the console sees."""
    errors: dict[str, str] = {}
    names = {tag: name for tag, name in _names_values(form).items() if name}
    if not names:
        errors["names"] = _("Give a name in at least one language.")
    body: dict[str, Any] = {"names": names, "active": form.get("active") == "on"}
    if not protected:
        body["code"] = form.get("code", "").strip()
        if not body["code"]:
            errors["code"] = _("A code is required.")
    raw_index = form.get("index", "").strip()
    if raw_index:
        if raw_index.isdigit() and int(raw_index) <= 1_000_000:
            body["index"] = int(raw_index)
        else:
            errors["index"] = _("The index is a whole number from 0 to 1000000.")
    return body, errors


def _api_errors(exc: ApiError) -> dict[str, str]:
    """The API's field errors by form field (``names.en`` -> ``names``)."""
    out: dict[str, str] = {}
    for name, message in exc.field_errors.items():
        out.setdefault(name.split(".")[0].split("/")[-1] or "form", message)
    return out


# -- the index -------------------------------------------------------------------------------------

@bp.get("")
@bp.get("/")
def index() -> Any:
    # Templates (Visible at) is its own screen (views/templates_admin.py), linked when it is there.
    templates_url = url_for("templates_admin.index") if "templates_admin.index" in current_app.view_functions \
        else None
    return render_template("maintenance_index.html", kinds=list(KINDS.values()), tables=TABLES,
                           stage_titles=STAGE_TITLES, templates_url=templates_url)


# -- stages ----------------------------------------------------------------------------------------

def _stage_context(kind: Kind) -> dict[str, Any]:
    """What a stage's form offers: stage groups, procedures and the templates visible at the kind's stages."""
    visible_at = f"{kind.kind}_stage"
    return {
        "groups": _sorted(_all(f"/v1/{kind.kind}-tables/stage-groups")),
        "procedures": _sorted(_all(f"/v1/{kind.kind}-tables/procedures")),
        "templates": {field: sorted(_all("/v1/templates", kind=template_kind, visible_at=visible_at),
                                    key=lambda t: str(t.get("name", "")).casefold())
                      for field, template_kind in TEMPLATE_FIELDS.items()},
        "languages": languages(),
    }


def _stage_values(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    body, errors = _entry_values(form)
    for flag in FLAGS:
        body[flag] = form.get(flag) == "on"
    if body["is_default_end"] and not body["is_end"]:
        errors["is_default_end"] = _("The default end stage must be an end stage: tick End stage as well.")
    if form.get("no_color") == "on":
        body["color"] = None
    else:
        color = form.get("color", "").strip()
        body["color"] = color or None
    body["remarks"] = form.get("remarks", "").replace("\r\n", "\n")
    body["stage_group_id"] = form.get("stage_group_id") or None
    body["procedure_id"] = form.get("procedure_id") or None
    for field in TEMPLATE_FIELDS:
        body[field] = [i for i in request.form.getlist(field) if i]
    return body, errors


def _stages(kind: Kind) -> list[dict[str, Any]]:
    return _sorted(_all(f"/v1/{kind.kind}-stages"))


def _stage_list(kind: Kind, records: str, group: str | None, *, message: str | None = None,
                level: str = "ok", status: int = 200) -> Any:
    stages = _stages(kind)
    groups = _sorted(_all(f"/v1/{kind.kind}-tables/stage-groups"))
    group_names = {g["id"]: g.get("name", "") for g in groups}
    shown = [s for s in stages if not group or s.get("stage_group_id") == group]
    template = "maintenance_stage_rows.html" if request.headers.get("HX-Request") else "maintenance_stages.html"
    return render_template(template, kind=kind, records=records, title=STAGE_TITLES[records], stages=shown,
                           groups=groups, group=group, group_names=group_names, message=message,
                           level=level), status


@bp.get(f"/<{RECORDS}:records>/stages")
def stages(records: str) -> Any:
    kind = kind_of(records)
    return _stage_list(kind, records, request.args.get("group") or None)


def _new_indexes(stages: list[dict[str, Any]], order: list[str]) -> dict[str, int]:
    """The stages of ``order`` (ids, as the page now shows them) get the indexes those stages had,
    in the new order (so stages not shown keep theirs); ties or too few indexes are spread out."""
    by_id = {s["id"]: s for s in stages}
    chosen = [by_id[i] for i in order if i in by_id]
    indexes = sorted(int(s.get("index", 0)) for s in chosen)
    if len(set(indexes)) != len(indexes):  # ties: make room after the lowest
        start = indexes[0] if indexes else 0
        indexes = [start + 10 * n for n in range(len(chosen))]
    return {s["id"]: idx for s, idx in zip(chosen, indexes, strict=True) if int(s.get("index", 0)) != idx}


def _save_order(kind: Kind, order: list[str], versions: Mapping[str, str]) -> tuple[str, str, int]:
    """PATCH the index of each stage whose place changed (If-Match on the version the page showed)."""
    changes = _new_indexes(_stages(kind), order)
    done = 0
    for stage_id, idx in changes.items():
        try:
            gateway().json(caller(), "PATCH", f"/v1/{kind.kind}-stages/{stage_id}", json={"index": idx},
                           headers=_if_match(versions.get(stage_id, "")))
        except ApiError as exc:
            if exc.conflict:
                return (_("Someone else changed a stage since you opened this page; the order shown is the "
                          "saved one now. Try again."), "error", 412)
            return exc.message, "error", exc.status
        done += 1
    if not done:
        return _("The order is unchanged."), "ok", 200
    return _("The new order is saved."), "ok", 200


@bp.post(f"/<{RECORDS}:records>/stages/order")
def order(records: str) -> Any:
    """Drag and drop: the page sends the ids in their new order, each with the version it showed."""
    kind = kind_of(records)
    ids = [i for i in request.form.get("order", "").split(",") if i]
    versions = {i: request.form.get(f"version_{i}", "") for i in ids}
    message, level, status = _save_order(kind, ids, versions)
    return _finish_order(kind, records, message, level, status)


@bp.post(f"/<{RECORDS}:records>/stages/<stage_id>/move")
def move(records: str, stage_id: str) -> Any:
    """**Move up** / **Move down** (the keyboard's way, and without JavaScript): swap with the
    neighbour in the list as shown (all stages, or those of the shown group)."""
    kind = kind_of(records)
    group = request.form.get("group") or None
    stages = [s for s in _stages(kind) if not group or s.get("stage_group_id") == group]
    ids = [s["id"] for s in stages]
    if stage_id not in ids:
        abort(404)
    at = ids.index(stage_id)
    to = at - 1 if request.form.get("direction") == "up" else at + 1
    if 0 <= to < len(ids):
        ids[at], ids[to] = ids[to], ids[at]
        # The moved stage's version as the page showed it guards against a stale page; its
        # neighbour's is the current one (a move button sends only its own row's).
        versions = {s["id"]: str(s.get("version", "")) for s in stages}
        versions[stage_id] = request.form.get("version", "") or versions[stage_id]
        message, level, status = _save_order(kind, ids, versions)
        name = next(s.get("name", "") for s in stages if s["id"] == stage_id)
        if level == "ok":
            message = (_("%(name)s moved up.", name=name) if to < at else _("%(name)s moved down.", name=name))
    else:
        message, level, status = (_("It is first already.") if to < at else _("It is last already.")), "ok", 200
    return _finish_order(kind, records, message, level, status, group=group)


def _finish_order(kind: Kind, records: str, message: str, level: str, status: int,
                  group: str | None = None) -> Any:
    group = group if group is not None else (request.form.get("group") or None)
    if request.headers.get("HX-Request"):
        return _stage_list(kind, records, group, message=message, level=level, status=status)
    flash(message, level)
    return redirect(url_for("maintenance.stages", records=records, group=group))


def _previous_flag_holder(stages: list[dict[str, Any]], flag: str, stage_id: str | None) -> dict[str, Any] | None:
    return next((s for s in stages if s.get(flag) and s["id"] != stage_id), None)


def _render_stage(kind: Kind, records: str, stage: Mapping[str, Any] | None, values: Mapping[str, Any],
                  errors: Mapping[str, str] | None = None, message: str | None = None, conflict: bool = False,
                  status: int = 200) -> Any:
    stages = _stages(kind)
    stage_id = stage["id"] if stage else None
    return render_template(
        "maintenance_stage.html", kind=kind, records=records, title=STAGE_TITLES[records], stage=stage,
        values=values, errors=errors or {}, message=message, conflict=conflict,
        current_default=_previous_flag_holder(stages, "is_default", stage_id),
        current_default_end=_previous_flag_holder(stages, "is_default_end", stage_id),
        **_stage_context(kind)), status


def _form_of(stage: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(stage)
    for tag, name in (stage.get("names") or {}).items():
        values[f"name_{tag}"] = name
    return values


def _submitted(body: Mapping[str, Any]) -> dict[str, Any]:
    """The form's values as submitted, to show them again after a refusal."""
    values = dict(body)
    values.update({f"name_{tag}": name for tag, name in _names_values(request.form).items()})
    values["code"] = request.form.get("code", "").strip()
    values["index"] = request.form.get("index", "").strip()
    return values


def _flag_notes(kind: Kind, before: list[dict[str, Any]], saved: Mapping[str, Any]) -> list[str]:
    """What setting the standard or default end stage cleared (the API clears the previous one)."""
    notes = []
    for flag, what in (("is_default", _("standard stage")), ("is_default_end", _("default end stage"))):
        previous = _previous_flag_holder(before, flag, saved.get("id"))
        if saved.get(flag) and previous:
            notes.append(_("%(name)s is now the %(what)s; %(previous)s no longer is.", name=saved.get("name", ""),
                           what=what, previous=previous.get("name", "")))
    return notes


@bp.route(f"/<{RECORDS}:records>/stages/new", methods=["GET", "POST"])
def new_stage(records: str) -> Any:
    kind = kind_of(records)
    if request.method == "GET":
        values = {"active": True, "color": "#4a90d9", "stage_group_id": request.args.get("group") or None}
        return _render_stage(kind, records, None, values)
    body, errors = _stage_values(request.form)
    if errors:
        return _render_stage(kind, records, None, _submitted(body), errors,
                             _("Please correct the marked fields."), status=422)
    before = _stages(kind)
    try:
        created = gateway().json(caller(), "POST", f"/v1/{kind.kind}-stages", json=body)
    except ApiError as exc:
        return _render_stage(kind, records, None, _submitted(body), _api_errors(exc), exc.message,
                             status=exc.status)
    flash(" ".join([_("Stage %(name)s created.", name=created.get("name", ""))]
                   + _flag_notes(kind, before, created)), "ok")
    return redirect(url_for("maintenance.stages", records=records, group=created.get("stage_group_id")))


def _load_stage(kind: Kind, stage_id: str) -> dict[str, Any]:
    return gateway().get(caller(), f"/v1/{kind.kind}-stages/{stage_id}")


@bp.route(f"/<{RECORDS}:records>/stages/<stage_id>", methods=["GET", "POST"])
def stage(records: str, stage_id: str) -> Any:
    kind = kind_of(records)
    current = _load_stage(kind, stage_id)
    if request.method == "GET":
        return _render_stage(kind, records, current, _form_of(current))
    body, errors = _stage_values(request.form)
    if errors:
        return _render_stage(kind, records, current, _submitted(body), errors,
                             _("Please correct the marked fields."), status=422)
    before = _stages(kind)
    try:
        saved = gateway().json(caller(), "PATCH", f"/v1/{kind.kind}-stages/{stage_id}", json=body,
                               headers=_if_match(request.form.get("version", "")))
    except ApiError as exc:
        if exc.conflict:
            return _render_stage(kind, records, current, _submitted(body), conflict=True, status=412,
                                 message=_("Someone else changed this stage since you opened it. Reload it to "
                                           "see their changes (yours are not saved)."))
        return _render_stage(kind, records, current, _submitted(body), _api_errors(exc), exc.message,
                             status=exc.status)
    flash(" ".join([_("Stage %(name)s saved.", name=saved.get("name", ""))]
                   + _flag_notes(kind, before, saved)), "ok")
    return redirect(url_for("maintenance.stage", records=records, stage_id=stage_id))


@bp.post(f"/<{RECORDS}:records>/stages/<stage_id>/delete")
def delete_stage(records: str, stage_id: str) -> Any:
    kind = kind_of(records)
    try:
        gateway().json(caller(), "DELETE", f"/v1/{kind.kind}-stages/{stage_id}",
                       headers=_if_match(request.form.get("version", "")))
    except ApiError as exc:
        current = _load_stage(kind, stage_id)
        if exc.conflict:
            return _render_stage(kind, records, current, _form_of(current), conflict=True, status=412,
                                 message=_("Someone else changed this stage since you opened it; it was not "
                                           "deleted. Reload it and try again."))
        return _render_stage(kind, records, current, _form_of(current), message=exc.message, status=exc.status)
    flash(_("Stage deleted."), "ok")
    return redirect(url_for("maintenance.stages", records=records))


# -- the eight tables ------------------------------------------------------------------------------

def _table(records: str, table: str) -> tuple[Kind, Any, Any]:
    kind = kind_of(records)
    if table not in TABLES:
        abort(404)
    title, singular = TABLES[table]
    return kind, title, singular


def _render_table(records: str, table: str, *, values: Mapping[str, Any] | None = None,
                  errors: Mapping[str, str] | None = None, message: str | None = None, status: int = 200) -> Any:
    kind, title, singular = _table(records, table)
    entries = _sorted(_all(f"/v1/{kind.kind}-tables/{table}"))
    return render_template("maintenance_table.html", kind=kind, records=records, table=table, title=title,
                           singular=singular, entries=entries, values=values or {"active": True},
                           errors=errors or {}, message=message, languages=languages()), status


@bp.get(f"/<{RECORDS}:records>/tables/<{TABLE_SEGMENTS}:table>")
def table_entries(records: str, table: str) -> Any:
    return _render_table(records, table)


@bp.post(f"/<{RECORDS}:records>/tables/<{TABLE_SEGMENTS}:table>")
def new_entry(records: str, table: str) -> Any:
    kind, _title, singular = _table(records, table)
    body, errors = _entry_values(request.form)
    if errors:
        return _render_table(records, table, values=_submitted(body), errors=errors,
                             message=_("Please correct the marked fields."), status=422)
    try:
        created = gateway().json(caller(), "POST", f"/v1/{kind.kind}-tables/{table}", json=body)
    except ApiError as exc:
        return _render_table(records, table, values=_submitted(body), errors=_api_errors(exc),
                             message=exc.message, status=exc.status)
    flash(_("%(what)s %(name)s created.", what=singular, name=created.get("name", "")), "ok")
    return redirect(url_for("maintenance.table_entries", records=records, table=table))


def _render_entry(records: str, table: str, entry: Mapping[str, Any], values: Mapping[str, Any],
                  errors: Mapping[str, str] | None = None, message: str | None = None, conflict: bool = False,
                  status: int = 200) -> Any:
    kind, title, singular = _table(records, table)
    return render_template("maintenance_entry.html", kind=kind, records=records, table=table, title=title,
                           singular=singular, entry=entry, values=values, errors=errors or {}, message=message,
                           conflict=conflict, languages=languages()), status


@bp.route(f"/<{RECORDS}:records>/tables/<{TABLE_SEGMENTS}:table>/<entry_id>", methods=["GET", "POST"])
def entry(records: str, table: str, entry_id: str) -> Any:
    kind, _title, singular = _table(records, table)
    current = gateway().get(caller(), f"/v1/{kind.kind}-tables/{table}/{entry_id}")
    if request.method == "GET":
        return _render_entry(records, table, current, _form_of(current))
    protected = bool(current.get("protected"))
    body, errors = _entry_values(request.form, protected=protected)
    if protected:
        body["active"] = True
    if errors:
        return _render_entry(records, table, current, _submitted(body), errors,
                             _("Please correct the marked fields."), status=422)
    try:
        saved = gateway().json(caller(), "PATCH", f"/v1/{kind.kind}-tables/{table}/{entry_id}", json=body,
                               headers=_if_match(request.form.get("version", "")))
    except ApiError as exc:
        if exc.conflict:
            return _render_entry(records, table, current, _submitted(body), conflict=True, status=412,
                                 message=_("Someone else changed this entry since you opened it. Reload it to "
                                           "see their changes (yours are not saved)."))
        return _render_entry(records, table, current, _submitted(body), _api_errors(exc), exc.message,
                             status=exc.status)
    flash(_("%(what)s %(name)s saved.", what=singular, name=saved.get("name", "")), "ok")
    return redirect(url_for("maintenance.table_entries", records=records, table=table))


@bp.post(f"/<{RECORDS}:records>/tables/<{TABLE_SEGMENTS}:table>/<entry_id>/delete")
def delete_entry(records: str, table: str, entry_id: str) -> Any:
    kind, _title, singular = _table(records, table)
    try:
        gateway().json(caller(), "DELETE", f"/v1/{kind.kind}-tables/{table}/{entry_id}",
                       headers=_if_match(request.form.get("version", "")))
    except ApiError as exc:
        current = gateway().get(caller(), f"/v1/{kind.kind}-tables/{table}/{entry_id}")
        if exc.conflict:
            return _render_entry(records, table, current, _form_of(current), conflict=True, status=412,
                                 message=_("Someone else changed this entry since you opened it; it was not "
                                           "deleted. Reload it and try again."))
        return _render_entry(records, table, current, _form_of(current), message=exc.message, status=exc.status)
    flash(_("%(what)s deleted.", what=singular), "ok")
    return redirect(url_for("maintenance.table_entries", records=records, table=table))
