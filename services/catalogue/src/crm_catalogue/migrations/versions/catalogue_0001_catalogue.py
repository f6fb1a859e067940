"""catalogue: stages, table entries, templates, their relation, stage usage, meta

Revision ID: catalogue_0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from crm_kit.db import UTCDateTime

revision = "catalogue_0001"
down_revision = None
branch_labels = ("catalogue",)
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [sa.Column("created_at", UTCDateTime, nullable=False),
            sa.Column("modified_at", UTCDateTime, nullable=False)]


def upgrade() -> None:
    op.create_table(
        "table_entries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("table_name", sa.String(30), nullable=False),
        sa.Column("code", sa.String(50), nullable=False),
        sa.Column("names", sa.JSON, nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("protected", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_table_entries"),
        sa.UniqueConstraint("kind", "table_name", "code", name="uq_table_entries_kind_table_code"),
    )
    op.create_index("ix_table_entries_kind_table_index", "table_entries", ["kind", "table_name", "index", "id"])

    op.create_table(
        "stages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("code", sa.String(50), nullable=False),
        sa.Column("names", sa.JSON, nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("is_default", sa.Boolean, nullable=False),
        sa.Column("is_end", sa.Boolean, nullable=False),
        sa.Column("is_default_end", sa.Boolean, nullable=False),
        sa.Column("color", sa.String(7), nullable=True),
        sa.Column("remarks", sa.Text, nullable=False),
        sa.Column("procedure_id", sa.String(36), nullable=True),
        sa.Column("stage_group_id", sa.String(36), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_stages"),
        sa.UniqueConstraint("kind", "code", name="uq_stages_kind_code"),
        sa.ForeignKeyConstraint(["procedure_id"], ["table_entries.id"],
                                name="fk_stages_procedure_id_table_entries"),
        sa.ForeignKeyConstraint(["stage_group_id"], ["table_entries.id"],
                                name="fk_stages_stage_group_id_table_entries"),
    )
    op.create_index("ix_stages_kind_index", "stages", ["kind", "index", "id"])
    # At most one default and one default end stage per kind (partial unique indexes).
    for flag, name in (("is_default", "uq_stages_kind_default"), ("is_default_end", "uq_stages_kind_default_end")):
        op.create_index(name, "stages", ["kind"], unique=True,
                        postgresql_where=sa.text(flag), sqlite_where=sa.text(flag))

    op.create_table(
        "templates",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("subject", sa.String(500), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("visible_at", sa.String(30), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
    )
    op.create_index("ix_templates_name", "templates", ["name", "id"])

    op.create_table(
        "stage_templates",
        sa.Column("stage_id", sa.String(36), nullable=False),
        sa.Column("template_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("stage_id", "template_id", name="pk_stage_templates"),
        sa.ForeignKeyConstraint(["stage_id"], ["stages.id"], name="fk_stage_templates_stage_id_stages"),
        sa.ForeignKeyConstraint(["template_id"], ["templates.id"], name="fk_stage_templates_template_id_templates"),
    )
    op.create_index("ix_stage_templates_template_id", "stage_templates", ["template_id"])

    op.create_table(
        "stage_usage",
        sa.Column("record_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("stage_id", sa.String(36), nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_stage_usage"),
    )
    op.create_index("ix_stage_usage_stage_id", "stage_usage", ["stage_id"])

    op.create_table(
        "catalogue_meta",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("done_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_catalogue_meta"),
    )


def downgrade() -> None:
    for table in ("catalogue_meta", "stage_usage", "stage_templates", "templates", "stages", "table_entries"):
        op.drop_table(table)
