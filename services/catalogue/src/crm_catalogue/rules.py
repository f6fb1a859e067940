"""The catalogue's rules: every write goes through here, from the API and the starter data alike.

Each ``save_*`` creates (``current=None``) or changes (``current`` = the view read) an entity
from a validated body, checks the rules on the state it would leave, and reports every
entity whose view changes to the ``Journal``. A refused write raises a domain error of
``crm_catalogue.errors`` (``InvalidFields`` for bad fields, a ``Conflict`` named for the rule
it breaks) before or during its writes; the transaction is rolled back then, so nothing of it
remains.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.orm import Session

from crm_catalogue.errors import (
    CodeTaken,
    DefaultStageRequired,
    EntryInUse,
    InactiveDefaultStage,
    InvalidFields,
    LinksStranded,
    ProtectedEntry,
    StageInUse,
)
from crm_catalogue.journal import Journal
from crm_catalogue.tables import (
    PLURALS,
    STAGE_TEMPLATE_KINDS,
    TEMPLATE_KINDS,
    VISIBLE_AT,
    stage_templates,
    stages,
    table_entries,
    templates,
)
from crm_catalogue.usage import records_in_stage
from crm_catalogue.views import STAGE, TABLE_ENTRY, TEMPLATE, Aggregate, View
from crm_kit.db import utcnow

# A stage's references to entries of its own kind's tables.
STAGE_REFERENCES = {"procedure_id": "procedures", "stage_group_id": "stage_groups"}
STAGE_LINK_FIELDS = {f"{kind}_template_ids": kind for kind in STAGE_TEMPLATE_KINDS}
STAGE_DEFAULTS: View = {"active": True, "is_default": False, "is_end": False, "is_default_end": False, "color": None,
                        "remarks": "", "procedure_id": None, "stage_group_id": None,
                        "email_template_ids": [], "document_template_ids": []}
TEMPLATE_DEFAULTS: View = {"subject": None, "body": "", "visible_at": None, "stage_ids": []}
_ID_LISTS = ("email_template_ids", "document_template_ids", "stage_ids")
_JINJA = SandboxedEnvironment()


class FieldErrors:
    """Collects the bad fields of a body, so a client learns about every one at once."""

    def __init__(self) -> None:
        self.errors: list[dict[str, Any]] = []

    def add(self, field: str, message: str, **extra: Any) -> None:
        """``extra``: more about the error (a template body's syntax error has its ``line``)."""
        self.errors.append({"field": field, "message": message, **extra})

    def raise_any(self) -> None:
        if self.errors:
            raise InvalidFields(self.errors)


def _changes(body: Mapping[str, Any], current: View | None) -> dict[str, Any]:
    """The fields of ``body`` that differ from ``current`` (all of them for a new entity).

    Id lists are sets: order and repetitions carry no meaning.
    """
    normalised = {k: sorted(set(v)) if k in _ID_LISTS else v for k, v in body.items()}
    if current is None:
        return normalised
    return {k: v for k, v in normalised.items()
            if (sorted(current[k]) if k in _ID_LISTS else current.get(k)) != v}


def _next_index(session: Session, table: Table, *where: Any) -> int:
    last = session.execute(select(func.max(table.c.index)).where(*where)).scalar()
    return 0 if last is None else last + 1


def _code_taken(session: Session, table: Table, code: str, entity_id: str | None, *where: Any) -> str | None:
    """The code of another entity (not ``entity_id``) in ``where`` that is ``code`` whatever the case.

    Codes are ASCII (the schema's pattern), so SQL's and Python's lower() agree; the unique
    indexes on lower(code) (catalogue_0002) hold the rule against concurrent writes too.
    """
    return session.execute(select(table.c.code).where(func.lower(table.c.code) == code.lower(),
                                                      table.c.id != entity_id, *where)
                           ).scalar()


def _write(session: Session, journal: Journal, aggregate: Aggregate, current: View | None, columns: dict[str, Any],
           new_values: dict[str, Any]) -> str:
    """Insert a new entity (``current`` None) or update ``columns`` of the current one."""
    if current is None:
        now = utcnow()
        entity_id = str(uuid.uuid4())
        session.execute(aggregate.table.insert().values({**new_values, **columns, "id": entity_id, "version": 1,
                                                         "created_at": now, "modified_at": now}))
        journal.created(aggregate, entity_id)
        return entity_id
    journal.changed(aggregate, current["id"], current["version"])
    if columns:
        session.execute(update(aggregate.table).where(aggregate.table.c.id == current["id"]).values(**columns))
    return str(current["id"])


# -- table entries ------------------------------------------------------------------------------

def save_entry(session: Session, journal: Journal, kind: str, table_name: str, body: Mapping[str, Any],
               current: View | None = None, *, protected: bool = False) -> str:
    """Create or change an entry of ``kind``'s table ``table_name`` (entity name, e.g. ``stage_groups``)."""
    changes = _changes(body, current)
    if current is not None and not changes:
        return str(current["id"])
    if current is not None and current["protected"]:
        if "code" in changes:
            raise ProtectedEntry(f"{current['code']} is a protected entry: its code cannot change.")
        if changes.get("active") is False:
            raise ProtectedEntry(f"{current['code']} is a protected entry: it cannot be deactivated.")
    scope = (table_entries.c.kind == kind, table_entries.c.table_name == table_name)
    entry_id = None if current is None else current["id"]
    taken = _code_taken(session, table_entries, changes["code"], entry_id, *scope) if "code" in changes else None
    if taken is not None:
        same = "" if taken == changes["code"] else f" ({taken!r}: codes are the same whatever their case)"
        raise CodeTaken(f"The {kind} {table_name} table has an entry with code {changes['code']!r} already{same}.")
    if current is None and changes.get("index") is None:
        changes["index"] = _next_index(session, table_entries, *scope)
    return _write(session, journal, TABLE_ENTRY, current, changes,
                  {"kind": kind, "table_name": table_name, "active": True, "protected": protected})


def delete_entry(session: Session, journal: Journal, entry: View) -> None:
    """Delete a table entry: not a protected one, nor one a stage refers to."""
    if entry["protected"]:
        raise ProtectedEntry(f"{entry['code']} is a protected entry: it cannot be deleted.")
    users = session.execute(
        select(stages.c.code).where(or_(stages.c.procedure_id == entry["id"], stages.c.stage_group_id == entry["id"]))
        .order_by(stages.c.index)
    ).scalars().all()
    if users:
        raise EntryInUse(f"The {entry['kind']} stage(s) {', '.join(users)} refer to this entry; "
                         "deactivate it instead, or change those stages first.", stages=list(users))
    journal.deleted(TABLE_ENTRY, entry)
    session.execute(delete(table_entries).where(table_entries.c.id == entry["id"]))


# -- stages -------------------------------------------------------------------------------------

def save_stage(session: Session, journal: Journal, kind: str, body: Mapping[str, Any],
               current: View | None = None) -> str:
    """Create or change a stage of ``kind``, keeping one default and one default end stage per kind."""
    changes = _changes(body, current)
    if current is not None and not changes:
        return str(current["id"])
    state = {**STAGE_DEFAULTS, **(current or {}), **changes}
    _check_stage_fields(session, kind, state, changes)
    _check_stage_rules(session, kind, state, current, changes)
    stage_id = current["id"] if current is not None else None
    if current is not None:  # first, so a concurrent change is a 412 before anything else is written
        journal.changed(STAGE, current["id"], current["version"])
    for flag in ("is_default", "is_default_end"):
        if changes.get(flag):  # the previous holder of the flag loses it, first (the unique index)
            for previous in session.execute(select(stages.c.id).where(
                    stages.c.kind == kind, stages.c[flag].is_(True), stages.c.id != stage_id)).scalars().all():
                journal.changed(STAGE, previous)
                session.execute(update(stages).where(stages.c.id == previous).values({flag: False}))
    if current is None and state.get("index") is None:
        state["index"] = changes["index"] = _next_index(session, stages, stages.c.kind == kind)
    columns = {k: state[k] for k in changes if k not in STAGE_LINK_FIELDS}
    stage_id = _write(session, journal, STAGE, current, columns,
                      {"kind": kind, **{k: v for k, v in STAGE_DEFAULTS.items() if k not in STAGE_LINK_FIELDS}})
    for field, template_kind in STAGE_LINK_FIELDS.items():
        if field in changes:
            _link_stage(session, journal, stage_id, template_kind, changes[field])
    return stage_id


def _check_stage_fields(session: Session, kind: str, state: View, changes: Mapping[str, Any]) -> None:
    errors = FieldErrors()
    if state["is_default_end"] and not state["is_end"]:
        errors.add("is_default_end", "The default end stage must be an end stage (is_end).")
    for field, table_name in STAGE_REFERENCES.items():
        if changes.get(field) is None:
            continue
        active = session.execute(select(table_entries.c.active).where(
            table_entries.c.id == changes[field], table_entries.c.kind == kind,
            table_entries.c.table_name == table_name)).scalar()
        if not active:
            errors.add(field, f"No active entry {changes[field]!r} in the {kind} {table_name} table.")
    visible_at = f"{kind}_stage"
    for field, template_kind in STAGE_LINK_FIELDS.items():
        ids = changes.get(field) or []
        if not ids:
            continue
        fitting = set(session.execute(select(templates.c.id).where(
            templates.c.id.in_(ids), templates.c.kind == template_kind, templates.c.visible_at == visible_at)
        ).scalars())
        wrong = [i for i in ids if i not in fitting]
        if wrong:
            errors.add(field, f"Not {template_kind} templates visible at {kind} stages: {', '.join(wrong)}.")
    errors.raise_any()


def _check_stage_rules(session: Session, kind: str, state: View, current: View | None,
                       changes: Mapping[str, Any]) -> None:
    taken = _code_taken(session, stages, changes["code"], None if current is None else current["id"],
                        stages.c.kind == kind) if "code" in changes else None
    if taken is not None:
        same = "" if taken == changes["code"] else f" ({taken!r}: codes are the same whatever their case)"
        raise CodeTaken(f"A {kind} stage with code {changes['code']!r} exists already{same}.")
    if current is not None and current["is_default"] and changes.get("is_default") is False:
        raise DefaultStageRequired(f"This is the default stage of {PLURALS[kind]}, and there must be one: "
                                   "make another stage the default instead (PATCH it with is_default true), "
                                   "which clears this one.")
    if state["active"]:
        return
    for flag, what in (("is_default", "default stage"), ("is_default_end", "default end stage")):
        if not state[flag]:
            continue
        if current is not None and current[flag]:
            raise InactiveDefaultStage(f"The {what} cannot be deactivated; make another stage the {what} first.")
        raise InactiveDefaultStage(f"An inactive stage cannot be the {what}; activate it as well.")


def delete_stage(session: Session, journal: Journal, stage: View) -> None:
    """Delete a stage no record uses that is neither the default nor the default end stage."""
    for flag, what in (("is_default", "default stage"), ("is_default_end", "default end stage")):
        if stage[flag]:
            raise DefaultStageRequired(f"The {what} cannot be deleted; make another stage the {what} first.")
    used = records_in_stage(session, stage["id"])
    if used:
        records = PLURALS[stage["kind"]] if used != 1 else stage["kind"]
        raise StageInUse(f"{used} {records} {'is' if used == 1 else 'are'} in this stage, so it cannot be deleted; "
                         "deactivate it instead.", records=used)
    journal.deleted(STAGE, stage)
    for template_kind in TEMPLATE_KINDS:  # print templates may be linked from their side
        _link_stage(session, journal, stage["id"], template_kind, [])
    session.execute(delete(stages).where(stages.c.id == stage["id"]))


def _link_stage(session: Session, journal: Journal, stage_id: str, template_kind: str,
                template_ids: Iterable[str]) -> None:
    """Make ``stage_id``'s templates of ``template_kind`` exactly ``template_ids``."""
    linked = set(session.execute(
        select(stage_templates.c.template_id).join(templates, templates.c.id == stage_templates.c.template_id)
        .where(stage_templates.c.stage_id == stage_id, templates.c.kind == template_kind)).scalars())
    wanted = set(template_ids)
    _relink(session, [(stage_id, t) for t in linked - wanted], [(stage_id, t) for t in wanted - linked])
    for template_id in sorted(linked ^ wanted):
        journal.changed(TEMPLATE, template_id)


def _relink(session: Session, remove: list[tuple[str, str]], add: list[tuple[str, str]]) -> None:
    for stage_id, template_id in remove:
        session.execute(delete(stage_templates).where(stage_templates.c.stage_id == stage_id,
                                                      stage_templates.c.template_id == template_id))
    if add:
        session.execute(stage_templates.insert(), [{"stage_id": s, "template_id": t} for s, t in add])


# -- templates ----------------------------------------------------------------------------------

def save_template(session: Session, journal: Journal, body: Mapping[str, Any], current: View | None = None) -> str:
    """Create or change a template; its ``stage_ids`` must be stages of the kind ``visible_at`` names."""
    changes = _changes(body, current)
    if current is not None and not changes:
        return str(current["id"])
    state = {**TEMPLATE_DEFAULTS, **(current or {}), **changes}
    errors = FieldErrors()
    if state["subject"] is not None and state["kind"] != "email" and {"subject", "kind"} & set(changes):
        errors.add("subject", "Only email templates have a subject.")
    if "body" in changes:
        try:
            _JINJA.parse(state["body"])
        except TemplateSyntaxError as exc:
            errors.add("body", f"Line {exc.lineno}: {exc.message}", line=exc.lineno)
    if {"stage_ids", "visible_at"} & set(changes):
        stage_kind = VISIBLE_AT.get(state["visible_at"] or "")
        fitting = set(session.execute(select(stages.c.id).where(
            stages.c.id.in_(state["stage_ids"]), stages.c.kind == stage_kind)).scalars())
        wrong = [s for s in state["stage_ids"] if s not in fitting]
        if wrong and "stage_ids" not in body:  # the change would strand the existing links
            errors.raise_any()
            where = f"are not {stage_kind} stages" if stage_kind else "would be visible at no stage"
            raise LinksStranded(f"This template is linked to {len(wrong)} stage(s) that {where}; "
                                "set stage_ids (or unlink them) in the same request.", stage_ids=wrong)
        if wrong:
            errors.add("stage_ids", f"Not {stage_kind} stages: {', '.join(wrong)}." if stage_kind
                       else "A template visible at no stage (visible_at null) cannot have stage_ids.")
    errors.raise_any()

    columns = {k: v for k, v in changes.items() if k != "stage_ids"}
    template_id = _write(session, journal, TEMPLATE, current, columns,
                         {k: v for k, v in TEMPLATE_DEFAULTS.items() if k != "stage_ids"})
    if "stage_ids" in changes:
        _link_template(session, journal, template_id, state["kind"], changes["stage_ids"])
    if current is not None and "kind" in changes and \
            {current["kind"], state["kind"]} & set(STAGE_TEMPLATE_KINDS):
        for stage_id in current["stage_ids"]:  # the template moves between the stages' id lists
            journal.changed(STAGE, stage_id)
    return template_id


def delete_template(session: Session, journal: Journal, template: View) -> None:
    """Delete a template and its links (the stages it was linked to change too)."""
    journal.deleted(TEMPLATE, template)
    _link_template(session, journal, template["id"], template["kind"], [])
    session.execute(delete(templates).where(templates.c.id == template["id"]))


def _link_template(session: Session, journal: Journal, template_id: str, template_kind: str,
                   stage_ids: Iterable[str]) -> None:
    """Make ``template_id``'s stages exactly ``stage_ids``."""
    linked = set(session.execute(select(stage_templates.c.stage_id)
                                 .where(stage_templates.c.template_id == template_id)).scalars())
    wanted = set(stage_ids)
    _relink(session, [(s, template_id) for s in linked - wanted], [(s, template_id) for s in wanted - linked])
    if template_kind in STAGE_TEMPLATE_KINDS:  # a stage does not list print templates
        for stage_id in sorted(linked ^ wanted):
            journal.changed(STAGE, stage_id)
