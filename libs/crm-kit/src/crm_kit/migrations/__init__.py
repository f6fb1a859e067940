"""Alembic, shared: one env.py for every service, the kit's own branch of versions, and
``upgrade(url, service_versions_dir, metadata)`` to bring a service's database to head.

A service keeps only its ``versions/`` folder; the kit's tables (outbox, inbox,
idempotency keys) live on the branch labelled ``kit`` and are applied to every service's
database together with the service's branch (``alembic upgrade heads``).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

KIT_DIR = Path(__file__).resolve().parent


def alembic_config(url: str, service_versions_dir: Path, metadata: MetaData | None = None) -> Config:
    """An Alembic Config for one service's database, without any .ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(KIT_DIR))
    cfg.set_main_option("version_locations", f"{KIT_DIR / 'versions'} {service_versions_dir}")
    cfg.set_main_option("path_separator", "space")
    # '%' would be read as interpolation by configparser.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["target_metadata"] = metadata
    return cfg


def upgrade(url: str, service_versions_dir: Path, metadata: MetaData | None = None) -> None:
    """Apply every pending migration of the kit's and the service's branches."""
    command.upgrade(alembic_config(url, service_versions_dir, metadata), "heads")
