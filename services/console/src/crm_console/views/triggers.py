"""Screen 6's Triggers (``triggers:admin`` only; everyone else gets 403 and sees no nav entry).

- ``/triggers``: the list (name, kind, event, active) with **New** and the executions log.
- ``/triggers/new`` and ``/triggers/<id>``: the form for event, conditions and actions. Every
  choice is a select of the trigger kind's *active* stages, stage groups, groups and tables, so
  only valid ids can be sent; changing the kind re-renders the choices (htmx ``GET
  /triggers/fields``; without JS the **Update choices** button does the same). ``/triggers/new``
  takes ``?kind=&event=stage_changed&stage_id=`` (the board column's "When a record enters this
  stage…").
- Loop warnings before saving: **Save** first asks the API with ``?validate_only=true`` (the
  same 422s and ``warnings`` a save would answer, nothing saved). With warnings the form comes
  back showing them and **Save anyway**; **Check** only asks.
- ``/triggers/<id>/dry-run``: pick a record of the trigger's kind by search (``GET /v1/{records}?q=``)
  and see ``POST /v1/triggers/{id}/dry-run``'s answer, ids shown as names.
- ``/triggers/executions``: the log, filtered by trigger, record and result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import KINDS
from crm_console.session import caller, gateway, permission_guard

bp = Blueprint("triggers", __name__, url_prefix="/triggers")

PERMISSION = "triggers:admin"
KIND_RECORDS = {kind.kind: kind for kind in KINDS.values()}  # lead -> Kind(leads), opportunity -> ...
RESULTS = {"applied": _l("Applied"), "failed": _l("Failed"), "skipped_loop": _l("Skipped (loop)")}
UNITS = {"minutes": (60, _l("minutes")), "hours": (3600, _l("hours")), "days": (86400, _l("days"))}
MAX_ACTIONS = 10
PAGE_SIZE = 50
# Conditions: catalogue-backed ones are selects of the kind's active entries; the rest are ids.
CATALOGUE_CONDITIONS = (("stage_id", _l("Stage")), ("stage_group_id", _l("Stage group")),
                        ("source_id", _l("Source")), ("priority_id", _l("Priority")),
                        ("category_id", _l("Category")), ("group_id", _l("In group")))
ID_CONDITIONS = (("owner_id", _l("Owner (user id)")), ("office_id", _l("Office (id)")),
                 ("company_id", _l("Company (id)")), ("contact_id", _l("Contact (id)")),
                 ("lead_id", _l("Lead (id)")))
CONDITION_TABLES = {"source_id": "sources", "priority_id": "priorities", "category_id": "categories",
                    "group_id": "groups"}


bp.before_request(permission_guard(PERMISSION))


# -- the kind's choices --------------------------------------------------------------------------

def _table(kind: str, name: str) -> list[dict[str, Any]]:
    """One of the kind's tables, cached per request under a key of its own (catalogue.table's key
    for "groups" is the one catalogue.stage_groups uses, so after it, it answers stage groups)."""
    cache = g.setdefault("crm_trigger_tables", {})
    if (kind, name) not in cache:
        cache[(kind, name)] = gateway().all_pages(caller(), f"/v1/{kind}-tables/{name}")
    found: list[dict[str, Any]] = cache[(kind, name)]
    return found


def _active(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if item.get("active", True)]


def choices(kind: str) -> dict[str, list[dict[str, Any]]]:
    """The active catalogue entries a trigger of ``kind`` may name."""
    found = {"stages": catalogue.stages(kind, active_only=True),
             "stage_groups": _active(catalogue.stage_groups(kind))}
    for table in set(CONDITION_TABLES.values()):
        found[table] = _active(_table(kind, table))
    return found


def names(kind: str) -> dict[str, str]:
    """Every catalogue id of ``kind`` (inactive too) -> its name, to show ids as names."""
    out: dict[str, str] = {}
    for item in [*catalogue.stages(kind), *catalogue.stage_groups(kind),
                 *(e for t in set(CONDITION_TABLES.values()) for e in _table(kind, t))]:
        out[item["id"]] = item.get("name") or item.get("code") or item["id"]
    return out


def event_options(found: Mapping[str, list[dict[str, Any]]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The event select: (optgroup label, [(value, label)]); values are ``type`` or ``type:id``."""
    return [
        (str(_("Record")), [("created", str(_("Is created"))),
                            ("not_modified_for", str(_("Is not modified for a while (set the wait below)")))]),
        (str(_("Enters stage")), [(f"stage_changed:{s['id']}", _("Enters stage: %(name)s", name=s["name"]))
                                  for s in found["stages"]]),
        (str(_("Enters stage group")), [(f"stage_group_changed:{g['id']}",
                                         _("Enters stage group: %(name)s", name=g["name"]))
                                        for g in found["stage_groups"]]),
        (str(_("Is added to group")), [(f"added_to_group:{g['id']}", _("Is added to group: %(name)s", name=g["name"]))
                                       for g in found["groups"]]),
    ]


def action_options(found: Mapping[str, list[dict[str, Any]]]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (str(_("Add to group")), [(f"add_to_group:{g['id']}", _("Add to group: %(name)s", name=g["name"]))
                                  for g in found["groups"]]),
        (str(_("Remove from group")), [(f"remove_from_group:{g['id']}",
                                        _("Remove from group: %(name)s", name=g["name"])) for g in found["groups"]]),
        (str(_("Set stage")), [(f"set_stage:{s['id']}", _("Set stage: %(name)s", name=s["name"]))
                               for s in found["stages"]]),
    ]


_ID_KEYS = {"stage_changed": "stage_id", "stage_group_changed": "stage_group_id", "added_to_group": "group_id",
            "add_to_group": "group_id", "remove_from_group": "group_id", "set_stage": "stage_id"}


def tagged_value(item: Mapping[str, Any]) -> str:
    """An event or action object as its select value (``type`` or ``type:id``)."""
    key = _ID_KEYS.get(item.get("type", ""))
    return f"{item['type']}:{item.get(key, '')}" if key else str(item.get("type", ""))


def tagged_object(value: str) -> dict[str, Any] | None:
    kind, _sep, entry_id = value.partition(":")
    key = _ID_KEYS.get(kind)
    if key:
        return {"type": kind, key: entry_id} if entry_id else None
    return {"type": kind} if kind in ("created", "not_modified_for") else None


def describe(item: Mapping[str, Any], named: Mapping[str, str]) -> str:
    """An event or action in words, with names for ids."""
    kind = item.get("type")
    ref = named.get(item.get(_ID_KEYS.get(str(kind), ""), ""), item.get(_ID_KEYS.get(str(kind), ""), ""))
    labels = {"created": _("Is created"), "stage_changed": _("Enters stage: %(name)s", name=ref),
              "stage_group_changed": _("Enters stage group: %(name)s", name=ref),
              "added_to_group": _("Is added to group: %(name)s", name=ref),
              "add_to_group": _("Add to group: %(name)s", name=ref),
              "remove_from_group": _("Remove from group: %(name)s", name=ref),
              "set_stage": _("Set stage: %(name)s", name=ref)}
    if kind == "not_modified_for":
        seconds = int(item.get("seconds") or 0)
        return _("Is not modified for %(wait)s", wait=shown_wait(seconds))
    return str(labels.get(str(kind), kind or ""))


def shown_wait(seconds: int) -> str:
    for unit in ("days", "hours", "minutes"):
        size, label = UNITS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size} {label}"
    return _("%(n)d seconds", n=seconds)


def with_names(text: str, named: Mapping[str, str]) -> str:
    for entry_id, name in named.items():
        if entry_id in text:
            text = text.replace(entry_id, name)
    return text


# -- the form ------------------------------------------------------------------------------------

def values_of(trigger: Mapping[str, Any]) -> dict[str, Any]:
    """A trigger (API shape) as the form's values."""
    event = trigger.get("event") or {}
    values: dict[str, Any] = {"name": trigger.get("name", ""), "kind": trigger.get("kind", "lead"),
                              "active": trigger.get("active", True), "event": tagged_value(event) if event else "",
                              "wait": "", "unit": "days",
                              "actions": [tagged_value(a) for a in trigger.get("actions") or []],
                              "conditions": dict(trigger.get("conditions") or {})}
    if event.get("type") == "not_modified_for":
        seconds = int(event.get("seconds") or 0)
        unit = next((u for u in ("days", "hours", "minutes") if seconds % UNITS[u][0] == 0), "minutes")
        values["wait"], values["unit"] = str(seconds // UNITS[unit][0]), unit
    return values


def values_from(form: Mapping[str, Any], kind: str | None = None) -> dict[str, Any]:
    """The form as typed (every value kept, to show it again)."""
    chosen = kind or form.get("kind", "lead")
    return {"name": form.get("name", "").strip(), "kind": chosen if chosen in KIND_RECORDS else "lead",
            "active": form.get("active") == "on", "event": form.get("event", ""),
            "wait": form.get("wait", "").strip(), "unit": form.get("unit", "days"),
            "actions": [form.get(f"action_{i}", "") for i in range(MAX_ACTIONS)],
            "conditions": {key: form.get(f"cond_{key}", "").strip()
                           for key, _label in (*CATALOGUE_CONDITIONS, *ID_CONDITIONS)}}


def body_from(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body of the form's values, or the fields the person must correct."""
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = _("Give the trigger a name.")
    event = tagged_object(values["event"])
    if event is None:
        errors["event"] = _("Choose an event.")
    elif event["type"] == "not_modified_for":
        try:
            wait = int(values["wait"])
        except ValueError:
            wait = 0
        if wait < 1 or values["unit"] not in UNITS:
            errors["wait"] = _("Enter how long a record stays unmodified (a whole number, at least 1).")
        else:
            event["seconds"] = wait * UNITS[values["unit"]][0]
    actions = [tagged_object(v) for v in values["actions"] if v]
    if not actions:
        errors["action_0"] = _("Choose at least one action.")
    conditions = {k: v for k, v in values["conditions"].items()
                  if v and (k != "lead_id" or values["kind"] == "opportunity")}
    body = {"name": values["name"], "kind": values["kind"], "active": values["active"], "event": event,
            "conditions": conditions, "actions": [a for a in actions if a]}
    return body, errors


def form_errors(api_errors: Mapping[str, str]) -> dict[str, str]:
    """The API's field names (``event.stage_id``, ``actions.0.group_id``, ``conditions.x``) as the form's."""
    out: dict[str, str] = {}
    for field, message in api_errors.items():
        head, _sep, rest = field.partition(".")
        if head == "event":
            out["wait" if rest == "seconds" else "event"] = message
        elif head == "actions":
            out[f"action_{rest.partition('.')[0] or 0}"] = message
        elif head == "conditions":
            out[f"cond_{rest}"] = message
        else:
            out[head] = message
    return out


def render_form(values: Mapping[str, Any], *, trigger: Mapping[str, Any] | None = None,
                errors: Mapping[str, str] | None = None, message: str | None = None,
                warnings: list[str] | None = None, checked: bool = False, status: int = 200,
                fragment: bool = False) -> Any:
    found = choices(values["kind"])
    shown = [v for v in values["actions"] if v]
    rows = min(MAX_ACTIONS, max(2, len(shown) + 1))
    context = {"values": values, "trigger": trigger, "errors": errors or {}, "message": message,
               "warnings": warnings or [], "checked": checked, "events": event_options(found),
               "actions": action_options(found), "action_values": shown + [""] * (rows - len(shown)),
               "found": found, "kinds": KIND_RECORDS, "units": UNITS,
               "catalogue_conditions": CATALOGUE_CONDITIONS, "condition_tables": CONDITION_TABLES,
               "id_conditions": [c for c in ID_CONDITIONS if c[0] != "lead_id" or values["kind"] == "opportunity"]}
    return render_template("triggers_fields.html" if fragment else "triggers_form.html", **context), status


def _save(values: dict[str, Any], trigger: Mapping[str, Any] | None) -> Any:
    """Check (``?validate_only=true``), show warnings unless confirmed, then save."""
    body, errors = body_from(values)
    if trigger is not None:
        body.pop("kind")
    if errors:
        return render_form(values, trigger=trigger, errors=errors, message=_("Please correct the marked fields."),
                           status=422)
    path = f"/v1/triggers/{trigger['id']}" if trigger else "/v1/triggers"
    method = "PATCH" if trigger else "POST"
    action = request.form.get("do", "save")
    try:
        check = gateway().json(caller(), method, path, params={"validate_only": "true"}, json=body)
        warnings = list(check.get("warnings") or [])
        if action == "check" or (warnings and action != "save_anyway"):
            message = _("Not saved yet: these triggers would call each other in a loop.") if warnings else (
                _("No loops found. Not saved yet.") if action == "check" else None)
            return render_form(values, trigger=trigger, warnings=warnings, checked=True, message=message)
        headers = {"If-Match": f'"{trigger["version"]}"'} if trigger else None
        saved = gateway().json(caller(), method, path, json=body, headers=headers)
    except ApiError as exc:
        if exc.conflict:
            return render_form(values, trigger=trigger, status=412, message=_(
                "Someone else changed this trigger since you opened it. Reload it to see their changes "
                "(yours are not saved)."))
        return render_form(values, trigger=trigger, errors=form_errors(exc.field_errors), message=exc.message,
                           status=exc.status if exc.status >= 400 else 422)
    flash(_("Trigger %(name)s saved.", name=saved["name"]), "ok")
    for warning in saved.get("warnings") or []:
        flash(warning, "warning")
    return redirect(url_for("triggers.show", trigger_id=saved["id"]))


# -- routes --------------------------------------------------------------------------------------

@bp.get("")
def index() -> Any:
    items = gateway().all_pages(caller(), "/v1/triggers")
    named = {kind: names(kind) for kind in {item["kind"] for item in items}}
    rows = [{**item, "event_text": describe(item.get("event") or {}, named[item["kind"]])} for item in items]
    return render_template("triggers_list.html", items=rows, kinds=KIND_RECORDS)


@bp.route("/new", methods=["GET", "POST"])
def new() -> Any:
    if request.method == "POST":
        values = values_from(request.form)
        if request.form.get("do") == "refresh":
            return render_form(values)
        return _save(values, None)
    kind = request.args.get("kind", "lead")
    values = values_of({"kind": kind if kind in KIND_RECORDS else "lead", "active": True})
    event, entry_id = request.args.get("event", ""), ""
    for key in ("stage_id", "to_stage_id", "stage_group_id", "group_id"):
        entry_id = entry_id or request.args.get(key, "")
    values["event"] = f"{event}:{entry_id}" if event and entry_id else event
    return render_form(values)


@bp.get("/fields")
def fields() -> Any:
    """htmx: the form's fields again for another kind (the choices follow the kind)."""
    return render_form(values_from(request.args), fragment=True)


def _load(trigger_id: str) -> dict[str, Any]:
    trigger: dict[str, Any] = gateway().get(caller(), f"/v1/triggers/{trigger_id}")
    return trigger


@bp.route("/<trigger_id>", methods=["GET", "POST"])
def show(trigger_id: str) -> Any:
    trigger = _load(trigger_id)
    if request.method == "POST":
        values = values_from(request.form, kind=trigger["kind"])
        if request.form.get("do") == "refresh":
            return render_form(values, trigger=trigger)
        return _save(values, trigger)
    return render_form(values_of(trigger), trigger=trigger)


@bp.post("/<trigger_id>/delete")
def delete(trigger_id: str) -> Any:
    trigger = _load(trigger_id)
    try:
        gateway().json(caller(), "DELETE", f"/v1/triggers/{trigger_id}",
                       headers={"If-Match": f'"{trigger["version"]}"'})
    except ApiError as exc:
        return render_form(values_of(trigger), trigger=trigger, message=exc.message, status=exc.status)
    flash(_("Trigger %(name)s deleted.", name=trigger["name"]), "ok")
    return redirect(url_for("triggers.index"))


@bp.route("/<trigger_id>/dry-run", methods=["GET", "POST"])
def dry_run(trigger_id: str) -> Any:
    trigger = _load(trigger_id)
    kind = KIND_RECORDS[trigger["kind"]]
    named = names(trigger["kind"])
    q = request.values.get("q", "").strip()
    found: list[dict[str, Any]] = []
    result, record, error, status = None, None, None, 200
    try:
        if q:
            found = gateway().get(caller(), f"/v1/{kind.records}", q=q, page_size=10).get("items", [])
        if request.method == "POST":
            record_id = request.form.get("record_id", "")
            record = gateway().get(caller(), f"/v1/{kind.records}/{record_id}")
            result = gateway().json(caller(), "POST", f"/v1/triggers/{trigger_id}/dry-run",
                                    json={"record_id": record_id})
            result["reasons"] = [with_names(r, named) for r in result.get("reasons") or []]
            result["action_texts"] = [describe(a, named) for a in result.get("actions") or []]
    except ApiError as exc:
        if exc.status not in (400, 404, 409, 422):
            raise
        error, status = exc.message, exc.status
    return render_template("triggers_dry_run.html", trigger=trigger, kind=kind, q=q, found=found, result=result,
                           record=record, error=error,
                           event_text=describe(trigger.get("event") or {}, named)), status


@bp.get("/executions")
def executions() -> Any:
    triggers = gateway().all_pages(caller(), "/v1/triggers")
    by_id = {t["id"]: t for t in triggers}
    trigger_id = request.args.get("trigger_id", "")
    record_id = request.args.get("record_id", "").strip()
    result = request.args.get("result", "")
    params = {"trigger_id": trigger_id if trigger_id in by_id else None, "record_id": record_id or None,
              "result": result if result in RESULTS else None, "page_size": PAGE_SIZE,
              "page_token": request.args.get("page_token") or None}
    error, status = None, 200
    try:
        page = gateway().get(caller(), "/v1/trigger-executions", **params)
    except ApiError as exc:
        if exc.status not in (400, 422):
            raise
        page, error, status = {"items": []}, exc.message, exc.status
    named = {kind: names(kind) for kind in {t["kind"] for t in triggers}}
    rows = []
    for item in page.get("items", []):
        trigger = by_id.get(item["trigger_id"])
        kind = trigger["kind"] if trigger else None
        rows.append({**item, "trigger": trigger, "records": KIND_RECORDS[kind].records if kind else None,
                     "action_texts": [describe(a, named.get(kind or "", {})) for a in item.get("actions") or []]})
    next_token = page.get("next_page_token")
    next_url = url_for("triggers.executions", **{k: v for k, v in params.items() if v and k != "page_token"},
                       page_token=next_token) if next_token else None
    return render_template("triggers_executions.html", rows=rows, triggers=triggers, trigger_id=trigger_id,
                           record_id=record_id, result=result, results=RESULTS, error=error, next_url=next_url,
                           paged=bool(params["page_token"])), status
