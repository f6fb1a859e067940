"""linking: files, links, record views, timeline, catalogue copy

Created 2026-11-23.
"""

import sqlalchemy as sa

from crm_kit.migration_helpers import ID, REF, UTC, audit_columns, columns, new_tables, strings, table

revision = "linking_0001"
down_revision = None
branch_labels = ("linking",)

upgrade, downgrade = new_tables(
    table("activities", *strings(id=ID, type=20, subject=500), *columns(sa.Text(), "body", null=True),
          *columns(UTC, "due_at", "starts_at", "ends_at", null=True),
          *strings(lead_id=ID, opportunity_id=ID, null=True), *audit_columns(),
          indexes=["lead_id", "opportunity_id"]),
    table("catalogue_view", *strings(id=ID, kind=20, entity=40, code=100), *columns(sa.JSON(), "names"),
          *columns(sa.Integer(), "index"), *columns(sa.Boolean(), "active", "deleted"),
          *columns(sa.Integer(), "version"), *columns(sa.JSON(), "attributes"), *columns(UTC, "updated_at"),
          indexes=[("kind", "entity")]),
    table("companies", *strings(id=ID, name=300),
          *strings(website=500, phone=50, email=320, address=500, city=200, country=100, null=True),
          *audit_columns(), indexes=["name"]),
    table("record_views", *strings(id=ID, kind=20, title=500, owner_id=REF, office_id=REF),
          *strings(stage_id=ID, stage_group_id=ID, company_id=ID, contact_id=ID, lead_id=ID, null=True),
          *columns(sa.Integer(), "version"), *columns(UTC, "updated_at"), indexes=["company_id"]),
    table("timeline",
          sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
          *strings(record_kind=20, record_id=ID), *columns(UTC, "at"), *strings(type=50),
          *columns(sa.JSON(), "data"), *strings(event_id=ID, null=True),
          named_indexes={"ix_timeline_record": ["record_kind", "record_id", "at"]}),
    table("contacts", *strings(id=ID, first_name=REF, last_name=REF),
          *strings(email=320, phone=50, company_id=ID, null=True), *audit_columns(),
          references={"company_id": "companies"}, ondelete="SET NULL", indexes=["company_id", "last_name"]),
    table("job_orders", *strings(id=ID, title=500), *strings(company_id=ID, null=True),
          *columns(sa.Text(), "description", null=True), *strings(status=50, null=True), *audit_columns(),
          references={"company_id": "companies"}, ondelete="SET NULL", indexes=["company_id"]),
    table("placements", *strings(id=ID, job_order_id=ID, candidate_name=300),
          *columns(sa.Date(), "start_date", "end_date", null=True), *audit_columns(),
          references={"job_order_id": "job_orders"}, ondelete="CASCADE", indexes=["job_order_id"]),
    table("record_contacts", *strings(record_kind=20, record_id=ID, contact_id=ID, role_id=ID),
          *columns(UTC, "linked_at"), *strings(linked_by=REF),
          key=("record_kind", "record_id", "contact_id"), references={"contact_id": "contacts"}, ondelete="CASCADE",
          indexes=["contact_id"]),
    table("record_job_orders", *strings(record_kind=20, record_id=ID, job_order_id=ID),
          *columns(UTC, "linked_at"), *strings(linked_by=REF),
          key=("record_kind", "record_id", "job_order_id"), references={"job_order_id": "job_orders"},
          ondelete="CASCADE", unique={"uq_record_job_orders_job_order_kind": ("job_order_id", "record_kind")}),
)
