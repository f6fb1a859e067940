"""triggers: rules, record states, schedule, executions, catalogue copy

Created 2026-11-23.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import ID, UTC, audit_columns, columns, new_tables, strings, table

revision = "triggers_0001"
down_revision = None
branch_labels = ("triggers",)

upgrade, downgrade = new_tables(
    table("catalogue_view", *strings(id=ID, kind=20, entity=40, code=100), *columns(sa.JSON(), "names"),
          *columns(sa.Integer(), "index"), *columns(sa.Boolean(), "active", "deleted"),
          *columns(sa.Integer(), "version"), *columns(sa.JSON(), "attributes"), *columns(UTC, "updated_at"),
          indexes=[("kind", "entity")]),
    table("executions", *strings(id=ID, trigger_id=ID, record_id=ID, kind=20, event_id=200),
          *columns(sa.JSON(), "actions"), *strings(result=20), *columns(sa.Text(), "reason", null=True),
          *columns(sa.Integer(), "trigger_depth"), *columns(UTC, "event_at", null=True), *columns(UTC, "at"),
          unique={"uq_executions_trigger_record_event": ("trigger_id", "record_id", "event_id")},
          named_indexes={"ix_executions_record_at": ("record_id", "at"),
                         "ix_executions_trigger_at": ("trigger_id", "at")}),
    table("record_states", *strings(id=ID, kind=20), *columns(sa.JSON(), "state"), *columns(sa.Integer(), "version"),
          *columns(UTC, "modified_at"), *columns(sa.Boolean(), "deleted")),
    table("schedule", *strings(trigger_id=ID, record_id=ID, kind=20), *columns(UTC, "armed_at", "due_at"),
          *columns(UTC, "fired_at", null=True), key=("trigger_id", "record_id"),
          named_indexes={"ix_schedule_due": ("fired_at", "due_at")}),
    table("trigger_rules", *strings(id=ID, name=200, kind=20), *columns(sa.Boolean(), "active"),
          *columns(sa.JSON(), "definition"), *audit_columns(), indexes=[("kind", "active")]),
)
