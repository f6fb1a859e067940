"""catalogue: stages, table entries, templates, their relation, stage usage, meta

Created 2026-11-23.
"""

import sqlalchemy as sa
from alembic.operations import Operations

from crm_kit.migration_helpers import ID, UTC, columns, create_tables, drop_tables, migration, strings, table

revision = "catalogue_0001"
down_revision = None
branch_labels = ("catalogue",)

STAMPS = ("created_at", "modified_at")
TABLES = (
    table("table_entries", *strings(id=ID, kind=20, table_name=30, code=50), *columns(sa.JSON(), "names"),
          *columns(sa.Integer(), "index"), *columns(sa.Boolean(), "active", "protected"),
          *columns(sa.Integer(), "version"), *columns(UTC, *STAMPS),
          sa.UniqueConstraint("kind", "table_name", "code", name="uq_table_entries_kind_table_code"),
          named_indexes={"ix_table_entries_kind_table_index": ("kind", "table_name", "index", "id")}),
    table("stages", *strings(id=ID, kind=20, code=50), *columns(sa.JSON(), "names"), *columns(sa.Integer(), "index"),
          *columns(sa.Boolean(), "active", "is_default", "is_end", "is_default_end"), *strings(color=7, null=True),
          *columns(sa.Text(), "remarks"), *strings(procedure_id=ID, stage_group_id=ID, null=True),
          *columns(sa.Integer(), "version"), *columns(UTC, *STAMPS),
          sa.UniqueConstraint("kind", "code", name="uq_stages_kind_code"),
          references={"procedure_id": "table_entries", "stage_group_id": "table_entries"},
          named_indexes={"ix_stages_kind_index": ("kind", "index", "id")}),
    table("templates", *strings(id=ID, kind=20, name=200), *strings(subject=500, null=True),
          *columns(sa.Text(), "body"), *strings(visible_at=30, null=True), *columns(sa.Integer(), "version"),
          *columns(UTC, *STAMPS), named_indexes={"ix_templates_name": ("name", "id")}),
    table("stage_templates", *strings(stage_id=ID, template_id=ID), key=("stage_id", "template_id"),
          references={"stage_id": "stages", "template_id": "templates"}, indexes=["template_id"]),
    table("stage_usage", *strings(record_id=ID, kind=20), *strings(stage_id=ID, null=True),
          *columns(sa.BigInteger(), "version"), key=("record_id",), indexes=["stage_id"]),
    table("catalogue_meta", *strings(key=100), *columns(UTC, "done_at"), key=("key",)),
)


def _create(op: Operations) -> None:
    create_tables(op, *TABLES)
    # At most one default and one default end stage per kind (partial unique indexes).
    for flag, name in (("is_default", "uq_stages_kind_default"), ("is_default_end", "uq_stages_kind_default_end")):
        op.create_index(name, "stages", ["kind"], unique=True,
                        postgresql_where=sa.text(flag), sqlite_where=sa.text(flag))


upgrade, downgrade = migration(_create, lambda op: drop_tables(op, *TABLES))
