"""For a service's migration tests: its database at a chosen revision, and whether the tables its
code defines and the ones its migrations made differ (Alembic's autogenerate comparison)."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crm_kit.db import Database
from crm_kit.migrations import alembic_config
from crm_kit.service import find_service


class Migrations:
    """One service's migrations on the database at ``url``."""

    def __init__(self, service: str, url: str) -> None:
        spec = find_service(service)
        assert spec.migrations is not None and spec.metadata is not None, f"{service} has no migrations"
        self.metadata = spec.metadata
        self.config = alembic_config(url, spec.migrations, spec.metadata)

    def start_at(self, revision: str) -> None:
        """The service's tables at ``revision``, and the kit's (inbox, outbox, ...) at their head."""
        command.upgrade(self.config, revision)
        command.upgrade(self.config, "kit@head")

    def upgrade(self, revision: str = "heads") -> None:
        command.upgrade(self.config, revision)

    def downgrade(self, revision: str) -> None:
        command.downgrade(self.config, revision)

    def differences(self, db: Database) -> list[Any]:
        """What Alembic finds between the code's tables and the database's (none: they agree)."""
        with db.engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), self.metadata))
