"""The webhooks service's tables: subscriptions, the event log, entity states, deliveries, attempts.

- ``events`` is the service's own log of the platform's events, in the order it took them in
  (``seq``, the feed's cursor), each as the public event (``body``: the JSON that is delivered).
  A record event also keeps the record's filter fields in columns, so a subscription's filter
  (the records' filter grammar) is checked by the database, with the list's own semantics, on
  the record as this event left it - at delivery time and again for a replay.
- ``entity_states`` keeps each record's and file's latest state, for the ``changes`` of the next
  event about it.
- ``deliveries`` is the queue: one row per (subscription, event), made in the consumer's
  transaction with its inbox row (so exactly once), ordered by ``id``; one record's deliveries to
  one endpoint go out in that order (``ordering_key``). Nothing is ever dropped from it unsent.
- ``attempts`` is the delivery log.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Date, Index, Integer, Numeric, String, Table, Text

from crm_kit.db import UTCDateTime, new_metadata

ID = 36
REF = 200
KEY = 100  # what an event is about: a record's or file's id, or a link's (``<file id>:<record id>``)
SEQ = BigInteger().with_variant(Integer, "sqlite")

metadata = new_metadata()

subscriptions = Table(
    "subscriptions", metadata,
    Column("id", String(ID), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("event_types", JSON, nullable=False),
    Column("filter", Text),
    Column("description", String(500), nullable=False),
    Column("active", Boolean, nullable=False),
    # Whose events it may carry: the creator's office, or every office (the creator's role sees all).
    Column("office_id", String(REF), nullable=False),
    Column("all_offices", Boolean, nullable=False),
    Column("secret", Text, nullable=False),  # encrypted (Fernet), never stored plain
    Column("secret_hint", String(8), nullable=False),
    Column("previous_secret", Text),  # encrypted; signs too until previous_valid_until
    Column("previous_valid_until", UTCDateTime),
    Column("failing_since", UTCDateTime),  # the first failed attempt since the last success
    Column("disabled_reason", Text),
    Column("disabled_at", UTCDateTime),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(REF), nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    Column("modified_by", String(REF), nullable=False),
)

events = Table(
    "events", metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("type", String(100), nullable=False),
    Column("entity", String(40), nullable=False),  # lead, opportunity, company, contact, ...
    Column("entity_id", String(KEY), nullable=False),
    # Who may see it: the record's office; NULL: shared files (companies, contacts, job orders,
    # placements); "" for something whose office is not known (only callers who see every office).
    Column("office_id", String(REF)),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),  # {"type", "timestamp", "data"} as delivered
    # A record event's filter fields (the records' filter grammar); NULL for other events.
    Column("title", String(500)),
    Column("stage_id", String(ID)),
    Column("stage_group_id", String(ID)),
    Column("owner_id", String(REF)),
    Column("source_id", String(ID)),
    Column("priority_id", String(ID)),
    Column("category_id", String(ID)),
    Column("procedure_id", String(ID)),
    Column("company_id", String(ID)),
    Column("contact_id", String(ID)),
    Column("lead_id", String(ID)),
    Column("converted_opportunity_id", String(ID)),
    Column("created_at", UTCDateTime),
    Column("modified_at", UTCDateTime),
    Column("stage_changed_at", UTCDateTime),
    Column("attribute_ids", JSON),
    Column("group_ids", JSON),
    Column("amount", Numeric(18, 2)),
    Column("probability", Integer),
    Column("currency", String(3)),
    Column("expected_close_date", Date),
    Index("ix_events_occurred_at", "occurred_at"),
)

entity_states = Table(
    "entity_states", metadata,
    Column("entity", String(40), primary_key=True),
    Column("id", String(KEY), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("office_id", String(REF)),
    Column("data", JSON, nullable=False),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("subscription_id", String(ID), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("ordering_key", String(150), nullable=False),  # "<entity>:<id>": one record's events in order
    Column("state", String(20), nullable=False),  # pending | delivered
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("leased_until", UTCDateTime),  # being sent by a worker until then (a crash lets it lapse)
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
    Index("ix_deliveries_order", "subscription_id", "ordering_key", "state", "id"),
    Index("ix_deliveries_subscription_event", "subscription_id", "event_seq"),
)

attempts = Table(
    "attempts", metadata,
    Column("id", SEQ, primary_key=True, autoincrement=True),
    Column("delivery_id", BigInteger, nullable=False),
    Column("subscription_id", String(ID), nullable=False),
    Column("event_id", String(ID), nullable=False),
    Column("event_type", String(100), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer),
    Column("duration_ms", Integer, nullable=False),
    Column("error", Text),
    Column("result", String(20), nullable=False),  # delivered | failed | error | refused
    Index("ix_attempts_subscription_id", "subscription_id", "id"),
)
