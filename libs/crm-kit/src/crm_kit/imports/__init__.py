"""Imports of CSV rows into a service's own records (issue 17): one implementation for leads,
opportunities, companies and contacts, in the service that owns them.

- ``tables``: ``import_jobs`` / ``import_rows`` and the migration helper;
- ``jobs``: the domain (``Importer`` per collection, ``Imports``: the steps, cells -> items, keys,
  one batch of work);
- ``runner``: the worker loop; ``api``: the routes (the web edge); ``schemas``: their bodies and answers;
- ``errors``: the refusals, in the domain's words (the web edge maps them to problem+json).

A service wires it once: ``ServiceImports(metadata, importers)`` gives its routes (``api()``) and
its worker loop (``loop(database)``). The routes are imported only when asked for, so a worker
that runs the loop never loads Flask.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData

from crm_kit.db import Database
from crm_kit.imports.jobs import Importer, Imports
from crm_kit.imports.runner import ImportRunner, import_loop
from crm_kit.imports.tables import add_import_tables, create_import_tables, drop_import_tables

if TYPE_CHECKING:
    from crm_kit.imports.api import build_imports_api
    from crm_kit.web import Api


class ServiceImports:
    """A service's imports: its tables on ``metadata``, its importers, routes and worker loop."""

    def __init__(self, metadata: MetaData, importers: Iterable[Importer]) -> None:
        jobs, rows = add_import_tables(metadata)
        self.imports = Imports(jobs, rows, importers)

    def api(self) -> Api:
        from crm_kit.imports.api import build_imports_api

        return build_imports_api(self.imports)

    def loop(self, database: Database) -> tuple[str, Callable[[threading.Event], None]]:
        return import_loop(database, self.imports)

    def runner(self, database: Database) -> ImportRunner:
        return ImportRunner(database, self.imports)


def __getattr__(name: str) -> Any:
    if name == "build_imports_api":  # the web edge: loaded on first use
        from crm_kit.imports import api

        return api.build_imports_api
    raise AttributeError(f"module 'crm_kit.imports' has no attribute {name!r}")


__all__ = ["ImportRunner", "Importer", "Imports", "ServiceImports", "add_import_tables", "build_imports_api",
           "create_import_tables", "drop_import_tables", "import_loop"]
