"""The two tables of an import, the same in every service that owns imported records.

``import_jobs``: one uploaded CSV - its header, mapping, key column, status and counters, and
who made it (the creator's identity, so the worker creates the records as that person).
``import_rows``: one row per CSV line - its cells, its status in the current phase and its
result. ``digest`` and ``occurrence`` make a row's default idempotency key (``jobs.row_key``):
the digest of the header and cells, and how many identical rows came before it in the job.

``add_import_tables(metadata)`` defines them for a service's metadata; ``create_import_tables(op)``
is the DDL of the migration that adds them (one line in each service's migration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Column, Index, Integer, MetaData, PrimaryKeyConstraint, String, Table, Text

from crm_kit.db import UTCDateTime

if TYPE_CHECKING:  # alembic only for migrations: the api and the worker never load it
    from alembic.operations import Operations

JOBS = "import_jobs"
ROWS = "import_rows"
ID, REF = 36, 200
COUNTERS = ("rows", "checked", "valid", "invalid", "processed", "created", "existing", "failed")


def _job_columns() -> list[Column[Any]]:
    return [
        Column("id", String(ID), primary_key=True),
        Column("collection", String(50), nullable=False),
        Column("file_name", String(255), nullable=False),
        Column("status", String(20), nullable=False),
        Column("columns", JSON, nullable=False),
        Column("mapping", JSON, nullable=True),
        Column("key_column", String(200), nullable=True),
        *(Column(name, Integer, nullable=False, server_default="0") for name in COUNTERS),
        Column("creator", JSON, nullable=False),  # user_id, name, office_id, roles, permissions
        Column("created_by", String(REF), nullable=False),
        Column("office_id", String(REF), nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime, nullable=True),
        Column("finished_at", UTCDateTime, nullable=True),
        Column("version", Integer, nullable=False),
    ]


def _row_columns() -> list[Column[Any]]:
    return [
        Column("job_id", String(ID), nullable=False),
        Column("number", Integer, nullable=False),  # the CSV line (the header is line 1)
        Column("cells", JSON, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("occurrence", Integer, nullable=False),
        Column("status", String(10), nullable=False),
        Column("record_id", String(ID), nullable=True),
        Column("error", Text, nullable=True),
        Column("errors", JSON, nullable=True),
    ]


_JOBS_BY_CREATOR = ("ix_import_jobs_creator", ("created_by", "collection", "created_at"))
_ROWS_BY_STATUS = ("ix_import_rows_job_status_number", ("job_id", "status", "number"))
_ROWS_BY_DIGEST = ("ix_import_rows_job_digest", ("job_id", "digest"))


def add_import_tables(metadata: MetaData) -> tuple[Table, Table]:
    """``import_jobs`` and ``import_rows`` on ``metadata`` (once; the same objects after that)."""
    if JOBS in metadata.tables:
        return metadata.tables[JOBS], metadata.tables[ROWS]
    jobs = Table(JOBS, metadata, *_job_columns())
    Index(_JOBS_BY_CREATOR[0], *(jobs.c[c] for c in _JOBS_BY_CREATOR[1]))
    rows = Table(ROWS, metadata, *_row_columns(), PrimaryKeyConstraint("job_id", "number", name="pk_import_rows"))
    for name, cols in (_ROWS_BY_STATUS, _ROWS_BY_DIGEST):
        Index(name, *(rows.c[c] for c in cols))
    return jobs, rows


def create_import_tables(op: Operations) -> None:
    """The migration that adds imports to a service: ``create_import_tables(op)``."""
    op.create_table(JOBS, *_job_columns())
    op.create_index(_JOBS_BY_CREATOR[0], JOBS, list(_JOBS_BY_CREATOR[1]))
    op.create_table(ROWS, *_row_columns(), PrimaryKeyConstraint("job_id", "number", name="pk_import_rows"))
    for name, cols in (_ROWS_BY_STATUS, _ROWS_BY_DIGEST):
        op.create_index(name, ROWS, list(cols))


def drop_import_tables(op: Operations) -> None:
    op.drop_table(ROWS)
    op.drop_table(JOBS)
