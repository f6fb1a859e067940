"""webhooks: subscriptions, events, entity states, deliveries, attempts

Created 2026-12-07.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import ID, REF, UTC, audit_columns, columns, new_tables, strings, table

revision = "webhooks_0001"
down_revision = None
branch_labels = ("webhooks",)

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _seq(name: str) -> sa.Column:
    return sa.Column(name, SEQ, nullable=False, autoincrement=True)


upgrade, downgrade = new_tables(
    table("subscriptions", *strings(id=ID, url=2000), *columns(sa.JSON(), "event_types"),
          *columns(sa.Text(), "filter", null=True), *strings(description=500), *columns(sa.Boolean(), "active"),
          *strings(office_id=REF), *columns(sa.Boolean(), "all_offices"), *columns(sa.Text(), "secret"),
          *strings(secret_hint=8), *columns(sa.Text(), "previous_secret", null=True),
          *columns(UTC, "previous_valid_until", "failing_since", null=True),
          *columns(sa.Text(), "disabled_reason", null=True), *columns(UTC, "disabled_at", null=True),
          *audit_columns()),
    table("events", _seq("seq"), *strings(event_id=ID, type=100, entity=40, entity_id=ID),
          *strings(office_id=REF, null=True), *columns(UTC, "occurred_at"), *columns(sa.Text(), "body"),
          *strings(title=500, stage_id=ID, stage_group_id=ID, owner_id=REF, source_id=ID, priority_id=ID,
                   category_id=ID, procedure_id=ID, company_id=ID, contact_id=ID, lead_id=ID,
                   converted_opportunity_id=ID, null=True),
          *columns(UTC, "created_at", "modified_at", "stage_changed_at", null=True),
          *columns(sa.JSON(), "attribute_ids", "group_ids", null=True),
          *columns(sa.Numeric(18, 2), "amount", null=True), *columns(sa.Integer(), "probability", null=True),
          *strings(currency=3, null=True), *columns(sa.Date(), "expected_close_date", null=True),
          key=("seq",), unique={"uq_events_event_id": ("event_id",)},
          named_indexes={"ix_events_occurred_at": ("occurred_at",)}),
    table("entity_states", *strings(entity=40, id=ID), *columns(sa.BigInteger(), "version"),
          *strings(office_id=REF, null=True), *columns(sa.JSON(), "data"), key=("entity", "id")),
    table("deliveries", _seq("id"), *strings(subscription_id=ID), *columns(sa.BigInteger(), "event_seq"),
          *strings(event_id=ID, event_type=100, ordering_key=100, state=20), *columns(sa.Integer(), "attempts"),
          *columns(UTC, "next_attempt_at"), *columns(UTC, "leased_until", null=True), *columns(UTC, "created_at"),
          *columns(UTC, "delivered_at", null=True),
          named_indexes={"ix_deliveries_due": ("state", "next_attempt_at"),
                         "ix_deliveries_order": ("subscription_id", "ordering_key", "state", "id"),
                         "ix_deliveries_subscription_event": ("subscription_id", "event_seq")}),
    table("attempts", _seq("id"), *columns(sa.BigInteger(), "delivery_id"),
          *strings(subscription_id=ID, event_id=ID, event_type=100), *columns(sa.Integer(), "attempt"),
          *columns(UTC, "at"), *columns(sa.Integer(), "status_code", null=True), *columns(sa.Integer(), "duration_ms"),
          *columns(sa.Text(), "error", null=True), *strings(result=20),
          named_indexes={"ix_attempts_subscription_id": ("subscription_id", "id")}),
)
