"""The versions of a records service's database, written once for every kind.

``services/leads`` and ``services/opportunities`` keep one Alembic version file per step below
(``leads_0001`` … ``leads_0006``, ``opportunities_0001`` … ``opportunities_0006``): each names its
revision and takes ``upgrade, downgrade`` from here with its records table (``leads``,
``opportunities``). The DDL itself lives in ``crm_pipeline.tables`` and the libraries.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic.operations import Operations

from crm_catalogue_view import create_catalogue_view_table
from crm_kit.imports import create_import_tables, drop_import_tables
from crm_kit.migration_helpers import Step, drop_tables, migration
from crm_pipeline.tables import (
    add_import_keys,
    create_pipeline_tables,
    create_reference_tables,
    create_search_indexes,
    drop_import_keys,
    drop_reference_tables,
    drop_search_indexes,
)

_OnRecords = Callable[[Operations, str], None]


def records_tables(records: str) -> tuple[Step, Step]:
    """0001: the records, their stage history, groups and attachments."""
    return migration(lambda op: create_pipeline_tables(op, records),
                     lambda op: drop_tables(op, records, "stage_history", "record_groups", "attachments"))


def catalogue_view() -> tuple[Step, Step]:
    """0002: the service's copy of the catalogue."""
    return migration(create_catalogue_view_table, lambda op: drop_tables(op, "catalogue_view"))


def search_indexes(records: str) -> tuple[Step, Step]:
    """0003: trigram indexes for simple search (PostgreSQL only)."""
    return _on(records, create_search_indexes, drop_search_indexes)


def reference_tables(records: str) -> tuple[Step, Step]:
    """0004: what the service knows of companies and contacts (and, for leads, of opportunities)."""
    return _on(records, create_reference_tables, drop_reference_tables)


def import_keys(records: str) -> tuple[Step, Step]:
    """0005: the idempotency keys of bulk creates (imports), unique per office."""
    return _on(records, add_import_keys, drop_import_keys)


def import_tables() -> tuple[Step, Step]:
    """0006: CSV imports (``import_jobs``, ``import_rows``: ``crm_kit.imports``)."""
    return migration(create_import_tables, drop_import_tables)


def _on(records: str, upgrade: _OnRecords, downgrade: _OnRecords) -> tuple[Step, Step]:
    return migration(lambda op: upgrade(op, records), lambda op: downgrade(op, records))
