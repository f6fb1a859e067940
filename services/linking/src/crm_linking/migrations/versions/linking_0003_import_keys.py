"""linking: idempotency keys of bulk creates (imports of companies and contacts), per office

Created 2026-12-06.
"""

from crm_kit.migration_helpers import ID, REF, UTC, columns, new_tables, strings, table

revision = "linking_0003"
down_revision = "linking_0002"
upgrade, downgrade = new_tables(
    table("import_keys", *strings(entity=20, office_id=REF, key=REF, file_id=ID), *columns(UTC, "created_at"),
          key=("entity", "office_id", "key")),
)
