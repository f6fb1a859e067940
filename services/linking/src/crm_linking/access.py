"""Which leads and opportunities a caller may see or change, from this service's read model.

The same rule as the records services (crm_pipeline.queries): a caller sees their own
office's records, the ``admin`` role every office's; others are "not found". A record this
service has not heard of yet (its event is on the way) is "not found" too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from crm_kit.web import Identity, Problem
from crm_linking.tables import record_views

PLURALS = {"lead": "leads", "opportunity": "opportunities"}
KINDS = {plural: kind for kind, plural in PLURALS.items()}
ALL_OFFICES_ROLE = "admin"


def may_see(identity: Identity, office_id: str) -> bool:
    return ALL_OFFICES_ROLE in identity.roles or office_id == identity.office_id


def load_record(session: Session, kind: str, record_id: str, identity: Identity) -> Any:
    """The record's view row, or 404 when unknown or not visible to ``identity``."""
    row = session.execute(select(record_views).where(record_views.c.id == record_id,
                                                     record_views.c.kind == kind)).first()
    if row is None or not may_see(identity, row.office_id):
        raise Problem(404, f"No {kind} with id {record_id!r} (or not visible to you).")
    return row


def require_record_edit(identity: Identity, kind: str) -> None:
    """Linking files to a record changes the record: it needs ``<records>:edit`` too."""
    permission = f"{PLURALS[kind]}:edit"
    if not identity.has(permission):
        raise Problem(403, f"Linking to a {kind} needs the permission {permission!r}.")
