"""The triggers service's one protobuf mapper: the commands a firing sends, as envelopes.

A trigger acts as the actor ``trigger:<id>`` (named after the trigger), one chain deeper than
its cause; each command keeps the id planned for it (``engine.command_id``), so a re-run
firing sends the same ids. Commands go into the unit of work of the firing's transaction and
reach the outbox when it commits, together with the execution row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.records_pb2 import RecordCommand
from crm_events.envelope import new_envelope
from crm_events.topics import commands_for
from crm_kafka.unit_of_work import UnitOfWork

PRODUCER = "triggers"
PLURALS = {"lead": "leads", "opportunity": "opportunities"}


def trigger_actor(trigger: Any) -> Actor:
    """Who a trigger's commands are by: the trigger itself."""
    return Actor(user_id=f"trigger:{trigger.id}", name=getattr(trigger, "name", "") or "Automation",
                 kind=f"trigger:{trigger.id}")


def _causation(causing_event_id: str) -> str | None:
    # A time-based firing's cause ("time:<armed_at>") is no event id.
    return None if causing_event_id.startswith("time:") else causing_event_id


def command_envelope(trigger: Any, record_id: str, kind: str, item: Mapping[str, Any], causing_event_id: str,
                     depth: int, at: dt.datetime) -> Envelope:
    """The command of one planned action (``{type, stage_id|group_id, command_id}``)."""
    command = RecordCommand(record_id=record_id, kind=kind, action=item["type"], stage_id=item.get("stage_id", ""),
                            group_id=item.get("group_id", ""), trigger_id=trigger.id)
    return new_envelope(f"{kind}.command.{item['type']}", kind, record_id, 0, command, actor=trigger_actor(trigger),
                        causation_id=_causation(causing_event_id), trigger_depth=depth + 1, producer=PRODUCER,
                        event_id=item["command_id"], occurred_at=at)


def send_commands(session: Session, trigger: Any, record_id: str, kind: str, planned: Sequence[Mapping[str, Any]],
                  causing_event_id: str, depth: int, at: dt.datetime) -> None:
    """Send the planned commands to the record's service when ``session``'s transaction commits."""
    uow = UnitOfWork.of(session)
    topic = commands_for(PLURALS[kind])
    for item in planned:
        uow.add(topic, command_envelope(trigger, record_id, kind, item, causing_event_id, depth, at), key=record_id)
