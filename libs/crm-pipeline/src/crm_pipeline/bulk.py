"""The bulk create of a kind's records (``POST /v1/{records}/bulk`` action create, and imports):
domain code taking a session and the caller's identity, so the route and the import worker make
records the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_kit.bulk import item_error, load_item
from crm_kit.errors import DomainError
from crm_kit.identity import Identity
from crm_kit.imports.jobs import Importer
from crm_pipeline.errors import KeysBusy, OtherOffice
from crm_pipeline.events import Actor
from crm_pipeline.kind import RecordKind
from crm_pipeline.records import Records
from crm_pipeline.schemas import bulk_schemas, record_schemas
from crm_pipeline.tables import IMPORT_KEY

Pending = tuple[int, dict[str, Any], str, str]  # (index, data, key, office)


def check_office(identity: Identity, data: Mapping[str, Any]) -> None:
    """``OtherOffice`` unless the record stays in the caller's office or the caller is an admin."""
    office = data.get("office_id")
    if office and office != identity.office_id and "admin" not in identity.roles:
        raise OtherOffice()


def bulk_create(records: Records, session: Session, identity: Identity, item_schema: Schema,
                items: list[Any]) -> list[dict[str, Any]]:
    """Each item (a create body plus its ``key``) checked as a single create and made with the same
    ``created`` event, unless its key was used before in that office (``exists``); one result per
    item, in order: ``{index, status: created|exists|error, id, error[, errors]}``."""
    actor = Actor.of(identity, cause="bulk")
    results: list[dict[str, Any]] = [{} for _ in items]
    pending: list[Pending] = []
    for index, raw in enumerate(items):
        try:
            data = load_item(raw, item_schema)
            check_office(identity, data)
        except DomainError as exc:
            results[index] = {"index": index, "status": "error", "id": None, **item_error(exc)}
            continue
        key = data.pop("key")
        pending.append((index, data, key, data.get("office_id") or identity.office_id))
    made: dict[tuple[str, str], str] = {}  # (office, key) -> the record's id, seen before or made now
    while pending:  # rounds: the first item of each key; a repeat waits for it (it may fail)
        this_round, later, taken = [], [], set()
        for item in pending:
            index, _, key, office = item
            if (office, key) in made:
                results[index] = {"index": index, "status": "exists", "id": made[(office, key)], "error": None}
            elif (office, key) in taken:
                later.append(item)
            else:
                taken.add((office, key))
                this_round.append(item)
        _create_round(records, session, this_round, actor, made, results)
        pending = later
    return results


def _create_round(records: Records, session: Session, items: list[Pending], actor: Actor,
                  made: dict[tuple[str, str], str], results: list[dict[str, Any]]) -> None:
    """Items with distinct keys: those whose key is taken exist; the others are created at once.
    A concurrent call that took one of the keys meanwhile: looked up again and retried."""
    table = records.table
    for _ in range(3):
        keys = {key for _, _, key, _ in items}
        if keys:
            found = session.execute(select(table.c.id, table.c.office_id, table.c[IMPORT_KEY])
                                    .where(table.c[IMPORT_KEY].in_(keys))).all()
            made.update({(r.office_id, r[2]): r.id for r in found})
        fresh = [item for item in items if (item[3], item[2]) not in made]
        for index, _, key, office in items:
            if (office, key) in made:
                results[index] = {"index": index, "status": "exists", "id": made[(office, key)], "error": None}
        savepoint = session.begin_nested()
        try:
            rows = records.create_many(session, [(data, key) for _, data, key, _ in fresh], actor)
            savepoint.commit()
        except IntegrityError:
            savepoint.rollback()
            items = fresh
            continue
        for (index, _, key, office), row in zip(fresh, rows, strict=True):
            if isinstance(row, DomainError):
                results[index] = {"index": index, "status": "error", "id": None, **item_error(row)}
            else:
                made[(office, key)] = row.id
                results[index] = {"index": index, "status": "created", "id": row.id, "error": None}
        return
    raise KeysBusy()


def bulk_item_schema(kind: RecordKind) -> Schema:
    """The schema one bulk create item is loaded with: the create body plus ``key``."""
    _, item = bulk_schemas(kind, record_schemas(kind).create)
    schema = item()
    schema.unknown = RAISE
    return schema


def importer(kind: RecordKind, tables: Mapping[str, Table]) -> Importer:
    """The kind's imports (``crm_kit.imports``): its create permission, item schema and this bulk create."""
    records = Records(kind, tables)
    item_schema = bulk_item_schema(kind)

    def create_batch(session: Session, identity: Identity, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return bulk_create(records, session, identity, item_schema, items)

    return Importer(collection=kind.plural, permission=kind.permission("create"), item_schema=item_schema,
                    create_batch=create_batch,
                    example_columns=kind.import_columns)
