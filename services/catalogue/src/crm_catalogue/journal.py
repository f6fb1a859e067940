"""What one transaction changed: each touched entity gets one new version and one event.

A write often changes more than the entity it names (a new default stage clears the old
one; linking a template changes the template's ``stage_ids`` too). Every rule reports each
entity whose view changes here; ``publish`` then hands one event per entity, with its
final state however often it was touched, to the transaction's unit of work, which writes
them to the outbox when the transaction commits (and drops them when it rolls back).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from crm_catalogue.errors import ChangedMeanwhile
from crm_catalogue.events import entry_event
from crm_catalogue.views import Aggregate, View
from crm_events.topics import CATALOGUE
from crm_kafka.unit_of_work import UnitOfWork
from crm_kit.db import utcnow
from crm_kit.identity import Identity


class Journal:
    """Bumps versions (once per entity and transaction) and collects the events of a change.

    ``identity``: who makes the change; ``None`` for the catalogue itself (the starter data).
    """

    def __init__(self, session: Session, identity: Identity | None) -> None:
        self.session = session
        self.identity = identity
        # (aggregate, id) -> (what, snapshot of a deleted entity), in the order things happened.
        self._events: dict[tuple[str, str], tuple[Aggregate, str, View | None]] = {}

    def created(self, aggregate: Aggregate, entity_id: str) -> None:
        """``entity_id`` was inserted at version 1."""
        self._events[(aggregate.name, entity_id)] = (aggregate, "created", None)

    def changed(self, aggregate: Aggregate, entity_id: str, expected_version: int | None = None) -> None:
        """The view of ``entity_id`` changes: its version goes up by one (once per transaction).

        With ``expected_version`` the bump is also the optimistic-concurrency check: a writer
        that committed since the entity was read makes it ``ChangedMeanwhile``.
        """
        if (aggregate.name, entity_id) in self._events:
            return
        self._bump(aggregate, entity_id, expected_version)
        self._events[(aggregate.name, entity_id)] = (aggregate, "updated", None)

    def deleted(self, aggregate: Aggregate, view: View) -> None:
        """``view``'s entity is about to be deleted: its last event has the next version.

        Call before removing it (and its links), with the view as it was read.
        """
        self._bump(aggregate, view["id"], view["version"])
        self._events[(aggregate.name, view["id"])] = (aggregate, "deleted", {**view, "version": view["version"] + 1})

    def _bump(self, aggregate: Aggregate, entity_id: str, expected_version: int | None) -> None:
        table = aggregate.table
        stmt = update(table).where(table.c.id == entity_id).values(version=table.c.version + 1, modified_at=utcnow())
        if expected_version is not None:
            stmt = stmt.where(table.c.version == expected_version)
        result: Any = self.session.execute(stmt)
        if result.rowcount != 1:
            raise ChangedMeanwhile(f"The {aggregate.name.replace('_', ' ')} changed while this request was processed; "
                                   "fetch it again and retry.")

    def publish(self) -> None:
        """Add one event per touched entity, with its state at the end of the change, to the unit of
        work; call it when the change is complete (the commit writes them)."""
        unit_of_work = UnitOfWork.of(self.session)
        for (_name, entity_id), (aggregate, what, snapshot) in self._events.items():
            view = snapshot or aggregate.load(self.session, entity_id)
            assert view is not None, f"{aggregate.name} {entity_id} vanished within its own transaction"
            unit_of_work.add(CATALOGUE, entry_event(aggregate.name, what, view, self.identity))
        self._events.clear()
