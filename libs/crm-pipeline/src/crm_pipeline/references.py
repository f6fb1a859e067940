"""What a records service knows of other services' data, for its reference checks.

* **Companies and contacts** (``known_files``), from linking's events on ``crm.linking.v1``
  (``linking.company.*``, ``linking.contact.*``): a record's ``company_id`` and ``contact_id``
  must name an existing one (422 otherwise). The gateway's read-your-writes makes a file the
  client created a moment ago count (its token makes this service wait for linking's event),
  and without a token a 422 is asked again after waiting for the latest writes.
* **Nothing left dangling**: when a company or contact is deleted, every record naming it
  has that field cleared - a normal update with its event (actor ``system``). Linking refuses
  to delete a file that a record references, but it may not have heard of a record created
  a moment before; this closes that race. A create or change that checks a file takes a
  share lock on its row, so the deletion (which updates the row first, then looks for
  records naming it) cannot miss a record committed in between.
* **Opportunities** (leads only, ``opportunity_views``), from ``crm.opportunities.v1``:
  converting a lead into an existing opportunity needs to know that it exists, who may see it
  and whether a lead was converted into it already.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_events.envelope import record_state
from crm_kafka.consumer import Dispatch, Handler
from crm_kit.db import utcnow
from crm_pipeline.errors import UnknownFile
from crm_pipeline.kind import OPPORTUNITY_NAMES

log = logging.getLogger(__name__)

# The record fields that name a linking file, and the file's entity.
FILE_FIELDS = {"company_id": "company", "contact_id": "contact"}
FILE_EVENTS = tuple(f"linking.{entity}.{what}" for entity in ("company", "contact")
                    for what in ("created", "updated", "deleted"))
EXISTS, DELETED, UNKNOWN = "exists", "deleted", "unknown"


def unknown_file(field: str, value: str) -> UnknownFile:
    return UnknownFile(field, FILE_FIELDS[field], value)


class KnownFiles:
    """The ``known_files`` table: read (reference checks) and kept (linking's events)."""

    def __init__(self, table: Table | None) -> None:
        self.table = table

    def state(self, session: Session, file_id: str, entity: str, *, lock: bool = False) -> str:
        """EXISTS, DELETED or UNKNOWN (never heard of it, or it is another kind of file)."""
        if self.table is None:
            return UNKNOWN
        stmt = select(self.table.c.entity, self.table.c.deleted).where(self.table.c.id == file_id)
        if lock:
            stmt = stmt.with_for_update(read=True)  # FOR SHARE on PostgreSQL (SQLite: writes are serial)
        row = session.execute(stmt).first()
        if row is None or row.entity != entity:
            return UNKNOWN
        return DELETED if row.deleted else EXISTS

    def require(self, session: Session, values: Mapping[str, Any]) -> None:
        """``UnknownFile`` for a ``company_id``/``contact_id`` in ``values`` that names no existing file."""
        for field, entity in FILE_FIELDS.items():
            value = values.get(field)
            if value and self.state(session, value, entity, lock=True) != EXISTS:
                raise unknown_file(field, value)

    def apply(self, session: Session, envelope: Envelope) -> str | None:
        """Keep the newest state of the file ``envelope`` is about; its id when this event
        deleted it (the caller clears the references), else None."""
        if self.table is None or envelope.WhichOneof("payload") != "linking_change":
            return None
        change = envelope.linking_change
        entity = change.entity
        if entity not in FILE_FIELDS.values() or not change.id:
            return None
        deleted = change.deleted or envelope.event_type.endswith(".deleted")
        version = change.version or envelope.aggregate_version
        table = self.table
        # The update first: it takes the row's lock before the references are looked for.
        current = session.execute(select(table.c.version, table.c.deleted).where(table.c.id == change.id)
                                  .with_for_update()).first()
        values = {"entity": entity, "version": version, "deleted": deleted, "updated_at": utcnow()}
        if current is None:
            session.execute(table.insert().values(id=change.id, **values))
        elif current.deleted or version < current.version or (version == current.version and not deleted):
            return None  # older, repeated, or about a file deleted already: a deletion is final
        else:
            session.execute(update(table).where(table.c.id == change.id).values(**values))
        return change.id if deleted else None


def file_handler(records: Any) -> Handler:
    """The handler of the ``files`` consumer (``crm.linking.v1``): keep ``known_files``, and
    clear the ``company_id``/``contact_id`` of the records that name a deleted file."""
    from crm_pipeline.events import system_actor

    files = records.files

    def handle(session: Session, envelope: Envelope) -> None:
        gone = files.apply(session, envelope)
        if gone is None:
            return
        field = "company_id" if envelope.linking_change.entity == "company" else "contact_id"
        column = records.table.c[field]
        actor = system_actor(envelope)
        for row in session.execute(select(records.table).where(column == gone)).all():
            log.info("%s %s named deleted %s %s: cleared", records.kind.kind, row.id, field, gone)
            records.update(session, row, {field: None}, actor, check=False)

    return Dispatch(dict.fromkeys(FILE_EVENTS, handle))


class OpportunityViews:
    """Leads only: the ``opportunity_views`` table, kept from ``crm.opportunities.v1``."""

    def __init__(self, table: Table | None) -> None:
        self.table = table

    def get(self, session: Session, opportunity_id: str) -> Any:
        if self.table is None:
            return None
        return session.execute(select(self.table).where(self.table.c.id == opportunity_id,
                                                        self.table.c.deleted.is_(False))).first()

    def apply(self, session: Session, envelope: Envelope) -> None:
        """Keep the newest state of the opportunity an event carries (deleted ones stay as rows)."""
        if self.table is None:
            return
        table = self.table
        if envelope.WhichOneof("payload") == "record_deleted":
            opportunity_id = envelope.record_deleted.id or envelope.aggregate_id
            values: dict[str, Any] = {"deleted": True, "version": envelope.aggregate_version, "updated_at": utcnow()}
            current = session.execute(select(table.c.id).where(table.c.id == opportunity_id)).first()
            if current is None:
                session.execute(table.insert().values(id=opportunity_id, office_id="", lead_id=None, **values))
            else:
                session.execute(update(table).where(table.c.id == opportunity_id).values(**values))
            return
        record = record_state(envelope)
        if record is None or not record.id or record.kind not in ("", OPPORTUNITY_NAMES.kind):
            return
        current = session.execute(select(table.c.version, table.c.deleted).where(table.c.id == record.id)).first()
        values = {"office_id": record.office_id, "lead_id": record.lead_id or None, "version": record.version,
                  "deleted": False, "updated_at": utcnow()}
        if current is None:
            session.execute(table.insert().values(id=record.id, **values))
        elif not current.deleted and record.version > current.version:
            session.execute(update(table).where(table.c.id == record.id).values(**values))


def opportunity_handler(views: OpportunityViews) -> Handler:
    """The handler of the leads service's ``opportunities`` consumer."""

    def handle(session: Session, envelope: Envelope) -> None:
        if envelope.event_type.startswith("opportunity."):
            views.apply(session, envelope)

    return handle
