"""What the fast tests of linking's rules work with: a caller (``person``) and a linking database
seen as a user sees it (``World``): roles in the catalogue copy, records fed to the read model as
their services send them, files as rows, the contacts tab, the committed events."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.struct_pb2 import Struct
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Actor, Envelope
from crm.events.v1.records_pb2 import PipelineRecord, RecordDeleted
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kit.db import Database, utcnow
from crm_kit.identity import Identity
from crm_kit.web.auth import DEFAULT_ROLE_PERMISSIONS
from crm_linking.records import apply_record_event
from crm_linking.tables import companies, contacts, job_orders, record_contacts, record_views

ROLE_CODES = ("MAIN", "SIGN", "OTHER", "EXTRA")


def person(user: str = "u1", office: str = "o1", roles: tuple[str, ...] = ("marketing", "account_manager")) -> Identity:
    """A caller with the default permissions of ``roles`` (the default: may edit files, leads and
    opportunities, in their own office; ``admin`` sees every office)."""
    granted = frozenset(p for role in roles for p in DEFAULT_ROLE_PERMISSIONS[role])
    return Identity(user_id=user, name=user.upper(), office_id=office, roles=roles, permissions=granted)


class World:
    """One linking database with MAIN, SIGN, OTHER and EXTRA roles for leads and opportunities."""

    def __init__(self, db: Database, roles: dict[tuple[str, str], str] | None = None) -> None:
        self.db = db
        self.roles = roles if roles is not None else {
            (kind, code): self.put_role(kind, code, i) for kind in ("lead", "opportunity")
            for i, code in enumerate(ROLE_CODES)}

    def put_role(self, kind: str, code: str, index: int = 0) -> str:
        entry_id = str(uuid.uuid4())
        entry = CatalogueEntry(id=entry_id, kind=kind, entity="roles", code=code, names={"en": code.title()},
                               index=index, active=True, version=1, attributes=Struct())
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope("catalogue.table_entry.created", "roles", entry_id, 1, entry))
        return entry_id

    def role(self, kind: str, code: str) -> str:
        return self.roles[(kind, code)]

    # records, as their services send them

    @staticmethod
    def record_event(kind: str, record_id: str, version: int, *, office: str = "o1", title: str = "Deal",
                     **fields: Any) -> Envelope:
        state = PipelineRecord(id=record_id, kind=kind, title=title, owner_id="u1", office_id=office,
                               stage_id="stage-new", version=version, **fields)
        return new_envelope(f"{kind}.updated" if version > 1 else f"{kind}.created", kind, record_id, version, state,
                            actor=Actor(user_id="u1", kind="user"), producer=f"{kind}s")

    @staticmethod
    def deleted_event(kind: str, record_id: str, version: int) -> Envelope:
        return new_envelope(f"{kind}.deleted", kind, record_id, version, RecordDeleted(id=record_id, kind=kind),
                            actor=Actor(user_id="u1", kind="user"))

    def feed(self, envelope: Envelope) -> None:
        """What the worker's records consumer does with one delivery (without its inbox)."""
        with self.db.transaction() as s:
            apply_record_event(s, envelope)

    def record(self, kind: str = "lead", *, office: str = "o1", version: int = 1, **fields: Any) -> str:
        record_id = str(uuid.uuid4())
        self.feed(self.record_event(kind, record_id, version, office=office, **fields))
        return record_id

    # files, as rows

    def insert(self, table: Any, **values: Any) -> str:
        now = utcnow()
        values.setdefault("id", str(uuid.uuid4()))
        with self.db.transaction() as s:
            s.execute(insert(table).values(version=1, created_at=now, created_by="seed", modified_at=now,
                                           modified_by="seed", **values))
        return str(values["id"])

    def company(self, name: str = "Acme") -> str:
        return self.insert(companies, name=name)

    def contact(self, first: str = "Anna", last: str = "Smit", company_id: str | None = None) -> str:
        return self.insert(contacts, first_name=first, last_name=last, company_id=company_id)

    def job_order(self, title: str = "Welder") -> str:
        return self.insert(job_orders, title=title)

    # what a user would see

    def view_row(self, session: Session, kind: str, record_id: str) -> Any:
        return session.execute(select(record_views).where(record_views.c.id == record_id,
                                                          record_views.c.kind == kind)).first()

    def tab(self, kind: str, record_id: str) -> dict[str, str | None]:
        """The record's contacts tab: contact id -> the code of its role (None: no role)."""
        codes = {role_id: code for (k, code), role_id in self.roles.items() if k == kind}
        with self.db.transaction() as s:
            rows = s.execute(select(record_contacts).where(record_contacts.c.record_kind == kind,
                                                           record_contacts.c.record_id == record_id)).all()
        return {r.contact_id: codes.get(r.role_id) if r.role_id else None for r in rows}

    def events(self) -> list[Envelope]:
        """The events in the outbox (committed), in order."""
        with self.db.transaction() as s:
            return [decode(p) for p in s.execute(select(OUTBOX.c.payload).order_by(OUTBOX.c.id)).scalars()]
