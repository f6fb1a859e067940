"""Screen 2, the wizard (New): Company, Contact, then the lead or opportunity.

One implementation for both kinds. Every step is a plain form post (it works without
JavaScript); what was entered in the other steps travels along in hidden fields, so Back keeps
it and the session cookie stays small. Nothing is trusted from those fields: the chosen company
and contact are read again from the API when a step is left, and the API's wizard
(``POST /v1/{records}/wizard``) judges the whole at **Create**, creating everything or nothing.
A refusal is shown on the step it names (``step`` in the problem), with the fields marked.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from crm_console import catalogue
from crm_console.gateway import ApiError
from crm_console.kinds import Kind
from crm_console.session import caller, gateway, login_required, permitted_kind

bp = Blueprint("wizard", __name__)

STEPS = ("company", "contact", "record")
COMPANY_FIELDS = ("name", "website", "phone", "email", "address", "city", "country")
CONTACT_FIELDS = ("first_name", "last_name", "email", "phone")
RECORD_FIELDS = ("title", "description", "stage_id", "source_id", "priority_id", "owner_id")
AMOUNT_FIELDS = ("amount", "currency", "probability", "expected_close_date")
# What a copy's form is prefilled with from its source (the API copies the rest itself).
PREFILLED = ("title", "description", "source_id", "priority_id", "amount", "currency", "probability",
             "expected_close_date")
MAX_VALUE = 25_000  # longer than anything the API takes: it says so itself; only a bound on what we echo

LABELS = {
    "company.name": _l("Name"), "company.website": _l("Website"), "company.phone": _l("Phone"),
    "company.email": _l("Email"), "company.address": _l("Address"), "company.city": _l("City"),
    "company.country": _l("Country"),
    "contact.first_name": _l("First name"), "contact.last_name": _l("Last name"), "contact.email": _l("Email"),
    "contact.phone": _l("Phone"),
    "record.title": _l("Title"), "record.description": _l("Description"), "record.stage_id": _l("Stage"),
    "record.source_id": _l("Source"), "record.priority_id": _l("Priority"), "record.owner_id": _l("Owner"),
    "record.amount": _l("Amount"), "record.currency": _l("Currency"), "record.probability": _l("Probability (%)"),
    "record.expected_close_date": _l("Expected close"),
}


def step_keys(kind: Kind) -> dict[str, tuple[str, ...]]:
    """The wizard's state, by the step that shows it (the others carry it in hidden fields)."""
    return {
        "company": ("company_mode", "company_id", "company_q",
                    *(f"company.{f}" for f in COMPANY_FIELDS)),
        "contact": ("contact_mode", "contact_id", "contact_q", "contact_scope",
                    *(f"contact.{f}" for f in CONTACT_FIELDS)),
        "record": ("record_mode",
                   *(f"record.{f}" for f in RECORD_FIELDS + (AMOUNT_FIELDS if kind.has_amount else ()))),
    }


# Carried on every step in hidden fields: what was chosen (its name is shown, its id re-checked).
CARRIED = ("nonce", "company_label", "contact_label", "copy_from", "copy_label")


@dataclass
class Refusal:
    """Why a step was refused: the API's message, and its field errors by our field names."""

    message: str
    fields: dict[str, str] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)  # field errors with no field on the step
    status: int = 422


@dataclass
class Wizard:
    kind: Kind
    values: dict[str, str]
    step: str = "company"
    refusal: Refusal | None = None
    focus: str | None = None  # the control that gets autofocus (after a search, a refusal)

    @classmethod
    def from_form(cls, kind: Kind, form: Mapping[str, str]) -> Wizard:
        keys = [k for step in step_keys(kind).values() for k in step] + list(CARRIED)
        values = {k: str(form.get(k, ""))[:MAX_VALUE].strip() for k in keys}
        step = form.get("step", "")
        wizard = cls(kind, values, step if step in STEPS else "company")
        wizard.normalise()
        return wizard

    def get(self, key: str) -> str:
        return self.values.get(key, "")

    def normalise(self) -> None:
        """Modes the kind allows: only leads may have no company or no contact."""
        modes = ("existing", "new", "none") if not self.kind.has_amount else ("existing", "new")
        if self.values.get("company_mode") not in modes:
            self.values["company_mode"] = "existing"
        if self.values.get("contact_mode") not in modes:
            self.values["contact_mode"] = "existing"
        if self.values.get("company_mode") == "none":
            self.values["contact_mode"] = "none"  # the API: no company skips the contact too
        if self.values.get("record_mode") not in ("empty", "copy"):
            self.values["record_mode"] = "empty"
        if self.values.get("contact_scope") not in ("company", "all"):
            self.values["contact_scope"] = "company"
        if not self.values.get("nonce"):
            self.values["nonce"] = uuid.uuid4().hex

    def hidden(self) -> list[tuple[str, str]]:
        """The other steps' state, for hidden fields."""
        out = [(k, self.get(k)) for k in CARRIED if self.get(k)]
        for step, keys in step_keys(self.kind).items():
            if step != self.step:
                out += [(k, self.get(k)) for k in keys if self.get(k)]
        return out

    def refuse(self, exc: ApiError, step: str | None = None) -> None:
        """Show the API's refusal on the step it names (or ``step``, or the last one)."""
        named = exc.problem.get("step")
        errors = exc.field_errors
        if not step:
            step = {"link": "record"}.get(named, named) if named in ("company", "contact", "record", "link") else None
        if not step:  # the wizard's own body check names fields as company.data.name, record.copy_from, ...
            prefixes = [name.split(".", 1)[0] for name in errors]
            step = next((p for p in prefixes if p in STEPS), "record")
        self.step = step
        refusal = Refusal(exc.message, status=exc.status if 400 <= exc.status < 600 else 502)
        shown = set(step_keys(self.kind)[step]) | ({"copy_from"} if step == "record" else set())
        for name, message in errors.items():
            ours = _our_field(step, name)
            if ours in shown:
                refusal.fields.setdefault(ours, message)
            else:
                refusal.others.append(f"{name}: {message}" if name else message)
        self.refusal = refusal
        self.focus = next(iter(refusal.fields), None)


def _our_field(step: str, name: str) -> str:
    """The API's field name (``email``, ``contact.data.email``, ``record.copy_from``) as the form's."""
    parts = name.split(".")
    if parts and parts[0] in STEPS:
        parts = parts[1:]
    if parts and parts[0] == "data":
        parts = parts[1:]
    base = ".".join(parts)
    if base in ("mode", "id", "copy_from"):
        return {"mode": f"{step}_mode", "id": f"{step}_id", "copy_from": "copy_from"}[base]
    return f"{step}.{base}"


# -- routes -------------------------------------------------------------------------------------

def _kind_for_create(records: str) -> Kind:
    return permitted_kind(records, "create")


@bp.get("/<any(leads, opportunities):records>/new")
@login_required
def start(records: str) -> Any:
    """Step 1, or the step the context fills (``?company_id=``, ``?contact_id=`` from a file's page)."""
    kind = _kind_for_create(records)
    wizard = Wizard.from_form(kind, {})
    company_id = request.args.get("company_id", "")[:36]
    contact_id = request.args.get("contact_id", "")[:36]
    try:
        if company_id:
            company = gateway().get(caller(), f"/v1/companies/{company_id}")
            wizard.values.update(company_id=company["id"], company_label=company["name"])
        if contact_id:
            contact = gateway().get(caller(), f"/v1/contacts/{contact_id}")
            wizard.values.update(contact_id=contact["id"], contact_label=_contact_label(contact))
            if contact.get("company_id") and not company_id:
                company = gateway().get(caller(), f"/v1/companies/{contact['company_id']}")
                wizard.values.update(company_id=company["id"], company_label=company["name"])
    except ApiError as exc:
        wizard.refuse(exc, "company")
    return _render(wizard)


@bp.post("/<any(leads, opportunities):records>/new")
@login_required
def step(records: str) -> Any:
    """One press of Back, Next, Search, Copy or Create."""
    kind = _kind_for_create(records)
    wizard = Wizard.from_form(kind, request.form)
    action = request.form.get("action", "next")
    here = STEPS.index(wizard.step)
    if action == "back":
        wizard.step = STEPS[max(here - 1, 0)]
    elif action == "search":
        wizard.values[f"{wizard.step}_mode"] = "existing"
        wizard.focus = "results"
    elif action.startswith("copy:") and wizard.step == "record":
        _pick_copy(wizard, action.removeprefix("copy:")[:36])
    elif action == "create" and wizard.step == "record":
        created = _create(wizard)
        if created is not None:
            return created
    elif action == "next" and here < len(STEPS) - 1:
        if _leave(wizard):
            wizard.step = STEPS[here + 1]
    return _render(wizard)


# -- leaving a step: what it refers to must exist -----------------------------------------------

def _leave(wizard: Wizard) -> bool:
    """Check the step's choice with the API; False (and the refusal on the step) when it fails."""
    step = wizard.step
    mode = wizard.get(f"{step}_mode")
    if mode != "existing":
        return True
    chosen = wizard.get(f"{step}_id")
    if not chosen:
        if wizard.get(f"{step}_q"):  # Enter in the search box without JavaScript: search
            wizard.focus = "results"
            return False
        message = _("Choose a company from the results, or search for one.") if step == "company" else \
            _("Choose a contact from the results, or search for one.")
        wizard.refusal = Refusal(message, fields={f"{step}_q": message})
        wizard.focus = f"{step}_q"
        return False
    path = "/v1/companies/" if step == "company" else "/v1/contacts/"
    try:
        found = gateway().get(caller(), path + chosen)
    except ApiError as exc:
        wizard.refuse(exc, step)
        wizard.refusal.fields.setdefault(f"{step}_q", wizard.refusal.message)  # type: ignore[union-attr]
        return False
    wizard.values[f"{step}_label"] = found["name"] if step == "company" else _contact_label(found)
    return True


def _contact_label(contact: Mapping[str, Any]) -> str:
    name = f"{contact.get('first_name') or ''} {contact.get('last_name') or ''}".strip()
    return f"{name} ({contact['email']})" if contact.get("email") else name


def _pick_copy(wizard: Wizard, record_id: str) -> None:
    """Copy this record: the form is prefilled with its fields (the title first of all)."""
    try:
        source = gateway().get(caller(), f"/v1/{wizard.kind.records}/{record_id}")
    except ApiError as exc:
        wizard.refuse(exc, "record")
        return
    wizard.values.update(record_mode="copy", copy_from=source["id"], copy_label=source.get("title") or "")
    for name in PREFILLED:
        if f"record.{name}" in step_keys(wizard.kind)["record"]:
            value = source.get(name)
            wizard.values[f"record.{name}"] = "" if value is None else str(value)
    wizard.focus = "record.title"


# -- Create -------------------------------------------------------------------------------------

def _file_step(wizard: Wizard, step: str, names: tuple[str, ...]) -> dict[str, Any]:
    mode = wizard.get(f"{step}_mode")
    if mode == "existing":
        return {"mode": "existing", "id": wizard.get(f"{step}_id")}
    if mode == "new":
        return {"mode": "new", "data": {f: wizard.get(f"{step}.{f}") for f in names if wizard.get(f"{step}.{f}")}}
    return {"mode": "none"}


def _record_data(wizard: Wizard, *, copy: bool) -> dict[str, Any]:
    """The record's fields; on a copy a cleared field is cleared (null), otherwise left out."""
    names = RECORD_FIELDS + (AMOUNT_FIELDS if wizard.kind.has_amount else ())
    data: dict[str, Any] = {}
    for name in names:
        value = wizard.get(f"record.{name}")
        if not value:
            if copy and name in PREFILLED:
                data[name] = "" if name in ("title", "description") else None
            continue
        data[name] = int(value) if name == "probability" and value.isdigit() else value
    return data


def body_of(wizard: Wizard) -> dict[str, Any]:
    body: dict[str, Any] = {"company": _file_step(wizard, "company", COMPANY_FIELDS),
                            "contact": _file_step(wizard, "contact", CONTACT_FIELDS)}
    if wizard.get("record_mode") == "copy":
        body["record"] = {"mode": "copy", "data": _record_data(wizard, copy=True)}
        if wizard.get("copy_from"):
            body["record"]["copy_from"] = wizard.get("copy_from")
    else:
        body["record"] = {"mode": "empty", "data": _record_data(wizard, copy=False)}
    return body


def _create(wizard: Wizard) -> Any:
    """The API's wizard: a redirect to the new record, or None with the refusal on its step."""
    kind = wizard.kind
    body = body_of(wizard)
    # The same body pressed twice creates once; another body (after a refusal) is a new attempt.
    key = hashlib.sha256((wizard.get("nonce") + json.dumps(body, sort_keys=True)).encode()).hexdigest()
    try:
        answer = gateway().json(caller(), "POST", f"/v1/{kind.records}/wizard", json=body,
                                headers={"Idempotency-Key": f"console-wizard-{key[:48]}"})
    except ApiError as exc:
        wizard.refuse(exc)
        if wizard.refusal is not None:
            wizard.refusal.message = _("Nothing was created. %(reason)s", reason=wizard.refusal.message)
        return None
    record = answer[kind.kind]
    flash(_("%(kind)s “%(title)s” was created.", kind=kind.singular, title=record.get("title", "")), "ok")
    return redirect(url_for("records.show", records=kind.records, record_id=record["id"]), 303)


# -- rendering ----------------------------------------------------------------------------------

def _render(wizard: Wizard) -> Any:
    kind = wizard.kind
    context: dict[str, Any] = {"results": [], "candidates": [], "search_refusal": None}
    try:
        if wizard.step in ("company", "contact"):
            context["results"] = _results(wizard)
        elif wizard.step == "record":
            context.update(_record_context(wizard))
    except ApiError as exc:  # a search the API refused (e.g. too long): on this step
        if wizard.refusal is None:
            wizard.refuse(exc, wizard.step)
            wizard.refusal.fields.setdefault(f"{wizard.step}_q", wizard.refusal.message)  # type: ignore[union-attr]
            wizard.focus = f"{wizard.step}_q"
    status = wizard.refusal.status if wizard.refusal else 200
    return render_template("wizard.html", kind=kind, records=kind.records, w=wizard, step=wizard.step,
                           step_no=STEPS.index(wizard.step),
                           steps=_step_names(kind), labels=LABELS, tab=request.values.get("tab", ""),
                           **context), status


def _step_names(kind: Kind) -> list[tuple[str, Any]]:
    return [("company", _("Company")), ("contact", _("Contact")), ("record", kind.singular)]


def _results(wizard: Wizard) -> list[dict[str, Any]]:
    """The search's results (and the chosen one, so it stays chosen), as id + label."""
    step = wizard.step
    q = wizard.get(f"{step}_q")
    params: dict[str, Any] = {"q": q or None, "page_size": 25}
    found: list[dict[str, Any]] = []
    if step == "company":
        if q:
            found = [{"id": c["id"], "label": c["name"], "detail": ", ".join(
                x for x in (c.get("city"), c.get("country")) if x)}
                for c in gateway().get(caller(), "/v1/companies", **params).get("items", [])]
    else:
        in_company = (wizard.get("company_mode") == "existing" and wizard.get("contact_scope") == "company"
                      and bool(wizard.get("company_id")))
        if in_company:
            params["company_id"] = wizard.get("company_id")
        if q or in_company:  # the chosen company's contacts are offered straight away
            found = [{"id": c["id"], "label": _contact_label(c), "detail": c.get("phone") or ""}
                     for c in gateway().get(caller(), "/v1/contacts", **params).get("items", [])]
    chosen = wizard.get(f"{step}_id")
    if chosen and chosen not in {r["id"] for r in found}:
        found.insert(0, {"id": chosen, "label": wizard.get(f"{step}_label") or chosen, "detail": ""})
    return found


def _record_context(wizard: Wizard) -> dict[str, Any]:
    kind = wizard.kind
    candidates: list[dict[str, Any]] = []
    if wizard.get("contact_mode") == "existing" and wizard.get("contact_id"):
        candidates = gateway().get(caller(), f"/v1/contacts/{wizard.get('contact_id')}/{kind.records}",
                                   page_size=50).get("items", [])
    if wizard.get("copy_from") not in {c["id"] for c in candidates}:  # another contact now: not theirs
        wizard.values.update(copy_from="", copy_label="")
    if not candidates:
        wizard.values["record_mode"] = "empty"
    stages = catalogue.stages(kind.kind, active_only=True)
    names = {s["id"]: s.get("name", "") for s in catalogue.stages(kind.kind)}
    for item in candidates:
        item["stage_name"] = names.get(item.get("stage_id") or "", "")
    tables = {t: [e for e in catalogue.table(kind.kind, t) if e.get("active", True)] for t in ("sources", "priorities")}
    return {"candidates": candidates, "stages": stages,
            "default_stage": next((s for s in stages if s.get("is_default")), None),
            "sources": tables["sources"], "priorities": tables["priorities"]}
