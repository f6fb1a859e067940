"""The triggers service's tables: rules, its view of records, the schedule, executions.

Exactly once lives in the database:
- one execution per (trigger, record, causing event): UNIQUE on ``executions``; a
  redelivered event or a restarted worker finds it there and does nothing again;
- one due firing per (trigger, record): the primary key of ``schedule``, whose ``armed_at``
  says which modification it belongs to, so a firing is never repeated for the same one.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Index, Integer, String, Table, Text, UniqueConstraint

from crm_catalogue_view import catalogue_view_table
from crm_kit.db import UTCDateTime, new_metadata

ID = 36
REF = 200

metadata = new_metadata()

# A rule: {"event": {...}, "conditions": {...}, "actions": [...]} in ``definition``.
trigger_rules = Table(
    "trigger_rules", metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(20), nullable=False),  # "lead" | "opportunity"
    Column("active", Boolean, nullable=False),
    Column("definition", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(REF), nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    Column("modified_by", String(REF), nullable=False),
    Index("ix_trigger_rules_kind_active", "kind", "active"),
)

# This service's view of every lead and opportunity, kept from their events: what
# conditions are checked against, and what time-based triggers count from.
record_states = Table(
    "record_states", metadata,
    Column("id", String(ID), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("state", JSON, nullable=False),  # the list-filter fields: stage_id, source_id, group_ids, ...
    Column("version", Integer, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),  # the record's own last modification
    Column("deleted", Boolean, nullable=False),
)

# Time-based firings: one row per (trigger, record), re-armed by each modification.
schedule = Table(
    "schedule", metadata,
    Column("trigger_id", String(ID), primary_key=True),
    Column("record_id", String(ID), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("armed_at", UTCDateTime, nullable=False),  # the modification it counts from
    Column("due_at", UTCDateTime, nullable=False),
    Column("fired_at", UTCDateTime),  # null: still due
    Index("ix_schedule_due", "fired_at", "due_at"),
)

executions = Table(
    "executions", metadata,
    Column("id", String(ID), primary_key=True),
    Column("trigger_id", String(ID), nullable=False),
    Column("record_id", String(ID), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("event_id", String(200), nullable=False),  # the causing event (or "time:<armed_at>")
    Column("actions", JSON, nullable=False),  # the commands sent: [{type, stage_id|group_id, command_id}]
    Column("result", String(20), nullable=False),  # applied | failed | skipped_loop
    Column("reason", Text),
    Column("trigger_depth", Integer, nullable=False),
    Column("event_at", UTCDateTime),  # when the causing event happened
    Column("at", UTCDateTime, nullable=False),
    UniqueConstraint("trigger_id", "record_id", "event_id", name="uq_executions_trigger_record_event"),
    Index("ix_executions_trigger_at", "trigger_id", "at"),
    Index("ix_executions_record_at", "record_id", "at"),
)

catalogue_view = catalogue_view_table(metadata)
