"""Record read models: the newest known version of each lead and opportunity, from their events.

Catalogue (which stage each record is in), linking (a record's title, office and main contact)
and triggers (a record's state for conditions) each keep such a table in their own database;
this is the one implementation of keeping it. Every record event carries the record after
its change, so any event type (created, stage changed, converted, later ones) updates the
view; events of one record arrive in order (key = record id) and versions guard against
replays and late deliveries anyway.

A reader declares its table (``id`` and ``version`` columns, plus ``deleted`` when it keeps
tombstones) and how a record becomes its columns; ``apply`` runs in the reader's consumer
transaction and says what it did, so the reader can react (arm a trigger, sync a contact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm.events.v1.records_pb2 import PipelineRecord
from crm_events.envelope import record_state
from crm_events.topics import RECORD_TOPICS
from crm_kafka.worker import ConsumerSpec
from crm_kit.db import insert_on_conflict

__all__ = ["RECORD_TOPICS", "RecordView", "Seen"]


@dataclass(frozen=True)
class Seen:
    """What one event did to the view."""

    record: PipelineRecord | None = None  # the record the event carries, if it carries one
    deleted: str | None = None  # the id of the record the event deleted
    stored: bool = False  # the view now holds this version (first seen, newer, or the same again)
    newer: bool = False  # strictly newer than what the view held (or first seen)


@dataclass(frozen=True)
class RecordView:
    """One reader's table of records, kept from ``RECORD_TOPICS``.

    ``columns`` maps a record (and its envelope) to the reader's columns, ``id`` and ``version``
    aside. Without ``tombstone`` a deleted record's row is removed; with it the row stays
    (``deleted`` true, ``tombstone``'s columns for a record never seen), so a late event of a
    deleted record cannot bring it back.
    """

    table: Table
    columns: Callable[[PipelineRecord, Envelope], Mapping[str, Any]]
    tombstone: Callable[[Envelope], Mapping[str, Any]] | None = None
    # The upsert per (dialect, columns), built once: building it per event, with the values in it,
    # cost more CPU than running it (SQLAlchemy coerces every value and keys the statement afresh).
    _upserts: dict[tuple[str, frozenset[str]], Any] = field(default_factory=dict, compare=False, repr=False)

    def apply(self, session: Session, envelope: Envelope) -> Seen:
        """Take ``envelope`` into the view (any envelope of the record topics)."""
        if envelope.WhichOneof("payload") == "record_deleted":
            return self._forget(session, envelope)
        record = record_state(envelope)
        if record is None or not record.id:
            return Seen()
        t = self.table
        values = {**self.columns(record, envelope), "version": record.version}
        if self.tombstone:
            values["deleted"] = False
        # The usual case in one statement: a record first seen, or strictly newer than the view's.
        if session.execute(self._upsert(session, values), {"id": record.id, **values}).first() is not None:
            return Seen(record=record, stored=True, newer=True)
        # The same version again (a redelivery), an older one, or a deleted record.
        wanted = [t.c.version, t.c.deleted] if self.tombstone else [t.c.version]
        current = session.execute(select(*wanted).where(t.c.id == record.id)).first()
        if current is None or (self.tombstone and current.deleted) or record.version < current.version:
            return Seen(record=record)  # deleted meanwhile, or older than what is known
        session.execute(update(t).where(t.c.id == record.id).values(**values))
        return Seen(record=record, stored=True)

    def _upsert(self, session: Session, values: Mapping[str, Any]) -> Any:
        """``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE`` the row is older (and not deleted)
        ``RETURNING id``, with a parameter per column: built once per dialect and set of columns."""
        key = (session.get_bind().dialect.name, frozenset(values))
        upsert = self._upserts.get(key)
        if upsert is None:
            t = self.table
            upsert = insert_on_conflict(session, t).values(
                {name: bindparam(name, type_=t.c[name].type) for name in ("id", *values)})
            newer = t.c.version < upsert.excluded.version
            if self.tombstone:
                newer = newer & t.c.deleted.is_(False)
            upsert = upsert.on_conflict_do_update(index_elements=[t.c.id], where=newer,
                                                  set_={name: upsert.excluded[name] for name in values})
            upsert = self._upserts.setdefault(key, upsert.returning(t.c.id))
        return upsert

    def _forget(self, session: Session, envelope: Envelope) -> Seen:
        t = self.table
        record_id = envelope.record_deleted.id or envelope.aggregate_id
        if self.tombstone is None:
            session.execute(delete(t).where(t.c.id == record_id))
            return Seen(deleted=record_id)
        current = session.execute(select(t.c.version).where(t.c.id == record_id)).first()
        version = max(envelope.aggregate_version, current.version if current else 0)
        if current is None:
            session.execute(t.insert().values(id=record_id, **self.tombstone(envelope), deleted=True, version=version))
        else:
            session.execute(update(t).where(t.c.id == record_id).values(deleted=True, version=version))
        return Seen(deleted=record_id)

    def consumer(self, name: str, handler: Callable[[Session, Envelope], None] | None = None) -> ConsumerSpec:
        """A worker consumer (group ``<service>.<name>``) of the record topics that applies events to
        this view, or runs ``handler`` (which calls ``apply`` and reacts)."""
        def apply(session: Session, envelope: Envelope) -> None:
            self.apply(session, envelope)

        return ConsumerSpec(name, list(RECORD_TOPICS), handler or apply)
