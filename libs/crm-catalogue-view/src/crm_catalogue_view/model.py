"""The catalogue copy: its table, the event handler that keeps it, and the queries on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict
from sqlalchemy import JSON, Boolean, Column, Index, Integer, MetaData, String, Table, bindparam, select, update
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_events.topics import CATALOGUE
from crm_kafka.consumer import Dispatch
from crm_kafka.worker import ConsumerSpec
from crm_kit.db import UTCDateTime, utcnow
from crm_kit.errors import Invalid

if TYPE_CHECKING:  # alembic only for migrations: the api and the worker never load it
    from alembic.operations import Operations

TOPIC = CATALOGUE  # what the copy is kept from (the registry's name)
# The catalogue's 8 tables per kind, as the events name them (``entity``).
TABLE_NAMES = ("attributes", "categories", "groups", "priorities", "procedures", "roles", "sources", "stage_groups")
_EVENT_TYPES = tuple(f"catalogue.{entity}.{what}" for entity in ("stage", "table_entry", "template")
                     for what in ("created", "updated", "deleted"))


def _columns() -> list[Column[Any]]:
    return [
        Column("id", String(36), primary_key=True),
        Column("kind", String(20), nullable=False),  # "lead" | "opportunity" | "" (templates)
        Column("entity", String(40), nullable=False),  # "stage" | "template" | a table name
        Column("code", String(100), nullable=False),
        Column("names", JSON, nullable=False),
        Column("index", Integer, nullable=False),
        Column("active", Boolean, nullable=False),
        Column("deleted", Boolean, nullable=False),
        Column("version", Integer, nullable=False),
        Column("attributes", JSON, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
    ]


def catalogue_view_table(metadata: MetaData) -> Table:
    """Define ``catalogue_view`` on a service's metadata."""
    return Table("catalogue_view", metadata, *_columns(), Index("ix_catalogue_view_kind_entity", "kind", "entity"))


def create_catalogue_view_table(op: Operations) -> None:
    """DDL for ``catalogue_view``, called from a service's migration."""
    op.create_table("catalogue_view", *_columns())
    op.create_index("ix_catalogue_view_kind_entity", "catalogue_view", ["kind", "entity"])


VIEW = catalogue_view_table(MetaData())
_KNOWN = "crm_catalogue_view"  # session.info: the entries this session read, by (table, id)


def apply_catalogue_event(session: Session, envelope: Envelope) -> None:
    """Keep the newest version of the entity the event carries (older or repeated: no-op).

    Deletions are kept as rows with ``deleted`` set, so a late, older event cannot bring a
    deleted entity back.
    """
    if envelope.WhichOneof("payload") != "catalogue_entry":
        return
    entry = envelope.catalogue_entry
    current = session.execute(select(VIEW.c.version).where(VIEW.c.id == entry.id)).scalar()
    if current is not None and current >= entry.version:
        return
    values = {
        "kind": entry.kind,
        "entity": entry.entity,
        "code": entry.code,
        "names": dict(entry.names),
        "index": entry.index,
        "active": entry.active and not entry.deleted,
        "deleted": entry.deleted,
        "version": entry.version,
        "attributes": MessageToDict(entry.attributes) if entry.HasField("attributes") else {},
        "updated_at": utcnow(),
    }
    session.info.pop(_KNOWN, None)  # what this transaction read of the copy may be older now
    if current is None:
        session.execute(VIEW.insert().values(id=entry.id, **values))
    else:
        session.execute(update(VIEW).where(VIEW.c.id == entry.id).values(**values))


def consumer_spec(name: str = "catalogue") -> ConsumerSpec:
    """The consumer that keeps a service's catalogue copy (add it to the worker plan)."""
    return ConsumerSpec(name, [TOPIC], Dispatch(dict.fromkeys(_EVENT_TYPES, apply_catalogue_event)))


@dataclass(frozen=True)
class CatalogueEntryView:
    """One catalogue entity as this service knows it."""

    id: str
    kind: str
    entity: str
    code: str
    names: dict[str, str]
    index: int
    active: bool
    version: int
    attributes: dict[str, Any] = field(default_factory=dict)

    def name(self, language: str, default_language: str = "en") -> str:
        """The name in ``language``, else the default language, else any."""
        for lang in (language, language.split("-")[0], default_language):
            if lang in self.names:
                return self.names[lang]
        return next(iter(self.names.values()), self.code)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)


class CatalogueReferenceError(Invalid, ValueError):
    """An id a request names is not a usable catalogue entry; ``field`` says which.

    A domain error (``Invalid``): raised through to the web edge, it is the 422 naming the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message, errors=[{"field": field_name, "message": message}])
        self.field = field_name
        self.message = message


_SINGULAR = {"priorities": "priority", "categories": "category"}


def _entity_label(entity: str) -> str:
    """A table's entry in words: "stage_groups" -> "stage group", "priorities" -> "priority"."""
    if entity == "stage":
        return "stage"
    return _SINGULAR.get(entity) or entity.replace("_", " ").removesuffix("s")


class CatalogueView:
    """Queries on a service's catalogue copy."""

    def __init__(self, table: Table = VIEW) -> None:
        self.table = table
        # Asked on every create, stage change and list page: built once, with parameters.
        t = table
        self._by_id = select(t).where(t.c.id == bindparam("entry_id"), t.c.deleted.is_(False))
        of_kind = select(t).where(t.c.kind == bindparam("kind"), t.c.entity == bindparam("entity"),
                                  t.c.deleted.is_(False))
        self._entries = {False: of_kind.order_by(t.c.index, t.c.code),
                         True: of_kind.where(t.c.active.is_(True)).order_by(t.c.index, t.c.code)}

    def _row_to_view(self, row: Any) -> CatalogueEntryView:
        return CatalogueEntryView(id=row.id, kind=row.kind, entity=row.entity, code=row.code, names=dict(row.names),
                                  index=row.index, active=row.active, version=row.version,
                                  attributes=dict(row.attributes or {}))

    def get(self, session: Session, entry_id: str) -> CatalogueEntryView | None:
        """The entity with this id, or None if unknown or deleted.

        Read once per session (a request, or a consumer's batch: a trigger's commands check the
        same group again and again); ``apply_catalogue_event`` forgets what was read."""
        known = session.info.setdefault(_KNOWN, {})
        key = (self.table.name, entry_id)
        if key not in known:
            row = session.execute(self._by_id, {"entry_id": entry_id}).first()
            known[key] = self._row_to_view(row) if row else None
        return known[key]  # type: ignore[no-any-return]

    def require(self, session: Session, entry_id: str, *, kind: str, entity: str, field_name: str,
                active: bool = True) -> CatalogueEntryView:
        """The active entity ``entry_id`` of ``kind`` and ``entity``, or CatalogueReferenceError."""
        label = _entity_label(entity)
        entry = self.get(session, entry_id)
        if entry is None:
            raise CatalogueReferenceError(field_name, f"There is no {kind} {label} with id {entry_id!r}.")
        if entry.entity != entity:
            raise CatalogueReferenceError(field_name, f"{entry_id!r} is a {_entity_label(entry.entity)}, "
                                                      f"not a {label}.")
        if entry.kind != kind:
            raise CatalogueReferenceError(field_name, f"{entry_id!r} is a {label} of the {entry.kind} catalogue, "
                                                      f"not of the {kind} one.")
        if active and not entry.active:
            raise CatalogueReferenceError(field_name, f"The {kind} {label} {entry.code!r} is inactive.")
        return entry

    def entries(self, session: Session, kind: str, entity: str, *,
                active_only: bool = False) -> list[CatalogueEntryView]:
        """Every (active) entity of ``kind`` and ``entity``, ordered by index then code."""
        rows = session.execute(self._entries[active_only], {"kind": kind, "entity": entity}).all()
        return [self._row_to_view(r) for r in rows]

    def stages(self, session: Session, kind: str, *, active_only: bool = False) -> list[CatalogueEntryView]:
        return self.entries(session, kind, "stage", active_only=active_only)

    def default_stage(self, session: Session, kind: str) -> CatalogueEntryView | None:
        """The stage new records of ``kind`` get, if one is configured."""
        return next((s for s in self.stages(session, kind, active_only=True) if s.attr("is_default")), None)

    def default_end_stage(self, session: Session, kind: str) -> CatalogueEntryView | None:
        """The end stage a converted lead moves to, if one is configured."""
        return next((s for s in self.stages(session, kind, active_only=True) if s.attr("is_default_end")), None)
