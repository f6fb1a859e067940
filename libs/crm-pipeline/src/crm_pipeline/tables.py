"""The tables of a records service, the same for every kind (only the records table's name
differs). Opportunity-only columns stay NULL for leads and the reverse: one shape, one
implementation.

Indexes serve the list views at a million rows: every list is "a view (office, owner or
all) + maybe a stage/stage group + ordered by modified_at, id", so each filter column leads a
composite index that ends in the default order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from crm_kit.bulk import IMPORT_KEY_LENGTH
from crm_kit.db import UTCDateTime

if TYPE_CHECKING:  # alembic only for migrations: the api and the worker never load it
    from alembic.operations import Operations

ID = 36  # UUID strings
REF = 200  # ids of users and offices come from the identity provider


IMPORT_KEY = "import_key"


def import_key_index(records: str) -> str:
    """A key makes one record per office: a re-run of the same import creates nothing twice."""
    return f"ux_{records}_office_id_import_key"


def _record_columns() -> list[Column[Any]]:
    return [
        Column("id", String(ID), primary_key=True),
        Column("title", String(500), nullable=False),
        Column("description", Text, nullable=False),
        Column("company_id", String(ID)),
        Column("contact_id", String(ID)),
        Column("owner_id", String(REF), nullable=False),
        Column("office_id", String(REF), nullable=False),
        Column("stage_id", String(ID), nullable=False),
        Column("stage_group_id", String(ID)),
        Column("stage_changed_at", UTCDateTime, nullable=False),
        Column("source_id", String(ID)),
        Column("priority_id", String(ID)),
        Column("category_id", String(ID)),
        Column("procedure_id", String(ID)),
        Column("attribute_ids", JSON, nullable=False),
        # opportunities
        Column("amount", Numeric(18, 2)),
        Column("currency", String(3)),
        Column("probability", Integer),
        Column("expected_close_date", Date),
        Column("lead_id", String(ID)),
        # leads
        Column("converted_opportunity_id", String(ID)),
        Column("converted_at", UTCDateTime),
        Column("version", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(REF), nullable=False),
        Column("modified_at", UTCDateTime, nullable=False),
        Column("modified_by", String(REF), nullable=False),
    ]


IndexSpec = tuple[str, tuple[str, ...]]


def _record_indexes(name: str) -> list[IndexSpec]:
    def ix(*cols: str) -> IndexSpec:
        return f"ix_{name}_{'_'.join(cols)}", cols

    return [
        ix("modified_at", "id"),
        ix("title", "id"),
        ix("office_id", "title", "id"),
        ix("office_id", "modified_at", "id"),
        ix("owner_id", "modified_at", "id"),
        ix("stage_id", "modified_at", "id"),
        ix("stage_group_id", "modified_at", "id"),
        ix("created_at", "id"),
        ix("company_id"),
        ix("contact_id"),
        ix("lead_id"),
    ]


def _history_columns() -> list[Column[Any]]:
    return [
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("record_id", String(ID), nullable=False),
        Column("from_stage_id", String(ID)),
        Column("to_stage_id", String(ID), nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("by", String(REF), nullable=False),
        Column("cause", String(100), nullable=False),
    ]


def _group_columns(records: str) -> list[Column[Any]]:
    return [
        Column("record_id", String(ID), ForeignKey(f"{records}.id", ondelete="CASCADE"), primary_key=True),
        Column("group_id", String(ID), primary_key=True),
        Column("added_at", UTCDateTime, nullable=False),
        Column("added_by", String(REF), nullable=False),
    ]


def _attachment_columns(records: str) -> list[Column[Any]]:
    return [
        Column("id", String(ID), primary_key=True),
        Column("record_id", String(ID), ForeignKey(f"{records}.id", ondelete="CASCADE"), nullable=False),
        Column("filename", String(255), nullable=False),
        Column("content_type", String(200), nullable=False),
        Column("type", String(100), nullable=False),
        Column("size", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("storage_key", String(500), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(REF), nullable=False),
    ]


def _each_table(records: str) -> list[tuple[str, Callable[[], list[Column[Any]]], list[IndexSpec]]]:
    return [
        (records, _record_columns, _record_indexes(records)),
        ("stage_history", _history_columns, [("ix_stage_history_record_id_at", ("record_id", "at"))]),
        ("record_groups", lambda: _group_columns(records), [("ix_record_groups_group_id", ("group_id",))]),
        ("attachments", lambda: _attachment_columns(records), [("ix_attachments_record_id", ("record_id",))]),
    ]


def _known_file_columns() -> list[Column[Any]]:
    """What the service knows of linking's companies and contacts (from ``crm.linking.v1``):
    enough to tell whether a ``company_id``/``contact_id`` names an existing file. A deleted
    file stays as a row (``deleted``), so a late, older event cannot bring it back."""
    return [
        Column("id", String(ID), primary_key=True),
        Column("entity", String(20), nullable=False),  # "company" | "contact"
        Column("version", BigInteger, nullable=False),
        Column("deleted", Boolean, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ]


def _opportunity_view_columns() -> list[Column[Any]]:
    """Leads only: what the leads service knows of the opportunities (from
    ``crm.opportunities.v1``), for converting a lead into an existing opportunity: whether it
    exists, who may see it (its office) and whether a lead was converted into it already."""
    return [
        Column("id", String(ID), primary_key=True),
        Column("office_id", String(REF), nullable=False),
        Column("lead_id", String(ID)),
        Column("version", BigInteger, nullable=False),
        Column("deleted", Boolean, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ]


# A lead converts into one opportunity, and an opportunity has at most one lead: two
# conversions into the same existing opportunity cannot both commit.
CONVERTED_UNIQUE = "ux_leads_converted_opportunity_id"


def _reference_tables(records: str) -> list[tuple[str, Callable[[], list[Column[Any]]], list[IndexSpec]]]:
    """The read models of other services' data a records service keeps (see references.py)."""
    out: list[tuple[str, Callable[[], list[Column[Any]]], list[IndexSpec]]] = [
        ("known_files", _known_file_columns, [])]
    if records == "leads":
        out.append(("opportunity_views", _opportunity_view_columns, []))
    return out


def pipeline_tables(metadata: MetaData, records: str) -> dict[str, Table]:
    """Define the service's tables on ``metadata``; keys: records, stage_history, record_groups,
    attachments, known_files (and opportunity_views for leads)."""
    tables = {}
    for name, columns, indexes in _each_table(records) + _reference_tables(records):
        key = "records" if name == records else name
        tables[key] = Table(name, metadata, *columns(), *(Index(ix, *cols) for ix, cols in indexes))
    if records == "leads":
        Index(CONVERTED_UNIQUE, tables["records"].c.converted_opportunity_id, unique=True)
    # Added by a later migration (add_import_keys): the idempotency key of the bulk create (import)
    # item that made the record; NULL otherwise.
    tables["records"].append_column(Column(IMPORT_KEY, String(IMPORT_KEY_LENGTH)))
    Index(import_key_index(records), tables["records"].c.office_id, tables["records"].c[IMPORT_KEY], unique=True)
    return tables


def add_import_keys(op: Operations, records: str) -> None:
    """DDL for bulk create's idempotency keys: the column and its unique index (NULLs, the
    records made one at a time, are distinct on SQLite and PostgreSQL)."""
    with op.batch_alter_table(records) as batch:
        batch.add_column(Column(IMPORT_KEY, String(IMPORT_KEY_LENGTH), nullable=True))
    op.create_index(import_key_index(records), records, ["office_id", IMPORT_KEY], unique=True)


def drop_import_keys(op: Operations, records: str) -> None:
    op.drop_index(import_key_index(records), records)
    with op.batch_alter_table(records) as batch:
        batch.drop_column(IMPORT_KEY)


def create_reference_tables(op: Operations, records: str) -> None:
    """DDL for the read models of companies, contacts (and, for leads, opportunities), and the
    one-lead-per-opportunity rule; called from each kind's migration that added them."""
    for name, columns, indexes in _reference_tables(records):
        op.create_table(name, *columns())
        for ix, cols in indexes:
            op.create_index(ix, name, list(cols))
    if records == "leads":
        op.create_index(CONVERTED_UNIQUE, records, ["converted_opportunity_id"], unique=True)


def drop_reference_tables(op: Operations, records: str) -> None:
    if records == "leads":
        op.drop_index(CONVERTED_UNIQUE, records)
    for name, _, _ in reversed(_reference_tables(records)):
        op.drop_table(name)


def create_pipeline_tables(op: Operations, records: str) -> None:
    """DDL for the service's tables, called from each kind's first migration."""
    for name, columns, indexes in _each_table(records):
        op.create_table(name, *columns())
        for ix, cols in indexes:
            op.create_index(ix, name, list(cols))


def create_search_indexes(op: Operations, records: str) -> None:
    """Trigram indexes so ``q`` (substring search on title and description) stays fast at a
    million rows on PostgreSQL (pg_trgm is a trusted extension: the database owner may create
    it). SQLite, the embedded default, scans."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in ("title", "description"):
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_{records}_{column}_trgm ON {records} "
                   f"USING gin ({column} gin_trgm_ops)")


def drop_search_indexes(op: Operations, records: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in ("title", "description"):
            op.execute(f"DROP INDEX IF EXISTS ix_{records}_{column}_trgm")
