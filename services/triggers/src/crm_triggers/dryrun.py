"""``POST /v1/triggers/{id}/dry-run``: would the trigger fire for a record now, and what would
it send? Reads the rule, this service's view of the record, its schedule and the catalogue
copy; writes nothing."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from sqlalchemy import select

from crm_kit.db import utcnow
from crm_kit.web import Api, RequestContext, limits
from crm_kit.web.fields import Timestamp
from crm_triggers.engine import TIME_TYPE, conditions_failing, plan_actions
from crm_triggers.errors import UnknownRecord, UnknownTrigger
from crm_triggers.tables import record_states, schedule, trigger_rules

PERMISSION = "triggers:admin"


class DryRunIn(Schema):
    record_id = fields.String(required=True, validate=limits.ID,
                              metadata={"description": "A lead or opportunity of the trigger's kind."})


class DryRunOut(Schema):
    trigger_id = fields.String(validate=limits.ID)
    record_id = fields.String(validate=limits.ID)
    would_fire = fields.Boolean(metadata={"description": "Whether it would fire for the record now."})
    reasons = fields.List(fields.String(validate=limits.MESSAGE), metadata={"description": "Why it would (not) fire."})
    actions = fields.List(fields.Dict(), validate=validate.Length(max=10),
                          metadata={"description": "The commands it would send: {type, stage_id|group_id}."})
    due_at = Timestamp(allow_none=True, metadata={"description": "Time-based triggers: when it is due."})


_IN_STATE = {  # event type -> (definition key, record field, what "in that state" means)
    "stage_changed": ("stage_id", "stage_id", "in the stage"),
    "stage_group_changed": ("stage_group_id", "stage_group_id", "in the stage group"),
    "added_to_group": ("group_id", "group_ids", "in the group"),
}


def evaluate(session: Any, trigger: Any, record: Any) -> dict[str, Any]:
    """The dry run's answer for ``trigger`` on ``record`` (a ``record_states`` row)."""
    definition = trigger.definition or {}
    event = definition.get("event") or {}
    event_type = event.get("type")
    state = record.state or {}
    reasons: list[str] = []
    due_at = None
    matches = True
    if not trigger.active:
        matches = False
        reasons.append("The trigger is inactive.")
    failing = conditions_failing(definition.get("conditions") or {}, state)
    reasons.extend(failing)
    matches = matches and not failing
    if event_type == TIME_TYPE:
        row = session.execute(select(schedule).where(schedule.c.trigger_id == trigger.id,
                                                     schedule.c.record_id == record.id)).first()
        if row is None:
            matches = False
            reasons.append("Not armed for this record: it arms on the record's next modification.")
        elif row.fired_at is not None:
            matches = False
            reasons.append(f"It fired already for the modification at {row.armed_at.isoformat()}; it fires again "
                           "only after the record is modified again (not by its own actions).")
        else:
            due_at = row.due_at
            if row.due_at <= utcnow():
                reasons.append(f"Due since {row.due_at.isoformat()} (unmodified since {row.armed_at.isoformat()}).")
            else:
                matches = False
                reasons.append(f"Not due yet: due at {row.due_at.isoformat()} if the record stays unmodified.")
    else:
        reasons.append(f"Event triggers fire on the change itself ({event_type}), when it happens; this shows "
                       "whether the record is now in the state that change leads to.")
        if event_type in _IN_STATE:
            key, field, label = _IN_STATE[event_type]
            wanted = event.get(key)
            current = state.get(field)
            in_state = wanted in (current or []) if field == "group_ids" else current == wanted
            if in_state:
                reasons.append(f"The record is {label} {wanted!r}.")
            else:
                matches = False
                reasons.append(f"The record is not {label} {wanted!r}.")
        elif event_type != "created":
            matches = False
            reasons.append(f"Unknown event type {event_type!r}.")
    actions: list[dict[str, Any]] = []
    if matches:
        planned, problem = plan_actions(session, trigger, record.id, record.kind, "dry-run")
        if problem:
            reasons.append(f"Its execution would fail: {problem}")
        actions = [{k: v for k, v in item.items() if k != "command_id"} for item in planned]
    return {"trigger_id": trigger.id, "record_id": record.id, "would_fire": matches, "reasons": reasons,
            "actions": actions, "due_at": due_at}


def dry_run_of(session: Any, trigger_id: str, record_id: str) -> dict[str, Any]:
    """The dry run of the trigger ``trigger_id`` for the live record ``record_id`` of its kind."""
    trigger = session.execute(select(trigger_rules).where(trigger_rules.c.id == trigger_id)).first()
    if trigger is None:
        raise UnknownTrigger(f"There is no trigger {trigger_id!r}.")
    record = session.execute(select(record_states).where(record_states.c.id == record_id,
                                                         record_states.c.deleted.is_(False))).first()
    if record is None or record.kind != trigger.kind:
        raise UnknownRecord(trigger.kind, record_id)
    return evaluate(session, trigger, record)


def build_dryrun_api() -> Api:
    api = Api("triggers")

    @api.post("/v1/triggers/<trigger_id>/dry-run", permission=PERMISSION, body=DryRunIn, response=DryRunOut,
              status=200, idempotent=False, errors=(404, 422))
    def dry_run(ctx: RequestContext, trigger_id: str) -> Any:
        """Whether the trigger would fire for a record now, and what it would do (changes nothing)"""
        return dry_run_of(ctx.session, trigger_id, ctx.body["record_id"])

    return api
