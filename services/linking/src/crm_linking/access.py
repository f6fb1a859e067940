"""Which leads and opportunities a caller may see or change, from this service's read model,
and how that reaches the files.

The same rule as the records services (crm_pipeline.queries): a caller sees their own
office's records, the ``admin`` role every office's; others are "not found". A record this
service has not heard of yet (its event is on the way) is "not found" too.

Office visibility reaches files through their records (API.md, "Files"):

- an activity on a lead or opportunity is visible only to callers who may see every record it
  is on (``activity_visible``); one on no record this service knows belongs to the office it was
  created in (``activities.office_id``);
- companies, contacts, job orders and placements are shared across offices, but a change to one
  that a record the caller cannot see shows is refused (``hidden_records`` finds such records;
  ``files.py`` refuses it: ``errors.OnHiddenRecord``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select, true
from sqlalchemy.orm import Session

from crm_kit.identity import Identity
from crm_linking.errors import RecordEditNeeded, UnknownRecord
from crm_linking.tables import activities, record_views

PLURALS = {"lead": "leads", "opportunity": "opportunities"}
KINDS = {plural: kind for kind, plural in PLURALS.items()}
ALL_OFFICES_ROLE = "admin"


def may_see(identity: Identity, office_id: str) -> bool:
    return ALL_OFFICES_ROLE in identity.roles or office_id == identity.office_id


def sees_every_office(identity: Identity) -> bool:
    return ALL_OFFICES_ROLE in identity.roles


def visible_records(identity: Identity) -> ColumnElement[bool]:
    """The records (``record_views`` rows) ``identity`` may see; the rule of ``may_see``."""
    if sees_every_office(identity):
        return true()
    return record_views.c.office_id == identity.office_id


def load_record(session: Session, kind: str, record_id: str, identity: Identity) -> Any:
    """The record's view row; ``UnknownRecord`` when it is unknown or not visible to ``identity``."""
    row = session.execute(select(record_views).where(record_views.c.id == record_id,
                                                     record_views.c.kind == kind)).first()
    if row is None or not may_see(identity, row.office_id):
        raise UnknownRecord(kind, record_id)
    return row


def require_record_edit(identity: Identity, kind: str) -> None:
    """Linking files to a record changes the record: it needs ``<records>:edit`` too."""
    permission = f"{PLURALS[kind]}:edit"
    if not identity.has(permission):
        raise RecordEditNeeded(kind, permission)


def _records_of_activity() -> ColumnElement[bool]:
    """``record_views`` rows of the records the current ``activities`` row is on."""
    return or_(and_(record_views.c.kind == "lead", record_views.c.id == activities.c.lead_id),
               and_(record_views.c.kind == "opportunity", record_views.c.id == activities.c.opportunity_id))


def activity_visible(identity: Identity) -> ColumnElement[bool]:
    """The activities ``identity`` may see (a condition on ``activities``).

    On records this service knows: only when every one of them is visible. On none (unlinked, or
    its record is not known here): its own office's, and those without an office (older than the
    column). The ``admin`` role sees them all.
    """
    if sees_every_office(identity):
        return true()
    on_records = _records_of_activity()
    elsewhere = exists(select(record_views.c.id).where(on_records, record_views.c.office_id != identity.office_id))
    on_known_record = exists(select(record_views.c.id).where(on_records))
    own_office = or_(activities.c.office_id.is_(None), activities.c.office_id == identity.office_id)
    return and_(not_(elsewhere), or_(on_known_record, own_office))


def hidden_records(session: Session, identity: Identity, showing: ColumnElement[bool]) -> bool:
    """Whether a record that ``identity`` may not see is among the records ``showing`` selects
    (a condition on ``record_views``)."""
    if sees_every_office(identity):
        return False
    hidden = select(record_views.c.id).where(showing, not_(visible_records(identity))).limit(1)
    return session.execute(hidden).first() is not None
