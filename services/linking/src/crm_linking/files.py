"""Companies, contacts, job orders, placements and activities: one implementation, five resources
(their rules and storage; ``file_routes.py`` declares their routes).

A ``FileSpec`` says what differs between the files - table, schemas, search columns, list
filters, references to other files, links to leads/opportunities, date order rules, who may see
one, which records show one, what else a delete touches - and ``file_routes`` declares the same
five routes (``POST``, ``GET`` list, ``GET``/``PATCH``/``DELETE`` one) for each. ``files:view``
reads, ``files:edit`` writes; putting an activity on (or taking it off) a lead or opportunity
also needs ``leads:edit`` / ``opportunities:edit``, since it changes that record's timeline.

Office visibility reaches the files through their records (``access.py``):

- activities: one on a lead or opportunity is visible (and editable) only to callers who may
  see that record; one on no record belongs to the office of whoever created it
  (``activities.office_id``). Any other activity is "not found" (404) and absent from lists; a
  list filtered by ``lead_id``/``opportunity_id`` of a record the caller cannot see is 404, as
  that record's tabs are. Putting an activity on a record the caller cannot see is the same 422
  as an unknown record.
- companies, contacts, job orders and placements are shared, but a write that would change what
  a record the caller cannot see shows is refused with 409 (``shown_on``): a company a record has
  as ``company_id``, a contact a record has as ``contact_id`` or on its contacts tab, a job order
  linked to a record, a placement of such a job order. Deleting a company changes its contacts
  and job orders (they lose it), so that is refused too when one of them is shown by such a record.
- deleting a company or contact a lead or opportunity references (``company_id``,
  ``contact_id``) or has on its contacts tab is refused with 409 for everyone (``in_use``):
  nothing is ever left pointing at a deleted file.

Every change goes through ``create_file`` / ``update_file`` / ``delete_file``, which check the
change (403, then 422 naming every bad field, then 409: the refusals of ``errors.py``), write the row, its
``linking.<entity>.created|updated|deleted`` event (the whole file as data) and the timeline
entries in the request's transaction. A PATCH that changes nothing writes nothing. Body
references are 422s naming the field; 404 is only for the file the URL names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from marshmallow import RAISE, Schema
from sqlalchemy import ColumnElement, Table, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_kit.bulk import IMPORT_KEY_LENGTH, item_error, load_item
from crm_kit.db import utcnow
from crm_kit.errors import DomainError
from crm_kit.identity import Identity
from crm_kit.imports import Importer
from crm_linking import file_schemas as schemas
from crm_linking.access import (
    activity_visible,
    hidden_records,
    load_record,
    require_record_edit,
)
from crm_linking.errors import (
    FileChangedMeanwhile,
    FileInUse,
    ImportKeysBusy,
    InvalidFileFields,
    OnHiddenRecord,
    UnknownFile,
    UnknownRecord,
)
from crm_linking.journal import note, publish
from crm_linking.links import remove_contact_link, remove_job_order_link
from crm_linking.tables import (
    activities,
    companies,
    contacts,
    import_keys,
    job_orders,
    placements,
    record_contacts,
    record_job_orders,
    record_views,
)

VIEW_FILES = "files:view"
EDIT_FILES = "files:edit"

View = dict[str, Any]
DeleteHook = Callable[[Session, Identity, View], None]
Visibility = Callable[[Identity], ColumnElement[bool]]
ShownOn = Callable[[Mapping[str, Any]], "ColumnElement[bool] | None"]
InUse = Callable[[Session, View], "str | None"]


@dataclass(frozen=True)
class FileSpec:
    """One kind of file and what differs about it."""

    collection: str  # the URL segment: "job-orders"
    entity: str  # events, messages and timeline types: "job_order"
    table: Table
    body: type[Schema]  # create body
    patch: type[Schema]  # the same fields, loaded partially for PATCH
    out: type[Schema]
    query: type[Schema]
    search: tuple[ColumnElement[Any], ...]  # what ``q`` looks in
    filters: tuple[str, ...] = ()  # list query parameters that are columns compared for equality
    references: Mapping[str, tuple[Table, str]] = field(default_factory=dict)  # field -> (table, label)
    record_links: Mapping[str, str] = field(default_factory=dict)  # field -> record kind
    timeline_fields: tuple[str, ...] = ()  # copied into the record's timeline entries
    ordered: tuple[tuple[str, str], ...] = ()  # (earlier, later): later may not be before earlier
    before_delete: DeleteHook | None = None  # what else goes (or changes) with the file
    example: Mapping[str, Any] | None = None  # a create body for the OpenAPI document
    visible_to: Visibility | None = None  # which files a caller may see (None: every file)
    office_owned: bool = False  # office_id is the creator's office
    shown_on: ShownOn | None = None  # the records (record_views rows) that show a file (or a new one)
    in_use: InUse | None = None  # why records keep the file from being deleted, if they do
    errors: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # route -> statuses it adds (OpenAPI)

    @property
    def label(self) -> str:
        return self.entity.replace("_", " ")

    @property
    def path(self) -> str:
        return f"/v1/{self.collection}"

    @cached_property
    def writable(self) -> tuple[str, ...]:
        return tuple(self.body().fields)


# -- the changes ---------------------------------------------------------------------------------

def load_file(session: Session, spec: FileSpec, file_id: str, identity: Identity | None = None) -> View:
    """The file as a dict of its columns; ``UnknownFile`` (also when ``identity`` may not see it)."""
    stmt = select(spec.table).where(spec.table.c.id == file_id)
    if identity is not None and spec.visible_to is not None:
        stmt = stmt.where(spec.visible_to(identity))
    row = session.execute(stmt).first()
    if row is None:
        raise UnknownFile(spec.label, file_id, maybe_hidden=spec.visible_to is not None)
    return dict(row._mapping)


def _guard_record_links(identity: Identity, spec: FileSpec, before: Mapping[str, Any] | None,
                        after: Mapping[str, Any] | None) -> None:
    """``RecordEditNeeded`` unless the caller may edit every kind of record this change links or unlinks."""
    for name, kind in spec.record_links.items():
        if (before or {}).get(name) != (after or {}).get(name):
            require_record_edit(identity, kind)


def _field_errors(session: Session, identity: Identity, spec: FileSpec, changes: Mapping[str, Any],
                  merged: Mapping[str, Any]) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    for name, (table, label) in spec.references.items():
        value = changes.get(name)
        if value is not None and session.execute(select(table.c.id).where(table.c.id == value)).first() is None:
            errors.append({"field": name, "message": f"There is no {label} with id {value!r}."})
    for name, kind in spec.record_links.items():
        value = changes.get(name)
        if value is None:
            continue
        try:
            load_record(session, kind, value, identity)
        except UnknownRecord:
            errors.append({"field": name, "message": f"There is no {kind} with id {value!r} "
                                                     "(or it is not visible to you)."})
    for earlier, later in spec.ordered:
        start, end = merged.get(earlier), merged.get(later)
        if start is not None and end is not None and end < start:
            errors.append({"field": later, "message": f"Must not be before {earlier}."})
    return errors


def refuse_hidden_records(session: Session, identity: Identity, spec: FileSpec,
                          views: Iterable[Mapping[str, Any]]) -> None:
    """``OnHiddenRecord`` when a record ``identity`` may not see shows one of ``views`` (the file
    before and after the change): the change would change what that record shows."""
    if spec.shown_on is None:
        return
    for view in views:
        showing = spec.shown_on(view)
        if showing is not None and hidden_records(session, identity, showing):
            what = "its job order is" if spec is PLACEMENTS else "it is"
            raise OnHiddenRecord(f"Refused: {what} on a lead or opportunity you cannot see (another office's), and "
                                 f"this change to the {spec.label} would change what that record shows. Someone "
                                 "who may see the record can make it.")


def _check(session: Session, identity: Identity, spec: FileSpec, current: View | None,
           changes: Mapping[str, Any]) -> None:
    """Refuse the change before anything is written: the record permissions first
    (``RecordEditNeeded``), then every bad field at once (``InvalidFileFields``), then
    ``OnHiddenRecord`` when a record the caller cannot see shows the file."""
    merged = {**(current or {}), **changes}
    _guard_record_links(identity, spec, current, merged)
    errors = _field_errors(session, identity, spec, changes, merged)
    if errors:
        raise InvalidFileFields(errors)
    refuse_hidden_records(session, identity, spec, [v for v in (current, merged) if v is not None])


def _publish(session: Session, identity: Identity, spec: FileSpec, what: str, view: View, *,
             version: int | None = None, deleted: bool = False) -> None:
    # The event names the first record the file is on (its data carries every link).
    record_kind, record_id = next(((kind, view[name]) for name, kind in spec.record_links.items() if view.get(name)),
                                  ("", ""))
    publish(session, f"linking.{spec.entity}.{what}", spec.entity, view["id"], view,
            version=version if version is not None else view["version"], record_kind=record_kind,
            record_id=record_id, deleted=deleted, identity=identity)


def _note_record_links(session: Session, spec: FileSpec, before: View | None, after: View | None) -> None:
    """``<entity>_removed`` / ``<entity>_added`` on the timeline of each record left / joined."""
    for name, kind in spec.record_links.items():
        old, new = (before or {}).get(name), (after or {}).get(name)
        if old == new:
            continue
        for record_id, view, what in ((old, before, "removed"), (new, after, "added")):
            if record_id and view is not None:
                data = {f"{spec.entity}_id": view["id"], **{f: view.get(f) for f in spec.timeline_fields}}
                note(session, kind, record_id, f"{spec.entity}_{what}", data)


def create_file(session: Session, identity: Identity, spec: FileSpec, body: Mapping[str, Any]) -> View:
    """Create a file from a validated body (fields left out are null); returns its view."""
    values = {name: body.get(name) for name in spec.writable}
    _check(session, identity, spec, None, values)
    if spec.office_owned:
        values["office_id"] = identity.office_id
    now = utcnow()
    file_id = str(uuid.uuid4())
    session.execute(insert(spec.table).values(id=file_id, **values, version=1, created_at=now,
                                              created_by=identity.user_id, modified_at=now,
                                              modified_by=identity.user_id))
    view = load_file(session, spec, file_id)
    _publish(session, identity, spec, "created", view)
    _note_record_links(session, spec, None, view)
    return view


def update_file(session: Session, identity: Identity, spec: FileSpec, current: View,
                body: Mapping[str, Any]) -> View:
    """Apply the fields of ``body`` that differ, with one version bump; nothing when none do."""
    changes = {name: value for name, value in body.items() if current.get(name) != value}
    if not changes:
        return current
    _check(session, identity, spec, current, changes)
    result: Any = session.execute(
        update(spec.table).where(spec.table.c.id == current["id"], spec.table.c.version == current["version"])
        .values(**changes, version=current["version"] + 1, modified_at=utcnow(), modified_by=identity.user_id))
    if result.rowcount != 1:  # someone else wrote between our read and this write
        raise FileChangedMeanwhile(spec.label)
    view = load_file(session, spec, current["id"])
    _publish(session, identity, spec, "updated", view)
    _note_record_links(session, spec, current, view)
    return view


def delete_file(session: Session, identity: Identity, spec: FileSpec, current: View) -> None:
    """Delete the file (and what goes with it), with its ``deleted`` event carrying its last state.

    ``RecordEditNeeded`` (record permissions), then ``FileInUse`` when a record uses the file
    (``in_use``: whoever asks) or ``OnHiddenRecord`` when a record the caller cannot see shows it.
    The row is locked first (PostgreSQL), so a link inserted concurrently either is seen here or
    fails on its foreign key.
    """
    _guard_record_links(identity, spec, current, None)
    if spec.in_use is not None:
        session.execute(select(spec.table.c.id).where(spec.table.c.id == current["id"]).with_for_update()).first()
        used = spec.in_use(session, current)
        if used:
            raise FileInUse(spec.label, used)
    refuse_hidden_records(session, identity, spec, [current])
    if spec.before_delete is not None:
        spec.before_delete(session, identity, current)
    result: Any = session.execute(delete(spec.table).where(spec.table.c.id == current["id"],
                                                           spec.table.c.version == current["version"]))
    if result.rowcount != 1:
        raise FileChangedMeanwhile(spec.label)
    _publish(session, identity, spec, "deleted", current, version=current["version"] + 1, deleted=True)
    _note_record_links(session, spec, current, None)


# -- what a delete takes along -------------------------------------------------------------------

def _detach_from_company(session: Session, identity: Identity, company: View) -> None:
    """A company's contacts and job orders stay, without a company (each a new version); refused
    (``OnHiddenRecord``) when a record the caller cannot see shows one of them."""
    for spec in (CONTACTS, JOB_ORDERS):
        for row in session.execute(select(spec.table).where(spec.table.c.company_id == company["id"])).all():
            try:
                update_file(session, identity, spec, dict(row._mapping), {"company_id": None})
            except OnHiddenRecord:
                raise OnHiddenRecord(f"Refused: deleting the company changes its {spec.label} {row.id!r}, which is "
                                     "on a lead or opportunity you cannot see (another office's). Someone who may "
                                     "see the record can delete the company.") from None


def _remove_contact_links(session: Session, identity: Identity, contact: View) -> None:
    """A contact leaves every record it is on, each with its ``unlinked`` event and timeline entry
    (the foreign key would cascade too, but silently). ``in_use`` refuses deleting a linked
    contact, so this finds nothing unless that rule is lifted."""
    for link in session.execute(select(record_contacts).where(record_contacts.c.contact_id == contact["id"])).all():
        remove_contact_link(session, link.record_kind, link.record_id, link, by=identity.user_id, identity=identity)


# -- which records show a file, and which use it -------------------------------------------------

def _company_shown_on(view: Mapping[str, Any]) -> ColumnElement[bool] | None:
    return record_views.c.company_id == view["id"] if view.get("id") else None


def _on_contacts_tab(contact_id: str) -> ColumnElement[bool]:
    return exists(select(record_contacts.c.contact_id).where(
        record_contacts.c.contact_id == contact_id, record_contacts.c.record_kind == record_views.c.kind,
        record_contacts.c.record_id == record_views.c.id))


def _contact_shown_on(view: Mapping[str, Any]) -> ColumnElement[bool] | None:
    return or_(record_views.c.contact_id == view["id"], _on_contacts_tab(view["id"])) if view.get("id") else None


def _linked_to_job_order(job_order_id: str) -> ColumnElement[bool]:
    return exists(select(record_job_orders.c.job_order_id).where(
        record_job_orders.c.job_order_id == job_order_id, record_job_orders.c.record_kind == record_views.c.kind,
        record_job_orders.c.record_id == record_views.c.id))


def _job_order_shown_on(view: Mapping[str, Any]) -> ColumnElement[bool] | None:
    return _linked_to_job_order(view["id"]) if view.get("id") else None


def _placement_shown_on(view: Mapping[str, Any]) -> ColumnElement[bool] | None:
    """A placement shows on the placements tab of every record its job order is linked to."""
    return _linked_to_job_order(view["job_order_id"]) if view.get("job_order_id") else None


def _any(session: Session, stmt: Any) -> bool:
    return session.execute(stmt.limit(1)).first() is not None


def _company_in_use(session: Session, company: View) -> str | None:
    if _any(session, select(record_views.c.id).where(record_views.c.company_id == company["id"])):
        return "a lead or opportunity has it as its company (company_id)"
    return None


def _contact_in_use(session: Session, contact: View) -> str | None:
    if _any(session, select(record_views.c.id).where(record_views.c.contact_id == contact["id"])):
        return "a lead or opportunity has it as its contact (contact_id)"
    if _any(session, select(record_contacts.c.contact_id).where(record_contacts.c.contact_id == contact["id"])):
        return "it is on the contacts tab of a lead or opportunity"
    return None


def _remove_job_order_dependants(session: Session, identity: Identity, job_order: View) -> None:
    """A job order's placements go with it, and so do its links to records (events for each)."""
    rows = session.execute(select(placements).where(placements.c.job_order_id == job_order["id"])).all()
    for row in rows:
        delete_file(session, identity, PLACEMENTS, dict(row._mapping))
    links = session.execute(select(record_job_orders).where(record_job_orders.c.job_order_id == job_order["id"]))
    for link in links.all():
        remove_job_order_link(session, link.record_kind, link.record_id, job_order["id"], by=identity.user_id,
                              identity=identity)


# -- the five resources --------------------------------------------------------------------------

COMPANIES = FileSpec(
    collection="companies", entity="company", table=companies,
    body=schemas.CompanyIn, patch=schemas.CompanyPatch, out=schemas.CompanyOut, query=schemas.FileQuery,
    search=tuple(companies.c[n] for n in ("name", "website", "email", "phone", "address", "city", "country")),
    before_delete=_detach_from_company,
    shown_on=_company_shown_on,
    in_use=_company_in_use,
    errors={"patch": (409,), "delete": (409,)},
    example={"name": "Acme Staffing B.V.", "website": "https://acme.example", "phone": "+31 20 123 4567",
             "email": "info@acme.example", "address": "Damrak 1", "city": "Amsterdam", "country": "NL"},
)

CONTACTS = FileSpec(
    collection="contacts", entity="contact", table=contacts,
    body=schemas.ContactIn, patch=schemas.ContactPatch, out=schemas.ContactOut, query=schemas.ContactQuery,
    search=(contacts.c.first_name, contacts.c.last_name, contacts.c.first_name + " " + contacts.c.last_name,
            contacts.c.email, contacts.c.phone),
    filters=("company_id",),
    references={"company_id": (companies, "company")},
    before_delete=_remove_contact_links,
    shown_on=_contact_shown_on,
    in_use=_contact_in_use,
    errors={"patch": (409,), "delete": (409,)},
    example={"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.example", "phone": "+31 6 1234 5678"},
)

JOB_ORDERS = FileSpec(
    collection="job-orders", entity="job_order", table=job_orders,
    body=schemas.JobOrderIn, patch=schemas.JobOrderPatch, out=schemas.JobOrderOut, query=schemas.JobOrderQuery,
    search=(job_orders.c.title, job_orders.c.description, job_orders.c.status),
    filters=("company_id", "status"),
    references={"company_id": (companies, "company")},
    before_delete=_remove_job_order_dependants,
    shown_on=_job_order_shown_on,
    errors={"patch": (409,), "delete": (409,)},
    example={"title": "3 welders for the Rotterdam yard", "description": "MIG/MAG, start in March",
             "status": "open"},
)

PLACEMENTS = FileSpec(
    collection="placements", entity="placement", table=placements,
    body=schemas.PlacementIn, patch=schemas.PlacementPatch, out=schemas.PlacementOut, query=schemas.PlacementQuery,
    search=(placements.c.candidate_name,),
    filters=("job_order_id",),
    references={"job_order_id": (job_orders, "job order")},
    ordered=(("start_date", "end_date"),),
    shown_on=_placement_shown_on,
    errors={"create": (409,), "patch": (409,), "delete": (409,)},
    example={"job_order_id": "4f6c1e2a-8a59-4a4b-9b0e-3c7e5d2f1a90", "candidate_name": "Carla Jansen",
             "start_date": "2026-03-01", "end_date": "2026-06-30"},
)

ACTIVITIES = FileSpec(
    collection="activities", entity="activity", table=activities,
    body=schemas.ActivityIn, patch=schemas.ActivityPatch, out=schemas.ActivityOut, query=schemas.ActivityQuery,
    search=(activities.c.subject, activities.c.body),
    filters=("type", "lead_id", "opportunity_id"),
    record_links={"lead_id": "lead", "opportunity_id": "opportunity"},
    timeline_fields=("type", "subject"),
    ordered=(("starts_at", "ends_at"),),
    visible_to=activity_visible,
    office_owned=True,
    errors={"list": (404,)},
    example={"type": "task", "subject": "Call back about the welders", "body": "Ask for the site address.",
             "due_at": "2026-12-01T09:00:00Z"},
)

SPECS: dict[str, FileSpec] = {spec.collection: spec for spec in (COMPANIES, CONTACTS, JOB_ORDERS, PLACEMENTS,
                                                                  ACTIVITIES)}


def _known_keys(session: Session, spec: FileSpec, office_id: str, keys: set[str]) -> dict[str, str]:
    """key -> id of the file it made, for the keys ``office_id`` used before; a key whose file is
    gone (deleted since) is forgotten, so it makes a new one."""
    if not keys:
        return {}
    rows = session.execute(select(import_keys.c.key, import_keys.c.file_id, spec.table.c.id.label("found"))
                           .outerjoin(spec.table, spec.table.c.id == import_keys.c.file_id)
                           .where(import_keys.c.entity == spec.entity, import_keys.c.office_id == office_id,
                                  import_keys.c.key.in_(keys))).all()
    gone = [r.key for r in rows if r.found is None]
    if gone:
        session.execute(delete(import_keys).where(import_keys.c.entity == spec.entity,
                                                  import_keys.c.office_id == office_id, import_keys.c.key.in_(gone)))
    return {r.key: r.file_id for r in rows if r.found is not None}


def bulk_create(session: Session, identity: Identity, spec: FileSpec, item_schema: Schema,
                items: list[Any]) -> list[dict[str, Any]]:
    """Each item created as ``create_file`` would (each in a savepoint: a refused one leaves
    nothing), unless its key was used before by the caller's office (``exists``)."""
    results: list[dict[str, Any]] = []
    loaded: list[tuple[int, dict[str, Any]]] = []
    for index, raw in enumerate(items):
        try:
            loaded.append((index, load_item(raw, item_schema)))
            results.append({})
        except DomainError as exc:
            results.append({"index": index, "status": "error", "id": None, **item_error(exc)})
    office = identity.office_id
    made = _known_keys(session, spec, office, {data["key"] for _, data in loaded})
    for index, data in loaded:
        key = data.pop("key")
        if key in made:
            results[index] = {"index": index, "status": "exists", "id": made[key], "error": None}
            continue
        savepoint = session.begin_nested()
        try:
            view = create_file(session, identity, spec, data)
            session.execute(insert(import_keys).values(entity=spec.entity, office_id=office, key=key,
                                                       file_id=view["id"], created_at=utcnow()))
            savepoint.commit()
        except DomainError as exc:
            savepoint.rollback()
            results[index] = {"index": index, "status": "error", "id": None, **item_error(exc)}
            continue
        except IntegrityError:  # a concurrent call made a file with this key meanwhile
            savepoint.rollback()
            made.update(_known_keys(session, spec, office, {key}))
            if key not in made:
                raise ImportKeysBusy from None
            results[index] = {"index": index, "status": "exists", "id": made[key], "error": None}
            continue
        made[key] = view["id"]
        results[index] = {"index": index, "status": "created", "id": view["id"], "error": None}
    return results


BULK_CREATABLE = ("companies", "contacts")


def file_importer(spec: FileSpec) -> Importer:
    """Imports of ``spec``'s files (``crm_kit.imports``): ``files:edit``, the bulk create's item
    schema and ``bulk_create`` itself."""
    _, item = schemas.bulk_create_schemas(spec.body, spec.collection, spec.path)
    item_schema = item()
    item_schema.unknown = RAISE

    def create_batch(session: Session, identity: Identity, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return bulk_create(session, identity, spec, item_schema, items)

    columns = ("Name", "City") if spec is COMPANIES else ("First name", "Last name", "Email")
    return Importer(collection=spec.collection, permission=EDIT_FILES, item_schema=item_schema,
                    create_batch=create_batch, key_length=IMPORT_KEY_LENGTH, example_columns=columns)
