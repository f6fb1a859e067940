"""linking: CSV imports of companies and contacts (import_jobs, import_rows; crm_kit.imports)

Created 2026-12-06.
"""

from crm_kit.imports import create_import_tables, drop_import_tables
from crm_kit.migration_helpers import migration

revision = "linking_0004"
down_revision = "linking_0003"
upgrade, downgrade = migration(create_import_tables, drop_import_tables)
