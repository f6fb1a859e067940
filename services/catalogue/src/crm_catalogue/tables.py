"""The catalogue's own tables (its database; nobody else reads it).

``catalogue_0001`` creates exactly these (``catalogue_0002`` adds the indexes on lower(code));
the migration test checks the two agree.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from crm_kit.db import UTCDateTime, new_metadata

KINDS = ("lead", "opportunity")
PLURALS = {"lead": "leads", "opportunity": "opportunities"}

# URL name of each of the 8 tables per kind -> its entity name (events, the table_name column).
TABLES = {name: name.replace("-", "_") for name in (
    "attributes", "categories", "groups", "priorities", "procedures", "roles", "sources", "stage-groups",
)}

TEMPLATE_KINDS = ("email", "document", "print")
# The template kinds a stage lists (``email_template_ids``, ``document_template_ids``); print
# templates may be visible at a stage too, but a stage does not show them.
STAGE_TEMPLATE_KINDS = ("email", "document")
VISIBLE_AT = {f"{kind}_stage": kind for kind in KINDS}

metadata = new_metadata()


def _timestamps() -> list[Column]:
    return [Column("created_at", UTCDateTime, nullable=False), Column("modified_at", UTCDateTime, nullable=False)]


table_entries = Table(
    "table_entries",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("table_name", String(30), nullable=False),
    Column("code", String(50), nullable=False),
    Column("names", JSON, nullable=False),
    Column("index", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("protected", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    *_timestamps(),
    UniqueConstraint("kind", "table_name", "code", name="uq_table_entries_kind_table_code"),
    Index("ix_table_entries_kind_table_index", "kind", "table_name", "index", "id"),
)

stages = Table(
    "stages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("code", String(50), nullable=False),
    Column("names", JSON, nullable=False),
    Column("index", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("is_end", Boolean, nullable=False),
    Column("is_default_end", Boolean, nullable=False),
    Column("color", String(7), nullable=True),
    Column("remarks", Text, nullable=False),
    # The rules check kind, table and active with a clear 422/409; the keys are the backstop.
    Column("procedure_id", String(36), ForeignKey("table_entries.id"), nullable=True),
    Column("stage_group_id", String(36), ForeignKey("table_entries.id"), nullable=True),
    Column("version", Integer, nullable=False),
    *_timestamps(),
    UniqueConstraint("kind", "code", name="uq_stages_kind_code"),
    Index("ix_stages_kind_index", "kind", "index", "id"),
    # At most one default and one default end stage per kind, whatever the code does.
    Index("uq_stages_kind_default", "kind", unique=True,
          postgresql_where=text("is_default"), sqlite_where=text("is_default")),
    Index("uq_stages_kind_default_end", "kind", unique=True,
          postgresql_where=text("is_default_end"), sqlite_where=text("is_default_end")),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("subject", String(500), nullable=True),
    Column("body", Text, nullable=False),
    Column("visible_at", String(30), nullable=True),
    Column("version", Integer, nullable=False),
    *_timestamps(),
    Index("ix_templates_name", "name", "id"),
)

# Codes are unique in their kind (and table) whatever their case: FAIR and fair are one code.
Index("uq_table_entries_kind_table_lower_code", table_entries.c.kind, table_entries.c.table_name,
      func.lower(table_entries.c.code), unique=True)
Index("uq_stages_kind_lower_code", stages.c.kind, func.lower(stages.c.code), unique=True)

# The one template <-> stage relation: a stage's template ids and a template's stage ids.
stage_templates = Table(
    "stage_templates",
    metadata,
    Column("stage_id", String(36), ForeignKey("stages.id"), primary_key=True),
    Column("template_id", String(36), ForeignKey("templates.id"), primary_key=True),
    Index("ix_stage_templates_template_id", "template_id"),
)

# Which stage each lead/opportunity is in, learned from their events (see usage.py). A record
# read model: the column record_id is ``c.id`` in code, as crm_kafka.record_view expects.
stage_usage = Table(
    "stage_usage",
    metadata,
    Column("record_id", String(36), key="id", primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("stage_id", String(36), nullable=True),  # NULL: the record is in no stage
    Column("version", BigInteger, nullable=False),
    Index("ix_stage_usage_stage_id", "stage_id"),
)

# One row per one-off step done on this database (the starter configuration's marker).
catalogue_meta = Table(
    "catalogue_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("done_at", UTCDateTime, nullable=False),
)
