"""The linking service's tables: the files, the links, and its read model of records.

The link rules live in the database, so two concurrent requests cannot break them:
- a job order links to at most one lead and at most one opportunity:
  UNIQUE (job_order_id, record_kind) on ``record_job_orders``;
- a contact is linked to a record once: the primary key of ``record_contacts``;
- a record has at most one ``MAIN`` and one ``SIGN`` contact: ``record_contacts.exclusive_role``
  holds the role's code for those two roles (NULL for every other role, and for none), under
  UNIQUE (record_kind, record_id, exclusive_role) - NULLs are distinct on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from crm_catalogue_view import catalogue_view_table
from crm_kit.db import UTCDateTime, new_metadata

ID = 36
REF = 200

metadata = new_metadata()


def _audit() -> list[Column[Any]]:
    """version and who/when columns every file has (ETags, If-Match, history)."""
    return [
        Column("version", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(REF), nullable=False),
        Column("modified_at", UTCDateTime, nullable=False),
        Column("modified_by", String(REF), nullable=False),
    ]


companies = Table(
    "companies", metadata,
    Column("id", String(ID), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("website", String(500)),
    Column("phone", String(50)),
    Column("email", String(320)),
    Column("address", String(500)),
    Column("city", String(200)),
    Column("country", String(100)),
    *_audit(),
    Index("ix_companies_name", "name"),
)

contacts = Table(
    "contacts", metadata,
    Column("id", String(ID), primary_key=True),
    Column("first_name", String(200), nullable=False),
    Column("last_name", String(200), nullable=False),
    Column("email", String(320)),
    Column("phone", String(50)),
    Column("company_id", String(ID), ForeignKey("companies.id", ondelete="SET NULL")),
    *_audit(),
    Index("ix_contacts_last_name", "last_name"),
    Index("ix_contacts_company_id", "company_id"),
)

job_orders = Table(
    "job_orders", metadata,
    Column("id", String(ID), primary_key=True),
    Column("title", String(500), nullable=False),
    Column("company_id", String(ID), ForeignKey("companies.id", ondelete="SET NULL")),
    Column("description", Text),
    Column("status", String(50)),
    *_audit(),
    Index("ix_job_orders_company_id", "company_id"),
)

placements = Table(
    "placements", metadata,
    Column("id", String(ID), primary_key=True),
    Column("job_order_id", String(ID), ForeignKey("job_orders.id", ondelete="CASCADE"), nullable=False),
    Column("candidate_name", String(300), nullable=False),
    Column("start_date", Date),
    Column("end_date", Date),
    *_audit(),
    Index("ix_placements_job_order_id", "job_order_id"),
)

activities = Table(
    "activities", metadata,
    Column("id", String(ID), primary_key=True),
    Column("type", String(20), nullable=False),  # email | task | calendar | note
    Column("subject", String(500), nullable=False),
    Column("body", Text),
    Column("due_at", UTCDateTime),
    Column("starts_at", UTCDateTime),
    Column("ends_at", UTCDateTime),
    Column("lead_id", String(ID)),
    Column("opportunity_id", String(ID)),
    # The office of whoever created it: who may see it while it is on no record this service
    # knows (on a record, the record's office decides). NULL only for activities created before
    # offices were recorded and on no record then: shared, as they always were.
    Column("office_id", String(REF)),
    *_audit(),
    Index("ix_activities_lead_id", "lead_id"),
    Index("ix_activities_opportunity_id", "opportunity_id"),
    Index("ix_activities_office_id", "office_id"),
)

# A contact on a lead or opportunity, with a role from that kind's roles table (or none: a
# former main contact, or a contact carried over by a conversion without a matching role).
record_contacts = Table(
    "record_contacts", metadata,
    Column("record_kind", String(20), primary_key=True),  # "lead" | "opportunity"
    Column("record_id", String(ID), primary_key=True),
    Column("contact_id", String(ID), ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", String(ID)),
    # "MAIN" | "SIGN" when role_id is that role, else NULL: at most one of each per record.
    Column("exclusive_role", String(10)),
    Column("linked_at", UTCDateTime, nullable=False),
    Column("linked_by", String(REF), nullable=False),
    Index("ix_record_contacts_contact_id", "contact_id"),
    UniqueConstraint("record_kind", "record_id", "exclusive_role", name="uq_record_contacts_exclusive_role"),
)

# A job order on a lead or opportunity: at most one of each kind per job order.
record_job_orders = Table(
    "record_job_orders", metadata,
    Column("record_kind", String(20), primary_key=True),
    Column("record_id", String(ID), primary_key=True),
    Column("job_order_id", String(ID), ForeignKey("job_orders.id", ondelete="CASCADE"), primary_key=True),
    Column("linked_at", UTCDateTime, nullable=False),
    Column("linked_by", String(REF), nullable=False),
    UniqueConstraint("job_order_id", "record_kind", name="uq_record_job_orders_job_order_kind"),
)

# This service's view of leads and opportunities, kept from their events.
record_views = Table(
    "record_views", metadata,
    Column("id", String(ID), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("title", String(500), nullable=False),
    Column("owner_id", String(REF), nullable=False),
    Column("office_id", String(REF), nullable=False),
    Column("stage_id", String(ID)),
    Column("stage_group_id", String(ID)),
    Column("company_id", String(ID)),
    Column("contact_id", String(ID)),
    Column("lead_id", String(ID)),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_record_views_company_id", "company_id"),
)

# What happened to a record, newest first: from the records' events and this service's own
# changes (links, activities), written in the same transaction as what it records.
timeline = Table(
    "timeline", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("record_kind", String(20), nullable=False),
    Column("record_id", String(ID), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("type", String(50), nullable=False),  # stage_changed, contact_linked, activity_added, converted, ...
    Column("data", JSON, nullable=False),
    Column("event_id", String(ID)),  # the causing event, when there is one
    Index("ix_timeline_record", "record_kind", "record_id", "at"),
)

# Bulk create's idempotency keys (imports): an office's key names the company or contact its item
# made, so a re-run creates nothing twice. A key whose file was deleted since is free again.
import_keys = Table(
    "import_keys", metadata,
    Column("entity", String(20), primary_key=True),  # "company" | "contact"
    Column("office_id", String(REF), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("file_id", String(ID), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

catalogue_view = catalogue_view_table(metadata)

FILE_TABLES = {"companies": companies, "contacts": contacts, "job-orders": job_orders, "placements": placements,
               "activities": activities}
