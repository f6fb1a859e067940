"""HTTP routes of the triggers service: trigger rules (CRUD) and the executions log.

Everything needs ``triggers:admin``. Saving a trigger validates its ids against the catalogue
copy (422) and reports loops it is part of in ``warnings`` (saving is still allowed);
``?validate_only=true`` on POST and PATCH does the same checks and answers the warnings
without saving (200), so an editor can show them before the save.
Deactivating or deleting a trigger removes its due time-based firings.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Row, and_, delete, select, true, update

from crm_catalogue_view import CatalogueView
from crm_kit.db import utcnow
from crm_kit.web import Api, ListResult, Reply, RequestContext, SortKey, check_if_match
from crm_triggers import rules
from crm_triggers.errors import KindCannotChange, UnknownTrigger
from crm_triggers.schemas import (
    ExecutionOut,
    ExecutionQuery,
    TriggerExecutionQuery,
    TriggerIn,
    TriggerOut,
    TriggerPatch,
    TriggerQuery,
    ValidateQuery,
)
from crm_triggers.tables import executions, schedule, trigger_rules

ADMIN = "triggers:admin"
BASE = "/v1/triggers"
_DEFINITION = ("event", "conditions", "actions")


def present(row: Row[Any]) -> dict[str, Any]:
    definition = row.definition or {}
    return {
        "id": row.id, "name": row.name, "kind": row.kind, "active": row.active,
        "event": definition.get("event", {}), "conditions": definition.get("conditions", {}),
        "actions": definition.get("actions", []), "version": row.version,
        "created_at": row.created_at, "created_by": row.created_by,
        "modified_at": row.modified_at, "modified_by": row.modified_by,
    }


def _load(ctx: RequestContext, trigger_id: str) -> Row[Any]:
    row = ctx.session.execute(select(trigger_rules).where(trigger_rules.c.id == trigger_id)).first()
    if row is None:
        raise UnknownTrigger(f"No trigger with id {trigger_id!r}.")
    return row


def _drop_due_firings(ctx: RequestContext, trigger_id: str, *, all_rows: bool = False) -> None:
    """No time-based firing is due for the trigger any more (fired rows stay unless ``all_rows``:
    they say which modification already fired, should it be activated again)."""
    stmt = delete(schedule).where(schedule.c.trigger_id == trigger_id)
    if not all_rows:
        stmt = stmt.where(schedule.c.fired_at.is_(None))
    ctx.session.execute(stmt)


def _reschedule(ctx: RequestContext, trigger_id: str, old_event: dict[str, Any], new_event: dict[str, Any]) -> None:
    """Keep due firings in step with a changed event."""
    if old_event == new_event or old_event.get("type") != "not_modified_for":
        return
    if new_event.get("type") != "not_modified_for":
        _drop_due_firings(ctx, trigger_id)
        return
    seconds = dt.timedelta(seconds=new_event["seconds"])
    due = ctx.session.execute(select(schedule.c.record_id, schedule.c.armed_at)
                              .where(schedule.c.trigger_id == trigger_id, schedule.c.fired_at.is_(None))).all()
    for record_id, armed_at in due:
        ctx.session.execute(update(schedule).where(schedule.c.trigger_id == trigger_id,
                                                   schedule.c.record_id == record_id)
                            .values(due_at=armed_at + seconds))


def build_triggers_api(view: CatalogueView | None = None) -> Api:
    """Trigger rules and their executions."""
    api = Api("triggers")
    catalogue = view or CatalogueView()

    def saved(ctx: RequestContext, trigger_id: str) -> dict[str, Any]:
        row = _load(ctx, trigger_id)
        out = present(row)
        out["warnings"] = rules.loop_warnings(ctx.session, catalogue, row.kind, row.id) if row.active else []
        return out

    def checked(ctx: RequestContext, trigger_id: str, kind: str, name: str, active: bool,
                definition: dict[str, Any]) -> Reply:
        """``?validate_only=true``: what saving would answer (warnings included), saving nothing."""
        candidate = rules.Rule(trigger_id, name, definition["event"], definition["actions"])
        warnings = rules.loop_warnings(ctx.session, catalogue, kind, trigger_id, candidate) if active else []
        return Reply({"name": name, "kind": kind, "active": active, **definition, "warnings": warnings}, status=200)

    @api.post(BASE, permission=ADMIN, body=TriggerIn, query=ValidateQuery, response=TriggerOut,
              summary="Create a trigger (?validate_only=true: check it and answer its loop warnings, unsaved)",
              example={"name": "Stale leads back to the pool", "kind": "lead", "active": False,
                       "event": {"type": "not_modified_for", "seconds": 1209600},
                       "actions": [{"type": "remove_from_group", "group_id": "5a0f3c1e-7b2d-4c9a-8e6f-1d2c3b4a5e6f"}]}
              )
    def create_trigger(ctx: RequestContext) -> Reply:
        body = ctx.body
        definition = {key: body[key] for key in _DEFINITION}
        rules.validate_definition(ctx.session, catalogue, body["kind"], definition)
        if ctx.query.get("validate_only"):
            return checked(ctx, "(new)", body["kind"], body["name"], body["active"], definition)
        trigger_id, now, user = str(uuid.uuid4()), utcnow(), ctx.user.user_id
        ctx.session.execute(trigger_rules.insert().values(
            id=trigger_id, name=body["name"], kind=body["kind"], active=body["active"], definition=definition,
            version=1, created_at=now, created_by=user, modified_at=now, modified_by=user))
        return Reply(saved(ctx, trigger_id), headers={"Location": f"{BASE}/{trigger_id}"})

    @api.get(BASE, permission=ADMIN, query=TriggerQuery, response=TriggerOut, many=True,
             summary="List triggers, by name")
    def list_triggers(ctx: RequestContext) -> ListResult:
        filters = {k: ctx.query[k] for k in ("kind", "active") if k in ctx.query}
        stmt = select(trigger_rules).where(*(trigger_rules.c[k] == v for k, v in filters.items()))
        page = ctx.page(stmt, [SortKey("name", trigger_rules.c.name), SortKey("id", trigger_rules.c.id)],
                        fingerprint=repr(sorted(filters.items())))
        return ListResult([present(r) for r in page.rows], page.next_page_token)

    @api.get(f"{BASE}/<trigger_id>", permission=ADMIN, response=TriggerOut, summary="Read a trigger")
    def get_trigger(ctx: RequestContext, trigger_id: str) -> dict[str, Any]:
        return present(_load(ctx, trigger_id))

    @api.patch(f"{BASE}/<trigger_id>", permission=ADMIN, body=TriggerPatch(partial=True), query=ValidateQuery,
               response=TriggerOut,
               summary="Change a trigger (event, conditions and actions are replaced whole)")
    def patch_trigger(ctx: RequestContext, trigger_id: str) -> dict[str, Any] | Reply:
        row = _load(ctx, trigger_id)
        validate_only = ctx.query.get("validate_only")
        if not validate_only:
            check_if_match(row.version)
        body = ctx.body
        if "kind" in body and body["kind"] != row.kind:
            raise KindCannotChange()
        old = present(row)
        definition = {key: body.get(key, old[key]) for key in _DEFINITION}
        if any(key in body for key in _DEFINITION):
            rules.validate_definition(ctx.session, catalogue, row.kind, definition)
        active = body.get("active", row.active)
        if validate_only:
            return checked(ctx, row.id, row.kind, body.get("name", row.name), active, definition)
        ctx.session.execute(update(trigger_rules).where(trigger_rules.c.id == row.id).values(
            name=body.get("name", row.name), active=active, definition=definition, version=row.version + 1,
            modified_at=utcnow(), modified_by=ctx.user.user_id))
        if not active:
            _drop_due_firings(ctx, row.id)
        else:
            _reschedule(ctx, row.id, old["event"], definition["event"])
        return saved(ctx, row.id)

    @api.delete(f"{BASE}/<trigger_id>", permission=ADMIN, status=204, summary="Delete a trigger")
    def delete_trigger(ctx: RequestContext, trigger_id: str) -> None:
        row = _load(ctx, trigger_id)
        check_if_match(row.version)
        _drop_due_firings(ctx, row.id, all_rows=True)
        ctx.session.execute(delete(trigger_rules).where(trigger_rules.c.id == row.id))

    def page_of_executions(ctx: RequestContext, where: Any, fingerprint: str) -> ListResult:
        stmt = select(executions).where(where)
        page = ctx.page(stmt, [SortKey("at", executions.c.at, descending=True),
                               SortKey("id", executions.c.id, descending=True)], fingerprint=fingerprint)
        return ListResult([r._asdict() for r in page.rows], page.next_page_token)

    @api.get(f"{BASE}/<trigger_id>/executions", permission=ADMIN, query=TriggerExecutionQuery,
             response=ExecutionOut, many=True, summary="Executions of a trigger, newest first (?result=)")
    def trigger_executions(ctx: RequestContext, trigger_id: str) -> ListResult:
        _load(ctx, trigger_id)
        where = [executions.c.trigger_id == trigger_id]
        if "result" in ctx.query:
            where.append(executions.c.result == ctx.query["result"])
        return page_of_executions(ctx, and_(*where), f"trigger:{trigger_id}:{ctx.query.get('result')}")

    @api.get("/v1/trigger-executions", permission=ADMIN, query=ExecutionQuery, response=ExecutionOut, many=True,
             summary="Trigger executions, newest first, by record_id, trigger_id and result (each optional)")
    def record_executions(ctx: RequestContext) -> ListResult:
        filters = {k: ctx.query[k] for k in ("record_id", "trigger_id", "result") if k in ctx.query}
        return page_of_executions(ctx, and_(true(), *(executions.c[k] == v for k, v in filters.items())),
                                  repr(sorted(filters.items())))

    return api
