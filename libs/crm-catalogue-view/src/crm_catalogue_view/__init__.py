"""A service's own copy of the catalogue, kept from the catalogue's events.

Services validate stage, table and template ids against this copy instead of calling the
catalogue. The copy lives in the service's database (table ``catalogue_view``), is built by
the consumer from ``consumer_spec()`` - from offset 0 on a fresh database, since consumers
keep their offsets with their effects - and is queried with ``CatalogueView``.
"""

from crm_catalogue_view.model import (
    TABLE_NAMES,
    CatalogueEntryView,
    CatalogueReferenceError,
    CatalogueView,
    apply_catalogue_event,
    catalogue_view_table,
    consumer_spec,
    create_catalogue_view_table,
)

__all__ = [
    "TABLE_NAMES", "CatalogueEntryView", "CatalogueReferenceError", "CatalogueView", "apply_catalogue_event",
    "catalogue_view_table", "consumer_spec", "create_catalogue_view_table",
]
