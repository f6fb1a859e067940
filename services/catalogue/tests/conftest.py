"""Fixtures: the catalogue service on a fresh database, SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from catalogue_helpers import Catalogue


@pytest.fixture
def cat(any_db_url: str) -> Iterator[Catalogue]:
    """The catalogue as a fresh deployment has it: migrated, starter data loaded."""
    catalogue = Catalogue(any_db_url)
    yield catalogue
    catalogue.close()


@pytest.fixture
def bare(any_db_url: str) -> Iterator[Catalogue]:
    """The catalogue without its starter configuration (CRM_CATALOGUE_SEED=false)."""
    catalogue = Catalogue(any_db_url, CRM_CATALOGUE_SEED="false")
    yield catalogue
    catalogue.close()
