"""The records table, the same shape for every kind (only its name differs)."""

from __future__ import annotations

from alembic.operations import Operations
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text

from crm_kit.db import UTCDateTime


def _columns() -> list[Column]:
    return [
        Column("id", String(36), primary_key=True),
        Column("title", String(500), nullable=False),
        Column("description", Text, nullable=False, default=""),
        Column("owner_id", String(200), nullable=False),
        Column("office_id", String(200), nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("created_by", String(200), nullable=False),
        Column("modified_at", UTCDateTime, nullable=False),
        Column("modified_by", String(200), nullable=False),
    ]


def records_table(metadata: MetaData, name: str) -> Table:
    """Define the records table ``name`` on ``metadata``."""
    return Table(name, metadata, *_columns(),
                 Index(f"ix_{name}_modified_at_id", "modified_at", "id"))


def create_records_table(op: Operations, name: str) -> None:
    """DDL for the records table, called from each kind's first migration."""
    op.create_table(name, *_columns())
    op.create_index(f"ix_{name}_modified_at_id", name, ["modified_at", "id"])
