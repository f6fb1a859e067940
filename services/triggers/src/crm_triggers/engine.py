"""Evaluation of trigger rules from record events, and firing with exactly-once actions.

``record_event_handler`` runs in the ``evaluate`` consumer (the record topics, ``RECORD_TOPICS``)
inside the consumer's transaction with its inbox. It keeps ``record_states``, arms the
time-based triggers' ``schedule`` rows and fires the event triggers whose event is this one.

``fire`` turns a firing into commands on the record service's command topic (``commands_for``)
through the transaction's unit of work, with command ids derived from (trigger, record,
causing event), and one ``executions`` row (UNIQUE per trigger, record and causing event): a
redelivered event or a re-run firing finds the row and does nothing again.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_catalogue_view import CatalogueReferenceError, CatalogueView
from crm_kit.db import insert_on_conflict, utcnow
from crm_triggers.events import PLURALS, send_commands
from crm_triggers.records import RECORDS, is_converted, modified_at, occurred_at, state_of
from crm_triggers.tables import catalogue_view, executions, record_states, schedule, trigger_rules

log = logging.getLogger(__name__)

# Command ids are uuid5(NAMESPACE, "<trigger>:<record>:<causing event>:<action index>").
NAMESPACE = uuid.UUID("5b0f4a8e-3c1d-4e7a-9f2b-7d6c5e4a3b21")
MAX_DEPTH = 5
# Event types (after "<kind>.") that are a modification of the record.
MODIFICATIONS = frozenset({"created", "updated", "stage_changed", "stage_group_changed", "added_to_group",
                           "removed_from_group", "converted"})
EVENT_TYPES = ("created", "added_to_group", "stage_changed", "stage_group_changed")
TIME_TYPE = "not_modified_for"

EXECUTIONS = Counter("crm_trigger_executions_total", "Trigger executions, by result (applied, failed, skipped_loop).",
                     ["result"])
EVALUATION_LATENCY = Histogram(
    "crm_trigger_evaluation_latency_seconds",
    "From the causing event (or the due time of a time-based firing) to its commands in the outbox.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
SCHEDULER_LAG = Gauge("crm_trigger_scheduler_lag_seconds", "How late the oldest due time-based firing is (0: none).",
                      multiprocess_mode="max")

_VIEW = CatalogueView(catalogue_view)


def conditions_failing(conditions: Mapping[str, Any], state: Mapping[str, Any]) -> list[str]:
    """Why the conditions do not hold on ``state`` (empty: they all hold).

    ``group_id``: the record is in that group; other keys: equality with the record's field
    (a list value: one of them).
    """
    failing = []
    for key, wanted in (conditions or {}).items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if key == "group_id":
            if not set(options) & set(state.get("group_ids") or []):
                failing.append(f"condition group_id={wanted!r}: the record is not in that group")
        elif state.get(key) not in options:
            failing.append(f"condition {key}={wanted!r}: the record has {state.get(key)!r}")
    return failing


def event_matches(event: Mapping[str, Any], what: str, envelope: Envelope) -> bool:
    """Whether ``<kind>.<what>`` is the event the trigger's ``event`` names (the change itself)."""
    kind = event.get("type")
    if kind == "created":
        return what == "created"
    if kind == "added_to_group":
        return what == "added_to_group" and envelope.group_changed.group_id == event.get("group_id")
    if kind == "stage_changed":
        return what == "stage_changed" and envelope.stage_changed.to_stage_id == event.get("stage_id")
    if kind == "stage_group_changed":
        return (what == "stage_group_changed"
                and envelope.stage_changed.to_stage_group_id == event.get("stage_group_id"))
    return False


def triggers_of(session: Session, kind: str) -> list[Any]:
    """The kind's triggers, read once per transaction: a consumer's batch is one (and a trigger
    changed meanwhile counts from the next batch, as if the batch had come a moment earlier)."""
    known = session.info.setdefault("crm_triggers_of", {})
    if kind not in known:
        known[kind] = list(session.execute(select(trigger_rules).where(trigger_rules.c.kind == kind)
                                           .order_by(trigger_rules.c.id)).all())
    return known[kind]  # type: ignore[no-any-return]


def arm(session: Session, trigger: Any, record_id: str, kind: str, armed_at: dt.datetime) -> None:
    """Arm the time-based ``trigger`` for the record's modification at ``armed_at`` (an older or
    the same modification again: nothing changes, so a firing is never repeated for it)."""
    due_at = armed_at + dt.timedelta(seconds=float(trigger.definition["event"].get("seconds") or 0))
    current = session.execute(select(schedule.c.armed_at).where(schedule.c.trigger_id == trigger.id,
                                                                schedule.c.record_id == record_id)).first()
    if current is None:
        session.execute(schedule.insert().values(trigger_id=trigger.id, record_id=record_id, kind=kind,
                                                 armed_at=armed_at, due_at=due_at, fired_at=None))
    elif current.armed_at < armed_at:
        session.execute(update(schedule).where(schedule.c.trigger_id == trigger.id,
                                               schedule.c.record_id == record_id)
                        .values(kind=kind, armed_at=armed_at, due_at=due_at, fired_at=None))


def arm_existing(session: Session, trigger: Any) -> int:
    """Arm a (new or re-activated) time-based trigger for every record it does not know yet,
    counting from each record's last modification. For the rules API; returns how many."""
    known = select(schedule.c.record_id).where(schedule.c.trigger_id == trigger.id)
    rows = session.execute(select(record_states.c.id, record_states.c.modified_at).where(
        record_states.c.kind == trigger.kind, record_states.c.deleted.is_(False),
        record_states.c.id.not_in(known))).all()
    for row in rows:
        arm(session, trigger, row.id, trigger.kind, row.modified_at)
    return len(rows)


# --------------------------------------------------------------------------- the handler

def record_event_handler(session: Session, envelope: Envelope) -> None:
    """The ``evaluate`` consumer's handler for the record topics (leads and opportunities)."""
    kind, _, what = envelope.event_type.partition(".")
    if kind not in PLURALS:
        return
    seen = RECORDS.apply(session, envelope)
    if seen.deleted is not None:
        session.execute(delete(schedule).where(schedule.c.record_id == seen.deleted))
        return
    # Not stored: no record, deleted meanwhile, or an older version than the one we know. The
    # same version again is stored and evaluated again (a firing happens once per causing event).
    if seen.record is None or not seen.stored:
        return
    record = seen.record
    event_at = occurred_at(envelope)
    armed_at = modified_at(record, envelope)
    state = state_of(record)
    for trigger in triggers_of(session, kind):
        event = trigger.definition.get("event") or {}
        if event.get("type") == TIME_TYPE:
            # Inactive ones are armed too, so their schedule always counts from the latest
            # modification; the scheduler fires only active ones.
            if what in MODIFICATIONS and envelope.actor.kind != f"trigger:{trigger.id}":
                arm(session, trigger, record.id, kind, armed_at)
        elif trigger.active and event_matches(event, what, envelope) and not conditions_failing(
                trigger.definition.get("conditions") or {}, state):
            fire(session, trigger, record.id, kind, envelope.event_id, event_at, envelope.trigger_depth)


# --------------------------------------------------------------------------- firing

def command_id(trigger_id: str, record_id: str, causing_event_id: str, index: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{trigger_id}:{record_id}:{causing_event_id}:{index}"))


def plan_actions(session: Session, trigger: Any, record_id: str, kind: str,
                 causing_event_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """The commands the trigger's actions become, with their ids; or the reason it cannot act."""
    planned = []
    for index, action in enumerate(trigger.definition.get("actions") or []):
        action_type = action.get("type")
        item = {key: action[key] for key in ("type", "stage_id", "group_id") if action.get(key)}
        try:
            if action_type == "set_stage":
                stage = _VIEW.require(session, action.get("stage_id") or "", kind=kind, entity="stage",
                                      field_name="stage_id")
                if not stage.attr("is_end") and is_converted(session, record_id):
                    return [], (f"Action {index} (set_stage): the lead was converted and stays in end stages; "
                                f"{stage.code!r} is not an end stage.")
            elif action_type in ("add_to_group", "remove_from_group"):
                _VIEW.require(session, action.get("group_id") or "", kind=kind, entity="groups",
                              field_name="group_id")
            else:
                return [], f"Action {index}: unknown type {action_type!r}."
        except CatalogueReferenceError as exc:
            return [], f"Action {index} ({action_type}): {exc.message}"
        planned.append({**item, "command_id": command_id(trigger.id, record_id, causing_event_id, index)})
    return planned, None


_FIRST_EXECUTIONS: dict[str, Any] = {}


def _first_execution(session: Session) -> Any:
    """``INSERT INTO executions ... ON CONFLICT DO NOTHING RETURNING id``, its columns from the
    parameters it runs with: built once per dialect (built per firing with the values in it, it cost
    more CPU than running it)."""
    dialect = session.get_bind().dialect.name
    if dialect not in _FIRST_EXECUTIONS:
        _FIRST_EXECUTIONS[dialect] = insert_on_conflict(session, executions).on_conflict_do_nothing() \
            .returning(executions.c.id)
    return _FIRST_EXECUTIONS[dialect]


def fire(session: Session, trigger: Any, record_id: str, kind: str, causing_event_id: str,
         event_at: dt.datetime | None, depth: int) -> str | None:
    """Fire ``trigger`` for the record once per causing event; the execution's result, or None
    when this firing happened already (a redelivery)."""
    reason: str | None = None
    planned: list[dict[str, Any]] = []
    if depth >= MAX_DEPTH:
        result = "skipped_loop"
        reason = f"Trigger chain reached depth {depth} (the limit is {MAX_DEPTH}); the chain stops here."
    else:
        planned, reason = plan_actions(session, trigger, record_id, kind, causing_event_id)
        result = "failed" if reason else "applied"
    now = utcnow()
    # Once per (trigger, record, causing event), whoever comes first - a redelivery, or the
    # scheduler and the evaluation at once: UNIQUE (trigger, record, event) keeps the first.
    first = session.execute(_first_execution(session), {
        "id": str(uuid.uuid4()), "trigger_id": trigger.id, "record_id": record_id, "kind": kind,
        "event_id": causing_event_id, "actions": planned, "result": result, "reason": reason,
        "trigger_depth": depth, "event_at": event_at, "at": now}).first()
    if first is None:
        return None
    if result == "applied":
        send_commands(session, trigger, record_id, kind, planned, causing_event_id, depth, now)
        if event_at is not None:
            EVALUATION_LATENCY.observe(max(0.0, (now - event_at).total_seconds()))
    else:
        log.info("trigger %s on %s %s: %s (%s)", trigger.id, kind, record_id, result, reason)
    EXECUTIONS.labels(result).inc()
    return result

