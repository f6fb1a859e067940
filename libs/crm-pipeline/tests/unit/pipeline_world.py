"""The world of the pipeline's fast tests (``conftest`` makes one per test).

``Pipeline`` is one service's database: its ``Records``, a catalogue of stage groups OPEN and
CLOSED, stages NEW (the default), NEXT, WON (the default end stage), LOST (an end stage) and OLD
(inactive), source WEB, source GONE (inactive) and group VIP; ``company`` is a company linking
told it about.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.struct_pb2 import Struct
from sqlalchemy import select
from sqlalchemy.orm import Session

from crm.events.v1.catalogue_pb2 import CatalogueEntry
from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.linking_pb2 import LinkingChange
from crm_catalogue_view import apply_catalogue_event
from crm_events.envelope import decode, new_envelope
from crm_kafka.outbox import OUTBOX
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import Database
from crm_kit.identity import Identity
from crm_kit.service import find_service
from crm_leads.kind import LEAD
from crm_opportunities.kind import OPPORTUNITY
from crm_pipeline.events import Actor
from crm_pipeline.kind import RecordKind
from crm_pipeline.records import Records
from crm_pipeline.references import OpportunityViews, file_handler

KINDS = {"leads": LEAD, "opportunities": OPPORTUNITY}
ALICE = Identity(user_id="alice", name="Alice", office_id="o1", roles=("marketing",),
                 permissions=frozenset({"leads:create", "leads:edit", "opportunities:edit"}))
ACTOR = Actor.of(ALICE)


class Pipeline:
    """One records service's database with a small catalogue (see the module's docstring)."""

    def __init__(self, kind: RecordKind, db: Database, ids: dict[str, str]) -> None:
        self.kind = kind
        self.db = db
        self.ids = ids
        tables = find_service(kind.plural).metadata.tables
        self.tables = {"records": tables[kind.plural], "stage_history": tables["stage_history"],
                       "record_groups": tables["record_groups"], "known_files": tables["known_files"],
                       "attachments": tables["attachments"]}
        if kind == LEAD:
            self.tables["opportunity_views"] = tables["opportunity_views"]
        self.records = Records(kind, self.tables)
        self.views = OpportunityViews(self.tables.get("opportunity_views"))

    # -- the world around the records ------------------------------------------------------------

    def put(self, entity: str, code: str, *, kind: str | None = None, active: bool = True, index: int = 0,
            **attributes: Any) -> str:
        """A catalogue entry, as the catalogue's event brings it to the service's copy."""
        entry_id = str(uuid.uuid4())
        attrs = Struct()
        attrs.update(attributes)
        entry = CatalogueEntry(id=entry_id, kind=kind or self.kind.kind, entity=entity, code=code,
                               names={"en": code.title()}, index=index, active=active, version=1, attributes=attrs)
        aggregate = "stage" if entity == "stage" else "table_entry"
        with self.db.transaction() as s:
            apply_catalogue_event(s, new_envelope(f"catalogue.{aggregate}.updated", aggregate, entry_id, 1, entry))
        self.ids[code.lower()] = entry_id
        return entry_id

    def seed(self) -> None:
        self.put("stage_groups", "OPEN")
        self.put("stage_groups", "CLOSED")
        self.put("stage", "NEW", index=1, is_default=True, stage_group_id=self.ids["open"])
        self.put("stage", "NEXT", index=2, stage_group_id=self.ids["open"])
        self.put("stage", "WON", index=3, is_end=True, is_default_end=True, stage_group_id=self.ids["closed"])
        self.put("stage", "LOST", index=4, is_end=True, stage_group_id=self.ids["closed"])
        self.put("stage", "OLD", index=5, active=False, stage_group_id=self.ids["open"])
        self.put("sources", "WEB")
        self.put("sources", "GONE", active=False)
        self.put("groups", "VIP")
        self.put("stage", "START", kind="opportunity", index=1, is_default=True)  # a conversion's new opportunity
        self.ids["company"] = self.file("company")

    def file(self, entity: str) -> str:
        """A company or contact linking created."""
        file_id = str(uuid.uuid4())
        change = LinkingChange(entity=entity, id=file_id, version=1)
        with self.db.transaction() as s:
            file_handler(self.records)(s, new_envelope(f"linking.{entity}.created", entity, file_id, 1, change))
        return file_id

    # -- looking at the outcome -------------------------------------------------------------------

    def get(self, record_id: str) -> Any:
        with self.db.transaction() as s:
            return self.records.get(s, record_id)

    def history(self, record_id: str) -> list[tuple[str | None, str, str]]:
        table = self.tables["stage_history"]
        with self.db.transaction() as s:
            rows = s.execute(select(table.c.from_stage_id, table.c.to_stage_id, table.c.cause)
                             .where(table.c.record_id == record_id).order_by(table.c.id)).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def published(self) -> list[Envelope]:
        """Every event in the outbox, oldest first (what the relay would send)."""
        with self.db.transaction() as s:
            return [decode(p) for p in s.execute(select(OUTBOX.c.payload).order_by(OUTBOX.c.id)).scalars()]

    def types(self) -> list[str]:
        return [e.event_type for e in self.published()]


def pending(session: Session) -> list[str]:
    """The event types the session's unit of work will write when it commits."""
    return [envelope.event_type for _, envelope, _ in UnitOfWork.of(session).pending]
