"""Links between files and leads/opportunities, and the detail tabs of a record.

Routes (declared once per kind, so every path is a concrete ``/v1/leads/...`` or
``/v1/opportunities/...`` path that the gateway's table and the OpenAPI document name):

- ``/v1/{records}/{id}/contacts`` (``POST``, ``GET``), ``.../contacts/{contact_id}`` (``PATCH``, ``DELETE``);
- ``/v1/{records}/{id}/job-orders`` (``POST``, ``GET``), ``.../job-orders/{job_order_id}`` (``DELETE``);
- tabs: ``/v1/{records}/{id}/activities``, ``/placements``, ``/timeline``;
- ``/v1/contacts/{id}/leads``, ``/v1/contacts/{id}/opportunities``, ``/v1/companies/{id}/leads``.

Reads need ``files:view`` and ``<records>:view``; changes ``files:edit`` and ``<records>:edit``.
The record must be visible to the caller (else 404, unlinking included). Every change writes
its ``linking.*`` event and a timeline entry in the request's transaction. The activities tab
shows only the activities the caller may see (``access.activity_visible``).

The link rules are the database's (primary key of ``record_contacts``; UNIQUE (job_order_id,
record_kind) of ``record_job_orders``; UNIQUE (record_kind, record_id, exclusive_role) of
``record_contacts``): a link is inserted in a savepoint and a constraint violation becomes a
409, so concurrent requests cannot break them. Linking a job order to the record it is already
linked to is a 409 too (not an idempotent 200): the client asked for a change that cannot
happen, and a retry that must not fail uses ``Idempotency-Key``.

The main contact (role ``MAIN``) is the record's own ``contact_id``: ``sync_main_contact``
keeps the contacts tab in step with it from the records' events (``service.apply_record_event``)
- that contact is linked with ``MAIN`` (or its link gets that role), the previous main contact
stays linked without a role, and a cleared ``contact_id`` leaves the link without a role. From
the tab, ``MAIN`` is never set, changed or removed (409: set ``contact_id`` on the record); a
``POST`` naming the record's own contact with ``MAIN`` only confirms it (200, or 201 when it was
not linked yet). The signing authority (``SIGN``) may be added with ``POST`` while the record has
none (409 otherwise) and removed with ``DELETE``; a ``PATCH`` never moves a link to or from
``MAIN`` or ``SIGN``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import Insert, Select, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueEntryView, CatalogueReferenceError, CatalogueView
from crm_kit.db import utcnow
from crm_kit.web import Api, Identity, ListResult, Problem, Reply, RequestContext, SortKey, limits
from crm_kit.web.auth import require_permission
from crm_kit.web.fields import Timestamp
from crm_kit.web.pagination import PageQuery
from crm_linking import journal
from crm_linking.access import PLURALS, activity_visible, load_record, visible_records
from crm_linking.file_schemas import ActivityOut, ContactOut, JobOrderOut, PlacementOut
from crm_linking.tables import (
    activities,
    companies,
    contacts,
    job_orders,
    placements,
    record_contacts,
    record_job_orders,
    record_views,
    timeline,
)

log = logging.getLogger(__name__)

RECORD_KINDS = ("lead", "opportunity")
# Roles a record has at most one contact with: its main contact (its contact_id) and its signing
# authority. A PATCH from the list never moves a link to or from them.
PROTECTED_ROLE_CODES = frozenset({"MAIN", "SIGN"})
FILES_VIEW, FILES_EDIT = "files:view", "files:edit"
_ID = validate.Length(min=1, max=36)


# -- schemas (the edge only) ---------------------------------------------------------------------

class NewContactIn(Schema):
    first_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    last_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(allow_none=True, load_default=None, validate=validate.Length(max=320))
    phone = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=50))
    company_id = fields.String(allow_none=True, load_default=None, validate=_ID)


class ContactLinkIn(Schema):
    contact_id = fields.String(validate=_ID, metadata={"description": "An existing contact."})
    contact = fields.Nested(NewContactIn, metadata={"description": "A new contact, created with the link."})
    role_id = fields.String(required=True, validate=_ID,
                            metadata={"description": "An active role of the record's kind."})

    @validates_schema
    def _one_contact(self, data: Mapping[str, Any], **_: Any) -> None:
        if ("contact_id" in data) == ("contact" in data):
            raise ValidationError("Give either contact_id (an existing contact) or contact (a new one).",
                                  field_name="contact_id")


class ContactRoleIn(Schema):
    role_id = fields.String(required=True, validate=_ID)


class NewJobOrderIn(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    company_id = fields.String(allow_none=True, load_default=None, validate=_ID)
    description = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=20000))
    status = fields.String(allow_none=True, load_default=None, validate=validate.Length(max=50))


class JobOrderLinkIn(Schema):
    job_order_id = fields.String(validate=_ID, metadata={"description": "An existing job order."})
    job_order = fields.Nested(NewJobOrderIn, metadata={"description": "A new job order, created with the link."})

    @validates_schema
    def _one_job_order(self, data: Mapping[str, Any], **_: Any) -> None:
        if ("job_order_id" in data) == ("job_order" in data):
            raise ValidationError("Give either job_order_id (an existing job order) or job_order (a new one).",
                                  field_name="job_order_id")


# Responses: the validators only document how long the values can be (what came in was checked).
class LinkRoleOut(Schema):
    id = fields.String(validate=limits.ID)
    code = fields.String(validate=validate.Length(max=limits.CATALOGUE_CODE_LENGTH))
    name = fields.String(validate=validate.Length(max=limits.CATALOGUE_NAME_LENGTH))


class ContactLinkOut(Schema):
    contact_id = fields.String(validate=limits.ID)
    role_id = fields.String(allow_none=True, validate=limits.ID, metadata={
        "description": "null when the contact has no role on the record (a former main contact, or carried over "
                       "by a conversion without a matching role)."})
    role = fields.Nested(LinkRoleOut, allow_none=True,
                         metadata={"description": "null when the role is no longer in the catalogue."})
    contact = fields.Nested(ContactOut)
    linked_at = Timestamp()
    linked_by = fields.String(validate=limits.REF)


class JobOrderLinkOut(Schema):
    job_order_id = fields.String(validate=limits.ID)
    job_order = fields.Nested(JobOrderOut)
    linked_at = Timestamp()
    linked_by = fields.String(validate=limits.REF)


class TimelineOut(Schema):
    at = Timestamp()
    type = fields.String(validate=validate.Length(max=50),
                         metadata={"description": "created, stage_changed, stage_group_changed, added_to_group, "
                                                  "removed_from_group, converted, converted_from_lead, "
                                                  "contact_linked, contact_unlinked, contact_role_changed, "
                                                  "job_order_linked, job_order_unlinked, activity_*"})
    data = fields.Dict(metadata={
        "description": "What happened, by type. A contact_linked or contact_role_changed the record's main contact "
                       "made has cause 'main_contact'; one a conversion made has cause 'conversion' and lead_id, and "
                       "role_dropped_from (the lead role's code) when the contact came over without a role."})


class LinkedRecordOut(Schema):
    id = fields.String(validate=limits.ID)
    kind = fields.String(validate=validate.OneOf(("lead", "opportunity")))
    title = fields.String(validate=validate.Length(max=500))
    stage_id = fields.String(allow_none=True, validate=limits.ID)
    stage_group_id = fields.String(allow_none=True, validate=limits.ID)
    owner_id = fields.String(validate=limits.REF)
    office_id = fields.String(validate=limits.REF)
    company_id = fields.String(allow_none=True, validate=limits.ID)
    contact_id = fields.String(allow_none=True, validate=limits.ID)


class ContactRecordOut(LinkedRecordOut):
    role_id = fields.String(allow_none=True, validate=limits.ID, metadata={
        "description": "The contact's role on the record; null when the contact is only the record's contact_id."})


# -- link changes shared by the routes and the reactions -----------------------------------------

class ConcurrentChangeError(RuntimeError):
    """A constraint refused a change another transaction made impossible meanwhile; the event
    consumer retries the event (and then sees that change)."""


def link_id(file_id: str, record_id: str) -> str:
    """The id of a link in its events (and their Kafka key)."""
    return f"{file_id}:{record_id}"


def insert_once(session: Session, stmt: Insert) -> bool:
    """Run ``stmt`` in a savepoint; False (and nothing written) when a constraint refuses it.

    The transaction goes on after a refusal, so the caller can find out why and say so.
    """
    try:
        with session.begin_nested():
            session.execute(stmt)
    except IntegrityError:
        return False
    return True


def exclusive_code(role: CatalogueEntryView | None) -> str | None:
    """``MAIN`` or ``SIGN`` for those roles (at most one contact each per record), else None."""
    return role.code if role is not None and role.code in PROTECTED_ROLE_CODES else None


def exclusive_link(session: Session, kind: str, record_id: str, code: str) -> Any:
    """The record's contact link with the exclusive role ``code`` (MAIN or SIGN), if any."""
    return session.execute(select(record_contacts).where(
        record_contacts.c.record_kind == kind, record_contacts.c.record_id == record_id,
        record_contacts.c.exclusive_role == code)).first()


def contact_link(session: Session, kind: str, record_id: str, contact_id: str) -> Any:
    """The record_contacts row of ``contact_id`` on the record, if linked."""
    return session.execute(select(record_contacts).where(
        record_contacts.c.record_kind == kind, record_contacts.c.record_id == record_id,
        record_contacts.c.contact_id == contact_id)).first()


def _name(contact: Any) -> str:
    return f"{contact.first_name} {contact.last_name}".strip()


def add_contact_link(session: Session, kind: str, record_id: str, contact: Any, role_id: str | None, *, by: str,
                     exclusive: str | None = None, identity: Identity | None = None,
                     causation_id: str | None = None, at: dt.datetime | None = None, event_id: str | None = None,
                     note_extra: Mapping[str, Any] | None = None,
                     event_extra: Mapping[str, Any] | None = None) -> bool:
    """Link ``contact`` with ``role_id`` (None: no role; ``exclusive``: its code when MAIN or
    SIGN), with its event and timeline entry; False (nothing written) when the database refuses
    it: linked already, the record has that exclusive role already, or the contact is gone."""
    at = at or utcnow()
    linked = insert_once(session, insert(record_contacts).values(
        record_kind=kind, record_id=record_id, contact_id=contact.id, role_id=role_id,
        exclusive_role=exclusive if role_id is not None else None, linked_at=at, linked_by=by))
    if not linked:
        return False
    journal.publish(session, "linking.contact.linked", "record_contact", link_id(contact.id, record_id),
                    {"contact_id": contact.id, "role_id": role_id, **(event_extra or {})}, record_kind=kind,
                    record_id=record_id, identity=identity, causation_id=causation_id)
    journal.note(session, kind, record_id, "contact_linked",
                 {"contact_id": contact.id, "contact_name": _name(contact), "role_id": role_id, "by": by,
                  **(note_extra or {})}, at=at, event_id=event_id)
    return True


def change_contact_role(session: Session, kind: str, record_id: str, link: Any, role_id: str | None, *, by: str,
                        exclusive: str | None = None, identity: Identity | None = None,
                        causation_id: str | None = None, at: dt.datetime | None = None,
                        event_id: str | None = None, note_extra: Mapping[str, Any] | None = None) -> bool:
    """Give a linked contact (``link``: its record_contacts row) another role (None: none), with
    its event and timeline entry; False (nothing written) when the database refuses it (the
    record has that exclusive role already)."""
    try:
        with session.begin_nested():
            session.execute(update(record_contacts).where(
                record_contacts.c.record_kind == kind, record_contacts.c.record_id == record_id,
                record_contacts.c.contact_id == link.contact_id).values(
                    role_id=role_id, exclusive_role=exclusive if role_id is not None else None))
    except IntegrityError:
        return False
    journal.publish(session, "linking.contact.role_changed", "record_contact", link_id(link.contact_id, record_id),
                    {"contact_id": link.contact_id, "role_id": role_id, "from_role_id": link.role_id},
                    record_kind=kind, record_id=record_id, identity=identity, causation_id=causation_id)
    journal.note(session, kind, record_id, "contact_role_changed",
                 {"contact_id": link.contact_id, "from_role_id": link.role_id, "to_role_id": role_id, "by": by,
                  **(note_extra or {})}, at=at, event_id=event_id)
    return True


def main_role(session: Session, kind: str, view: CatalogueView | None = None) -> CatalogueEntryView | None:
    """The kind's ``MAIN`` role in the catalogue copy (a protected entry: it always exists once
    the catalogue's events have arrived)."""
    roles = [r for r in (view or CatalogueView()).entries(session, kind, "roles") if r.code == "MAIN"]
    return next((r for r in roles if r.active), roles[0] if roles else None)


def sync_main_contact(session: Session, kind: str, record_id: str, contact_id: str | None, *, by: str,
                      identity: Identity | None = None, causation_id: str | None = None,
                      at: dt.datetime | None = None, event_id: str | None = None,
                      view: CatalogueView | None = None) -> bool:
    """Make the record's contacts tab agree with its ``contact_id`` (its main contact); True
    when something changed.

    The current ``MAIN`` link of another contact loses its role (the contact stays linked);
    ``contact_id`` is linked with the ``MAIN`` role, or its link gets that role (whatever role it
    had). Nothing is written when the tab already agrees, so a redelivered event changes
    nothing. A ``contact_id`` naming a contact this service does not have is left out (logged);
    while the catalogue copy has no ``MAIN`` role yet, the contact is linked without a role and
    gets it with the record's next event. ``ConcurrentChangeError`` when a concurrent change
    took the ``MAIN`` role meanwhile (the consumer retries the event).
    """
    at = at or utcnow()
    extra = {"cause": "main_contact"}
    changed = False
    current = exclusive_link(session, kind, record_id, "MAIN")
    if current is not None and current.contact_id != contact_id:
        change_contact_role(session, kind, record_id, current, None, by=by, identity=identity,
                            causation_id=causation_id, at=at, event_id=event_id, note_extra=extra)
        changed = True
    if not contact_id or (current is not None and current.contact_id == contact_id):
        return changed
    contact = session.execute(select(contacts).where(contacts.c.id == contact_id)).first()
    if contact is None:
        log.warning("%s %s: its contact %s is not a contact this service has; not linked as its main contact",
                    kind, record_id, contact_id)
        return changed
    role = main_role(session, kind, view)
    if role is None:
        log.warning("%s %s: no MAIN role in the catalogue copy yet; contact %s is linked without a role",
                    kind, record_id, contact_id)
    role_id, code = (role.id, "MAIN") if role is not None else (None, None)
    link = contact_link(session, kind, record_id, contact_id)
    if link is not None and role is None:
        return changed  # linked already; it becomes MAIN once the role is known
    if link is None:
        done = add_contact_link(session, kind, record_id, contact, role_id, exclusive=code, by=by,
                                identity=identity, causation_id=causation_id, at=at, event_id=event_id,
                                note_extra=extra)
    else:
        done = change_contact_role(session, kind, record_id, link, role_id, exclusive=code, by=by,
                                   identity=identity, causation_id=causation_id, at=at, event_id=event_id,
                                   note_extra=extra)
    if done:
        return True
    raise ConcurrentChangeError(f"{kind} {record_id}: the MAIN contact changed while contact {contact_id} "
                                "was being made the main contact")


def add_job_order_link(session: Session, kind: str, record_id: str, job_order: Any, *, by: str,
                       identity: Identity | None = None, causation_id: str | None = None,
                       at: dt.datetime | None = None, event_id: str | None = None,
                       note_extra: Mapping[str, Any] | None = None) -> bool:
    """Link ``job_order``, with its event and timeline entry; False (nothing written) when the
    database refuses it (linked to this or another record of ``kind`` already)."""
    at = at or utcnow()
    linked = insert_once(session, insert(record_job_orders).values(
        record_kind=kind, record_id=record_id, job_order_id=job_order.id, linked_at=at, linked_by=by))
    if not linked:
        return False
    journal.publish(session, "linking.job_order.linked", "record_job_order", link_id(job_order.id, record_id),
                    {"job_order_id": job_order.id}, record_kind=kind, record_id=record_id,
                    identity=identity, causation_id=causation_id)
    journal.note(session, kind, record_id, "job_order_linked",
                 {"job_order_id": job_order.id, "title": job_order.title, "by": by, **(note_extra or {})},
                 at=at, event_id=event_id)
    return True


def remove_contact_link(session: Session, kind: str, record_id: str, link: Any, *, by: str,
                        identity: Identity | None = None, causation_id: str | None = None,
                        note: bool = True) -> None:
    """Unlink a contact (``link``: its record_contacts row), with its event (and timeline entry)."""
    session.execute(delete(record_contacts).where(record_contacts.c.record_kind == kind,
                                                  record_contacts.c.record_id == record_id,
                                                  record_contacts.c.contact_id == link.contact_id))
    journal.publish(session, "linking.contact.unlinked", "record_contact", link_id(link.contact_id, record_id),
                    {"contact_id": link.contact_id, "role_id": link.role_id}, record_kind=kind,
                    record_id=record_id, deleted=True, identity=identity, causation_id=causation_id)
    if note:
        contact = session.execute(select(contacts).where(contacts.c.id == link.contact_id)).first()
        journal.note(session, kind, record_id, "contact_unlinked",
                     {"contact_id": link.contact_id, "contact_name": _name(contact) if contact else "",
                      "role_id": link.role_id, "by": by})


def remove_job_order_link(session: Session, kind: str, record_id: str, job_order_id: str, *, by: str,
                          identity: Identity | None = None, causation_id: str | None = None,
                          note: bool = True) -> None:
    """Unlink a job order, with its event (and timeline entry)."""
    session.execute(delete(record_job_orders).where(record_job_orders.c.record_kind == kind,
                                                    record_job_orders.c.record_id == record_id,
                                                    record_job_orders.c.job_order_id == job_order_id))
    journal.publish(session, "linking.job_order.unlinked", "record_job_order", link_id(job_order_id, record_id),
                    {"job_order_id": job_order_id}, record_kind=kind, record_id=record_id, deleted=True,
                    identity=identity, causation_id=causation_id)
    if note:
        title = session.execute(select(job_orders.c.title).where(job_orders.c.id == job_order_id)).scalar()
        journal.note(session, kind, record_id, "job_order_unlinked",
                     {"job_order_id": job_order_id, "title": title or "", "by": by})


def job_order_link_of_kind(session: Session, job_order_id: str, kind: str) -> Any:
    """The record_job_orders row linking ``job_order_id`` to a record of ``kind``, if any."""
    return session.execute(select(record_job_orders).where(record_job_orders.c.job_order_id == job_order_id,
                                                           record_job_orders.c.record_kind == kind)).first()


# -- helpers of the routes -----------------------------------------------------------------------

def _row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def _audit_values(identity: Identity) -> dict[str, Any]:
    now = utcnow()
    return {"version": 1, "created_at": now, "created_by": identity.user_id, "modified_at": now,
            "modified_by": identity.user_id}


def _unknown(field_name: str, message: str) -> Problem:
    return Problem(422, message, errors=[{"field": field_name, "message": message}])


def _require_company(session: Session, company_id: str | None, field_name: str) -> None:
    if company_id and session.execute(select(companies.c.id).where(companies.c.id == company_id)).first() is None:
        raise _unknown(field_name, f"There is no company with id {company_id!r}.")


def _create_file(session: Session, table: Any, entity: str, data: Mapping[str, Any], identity: Identity) -> Any:
    """A new contact or job order given inline with its link (``linking.<entity>.created``)."""
    values = {"id": str(uuid.uuid4()), **data, **_audit_values(identity)}
    session.execute(insert(table).values(**values))
    journal.publish(session, f"linking.{entity}.created", entity, values["id"], values, identity=identity)
    return session.execute(select(table).where(table.c.id == values["id"])).one()


def _role_out(role: CatalogueEntryView | None, ctx: RequestContext) -> dict[str, Any] | None:
    if role is None:
        return None
    default_language = ctx.settings["CRM_DEFAULT_LANGUAGE"]
    return {"id": role.id, "code": role.code, "name": role.name(ctx.language(list(role.names)), default_language)}


def _named(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a per-kind route function its own name: Flask endpoints and OpenAPI operation ids
    come from it, and the same function body serves both kinds."""
    fn.__name__ = name
    fn.__qualname__ = name
    return fn


class _Links:
    """The routes of one record kind."""

    def __init__(self, api: Api, kind: str, view: CatalogueView) -> None:
        self.api = api
        self.kind = kind
        self.plural = PLURALS[kind]
        self.view = view
        self.base = f"/v1/{self.plural}/<record_id>"
        self.may_view, self.may_edit = f"{self.plural}:view", f"{self.plural}:edit"
        self.tags = (self.plural,)

    # access: a route declares the record's permission (``may_view`` / ``may_edit``, as the
    # gateway's route table does), so the kit answers 403 to a caller without it before it reads
    # the body or the query; the files permission these tabs need as well is checked here.

    def readable(self, ctx: RequestContext, record_id: str) -> Any:
        require_permission(ctx.user, FILES_VIEW)
        return load_record(ctx.session, self.kind, record_id, ctx.user)

    def writable(self, ctx: RequestContext, record_id: str) -> Any:
        require_permission(ctx.user, FILES_EDIT)
        return load_record(ctx.session, self.kind, record_id, ctx.user)

    def role(self, session: Session, role_id: str) -> CatalogueEntryView:
        try:
            return self.view.require(session, role_id, kind=self.kind, entity="roles", field_name="role_id")
        except CatalogueReferenceError as exc:
            raise exc.to_problem() from None

    # presentation

    def contact_items(self, ctx: RequestContext, links: Iterable[Any]) -> list[dict[str, Any]]:
        links = list(links)
        ids = [link.contact_id for link in links]
        people = {r.id: _row_dict(r) for r in ctx.session.execute(select(contacts).where(contacts.c.id.in_(ids)))}
        roles = {r.id: r for r in self.view.entries(ctx.session, self.kind, "roles")}
        return [{"contact_id": link.contact_id, "role_id": link.role_id,
                 "role": _role_out(roles.get(link.role_id), ctx), "contact": people.get(link.contact_id),
                 "linked_at": link.linked_at, "linked_by": link.linked_by} for link in links]

    def job_order_items(self, ctx: RequestContext, links: Iterable[Any]) -> list[dict[str, Any]]:
        links = list(links)
        ids = [link.job_order_id for link in links]
        orders = {r.id: _row_dict(r) for r in ctx.session.execute(select(job_orders).where(job_orders.c.id.in_(ids)))}
        return [{"job_order_id": link.job_order_id, "job_order": orders.get(link.job_order_id),
                 "linked_at": link.linked_at, "linked_by": link.linked_by} for link in links]

    def contact_link(self, session: Session, record_id: str, contact_id: str) -> Any:
        return contact_link(session, self.kind, record_id, contact_id)

    def main_is_the_records(self, which: str = "") -> Problem:
        return Problem(409, f"The {which + ' ' if which else ''}role is MAIN: the main contact is the {self.kind}'s "
                            f"own contact_id, set on the {self.kind} (PATCH /v1/{self.plural}/{{id}}), not from its "
                            "contact list.", role_code="MAIN")

    def sign_taken(self, holder: str) -> Problem:
        return Problem(409, f"This {self.kind} has a signing authority already (contact {holder!r}): a {self.kind} "
                            "has at most one SIGN contact. Remove that one from its contacts first.",
                       role_code="SIGN", contact_id=holder)

    def job_order_conflict(self, session: Session, identity: Identity, job_order_id: str, linked_to: str,
                           record_id: str) -> Problem:
        if linked_to == record_id:
            return Problem(409, f"Job order {job_order_id!r} is already linked to this {self.kind}.",
                           linked_record_kind=self.kind, linked_record_id=linked_to)
        try:
            load_record(session, self.kind, linked_to, identity)
        except Problem:  # a record the caller may not see is not named
            return Problem(409, f"Job order {job_order_id!r} is already linked to another {self.kind} (one you "
                                f"cannot see): a job order links to at most one {self.kind}.",
                           linked_record_kind=self.kind)
        return Problem(409, f"Job order {job_order_id!r} is already linked to {self.kind} {linked_to!r}: a job "
                            f"order links to at most one {self.kind}. Unlink it there first.",
                       linked_record_kind=self.kind, linked_record_id=linked_to)

    # routes

    def declare(self) -> None:
        self._contacts()
        self._job_orders()
        self._tabs()

    def _route(self, method: str, rule: str, name: str, **kw: Any) -> Callable[[Callable[..., Any]], Any]:
        def decorate(fn: Callable[..., Any]) -> Any:
            return self.api.route(method, rule, tags=self.tags, **kw)(_named(name, fn))
        return decorate

    def _contacts(self) -> None:
        kind, plural, base = self.kind, self.plural, self.base

        @self._route("POST", f"{base}/contacts", f"link_{kind}_contact", permission=self.may_edit, body=ContactLinkIn,
                     response=ContactLinkOut, errors=(409,),
                     also={200: f"MAIN and the {kind}'s own contact_id, linked as its main contact already: "
                                "nothing changed."},
                     summary=f"Link a contact (existing or new) to a {kind}; MAIN only confirms the {kind}'s own "
                             "contact_id, SIGN only while it has none")
        def link_contact(ctx: RequestContext, record_id: str) -> Any:
            record = self.writable(ctx, record_id)
            role = self.role(ctx.session, ctx.body["role_id"])
            code = exclusive_code(role)
            if code == "MAIN" and (not record.contact_id or ctx.body.get("contact_id") != record.contact_id):
                raise self.main_is_the_records()
            if "contact" in ctx.body:
                new = ctx.body["contact"]
                _require_company(ctx.session, new.get("company_id"), "contact.company_id")
                contact = _create_file(ctx.session, contacts, "contact", new, ctx.user)
            else:
                contact = ctx.session.execute(select(contacts).where(contacts.c.id == ctx.body["contact_id"])).first()
                if contact is None:
                    raise _unknown("contact_id", f"There is no contact with id {ctx.body['contact_id']!r}.")
            if code == "MAIN":  # the record's own contact: make sure the tab agrees, and say so
                try:
                    changed = sync_main_contact(ctx.session, kind, record.id, record.contact_id,
                                                by=ctx.user.user_id, identity=ctx.user, view=self.view)
                except ConcurrentChangeError:
                    raise Problem(409, f"The main contact of this {kind} changed meanwhile; fetch it again.") from None
                return Reply(self.contact_items(ctx, [self.contact_link(ctx.session, record.id, contact.id)])[0],
                             status=201 if changed else 200)
            already = Problem(409, f"Contact {contact.id!r} is already linked to this {kind}; change its role "
                                   f"with PATCH {plural}/{{id}}/contacts/{{contact_id}}.")
            if self.contact_link(ctx.session, record.id, contact.id) is not None:
                raise already
            # Friendly answers for the common cases; the constraints decide under concurrency.
            holder = exclusive_link(ctx.session, kind, record.id, code) if code else None
            if holder is not None:
                raise self.sign_taken(holder.contact_id)
            if not add_contact_link(ctx.session, kind, record.id, contact, role.id, exclusive=code,
                                    by=ctx.user.user_id, identity=ctx.user):
                if self.contact_link(ctx.session, record.id, contact.id) is not None:
                    raise already  # a concurrent request linked it first
                holder = exclusive_link(ctx.session, kind, record.id, code) if code else None
                if holder is not None:
                    raise self.sign_taken(holder.contact_id)  # a concurrent request added one first
                raise Problem(409, f"Contact {contact.id!r} could not be linked (it was deleted meanwhile?).")
            return self.contact_items(ctx, [self.contact_link(ctx.session, record.id, contact.id)])[0]

        @self._route("GET", f"{base}/contacts", f"list_{kind}_contacts", permission=self.may_view, query=PageQuery,
                     response=ContactLinkOut, many=True, summary=f"Contacts of a {kind}, with their roles")
        def list_contacts(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            stmt = select(record_contacts).where(record_contacts.c.record_kind == kind,
                                                 record_contacts.c.record_id == record.id)
            page = ctx.page(stmt, [SortKey("linked_at", record_contacts.c.linked_at),
                                   SortKey("contact_id", record_contacts.c.contact_id)],
                            fingerprint=f"{kind}-contacts:{record.id}")
            return ListResult(self.contact_items(ctx, page.rows), page.next_page_token)

        @self._route("PATCH", f"{base}/contacts/<contact_id>", f"change_{kind}_contact_role", permission=self.may_edit,
                     body=ContactRoleIn, response=ContactLinkOut, errors=(409,),
                     summary=f"Change the role of a contact on a {kind} (not to or from MAIN or SIGN)")
        def change_role(ctx: RequestContext, record_id: str, contact_id: str) -> Any:
            record = self.writable(ctx, record_id)
            link = self.contact_link(ctx.session, record.id, contact_id)
            if link is None:
                raise Problem(404, f"Contact {contact_id!r} is not linked to this {kind}.")
            new = self.role(ctx.session, ctx.body["role_id"])
            current = self.view.get(ctx.session, link.role_id) if link.role_id else None
            for code, which in ((link.exclusive_role or exclusive_code(current), "current"),
                                (exclusive_code(new), "new")):
                if code == "MAIN":
                    raise self.main_is_the_records(which)
                if code == "SIGN":
                    raise Problem(409, f"The {which} role is SIGN: the signing authority is not set on the {kind} "
                                       f"from a role change: add it with POST /v1/{plural}/{{id}}/contacts (while the "
                                       f"{kind} has none) or remove it with DELETE.", role_code="SIGN")
            if new.id != link.role_id:
                change_contact_role(ctx.session, kind, record.id, link, new.id, by=ctx.user.user_id,
                                    identity=ctx.user)
            return self.contact_items(ctx, [self.contact_link(ctx.session, record.id, contact_id)])[0]

        @self._route("DELETE", f"{base}/contacts/<contact_id>", f"unlink_{kind}_contact", permission=self.may_edit,
                     status=204, errors=(409,),
                     summary=f"Remove a contact from a {kind} (the contact itself stays; not its main contact)")
        def unlink_contact(ctx: RequestContext, record_id: str, contact_id: str) -> None:
            record = self.writable(ctx, record_id)
            link = self.contact_link(ctx.session, record.id, contact_id)
            if link is None:
                raise Problem(404, f"Contact {contact_id!r} is not linked to this {kind}.")
            if link.exclusive_role == "MAIN" or record.contact_id == contact_id:
                raise Problem(409, f"Contact {contact_id!r} is the main contact of this {kind} (its contact_id): "
                                   f"set another contact_id on the {kind}, or clear it, instead.", role_code="MAIN")
            remove_contact_link(ctx.session, kind, record.id, link, by=ctx.user.user_id, identity=ctx.user)

    def _job_orders(self) -> None:
        kind, base = self.kind, self.base

        def link_of(session: Session, record_id: str, job_order_id: str) -> Any:
            return session.execute(select(record_job_orders).where(
                record_job_orders.c.record_kind == kind, record_job_orders.c.record_id == record_id,
                record_job_orders.c.job_order_id == job_order_id)).first()

        @self._route("POST", f"{base}/job-orders", f"link_{kind}_job_order", permission=self.may_edit,
                     body=JobOrderLinkIn, response=JobOrderLinkOut, errors=(409,),
                     summary=f"Link a job order (existing or new) to a {kind}; at most one {kind} per job order")
        def link_job_order(ctx: RequestContext, record_id: str) -> Any:
            record = self.writable(ctx, record_id)
            if "job_order" in ctx.body:
                new = ctx.body["job_order"]
                _require_company(ctx.session, new.get("company_id"), "job_order.company_id")
                order = _create_file(ctx.session, job_orders, "job_order", new, ctx.user)
            else:
                order = ctx.session.execute(select(job_orders).where(
                    job_orders.c.id == ctx.body["job_order_id"])).first()
                if order is None:
                    raise _unknown("job_order_id", f"There is no job order with id {ctx.body['job_order_id']!r}.")
            # A friendly answer for the common case; the constraint decides under concurrency.
            existing = job_order_link_of_kind(ctx.session, order.id, kind)
            if existing is not None:
                raise self.job_order_conflict(ctx.session, ctx.user, order.id, existing.record_id, record.id)
            if not add_job_order_link(ctx.session, kind, record.id, order, by=ctx.user.user_id, identity=ctx.user):
                existing = job_order_link_of_kind(ctx.session, order.id, kind)
                if existing is None:
                    raise Problem(409, f"Job order {order.id!r} could not be linked (it was deleted meanwhile?).")
                raise self.job_order_conflict(ctx.session, ctx.user, order.id, existing.record_id, record.id)
            return self.job_order_items(ctx, [link_of(ctx.session, record.id, order.id)])[0]

        @self._route("GET", f"{base}/job-orders", f"list_{kind}_job_orders", permission=self.may_view, query=PageQuery,
                     response=JobOrderLinkOut, many=True, summary=f"Job orders of a {kind}")
        def list_job_orders(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            stmt = select(record_job_orders).where(record_job_orders.c.record_kind == kind,
                                                   record_job_orders.c.record_id == record.id)
            page = ctx.page(stmt, [SortKey("linked_at", record_job_orders.c.linked_at),
                                   SortKey("job_order_id", record_job_orders.c.job_order_id)],
                            fingerprint=f"{kind}-job-orders:{record.id}")
            return ListResult(self.job_order_items(ctx, page.rows), page.next_page_token)

        @self._route("DELETE", f"{base}/job-orders/<job_order_id>", f"unlink_{kind}_job_order",
                     permission=self.may_edit, status=204, summary=f"Remove a job order from a {kind}")
        def unlink_job_order(ctx: RequestContext, record_id: str, job_order_id: str) -> None:
            record = self.writable(ctx, record_id)
            if link_of(ctx.session, record.id, job_order_id) is None:
                raise Problem(404, f"Job order {job_order_id!r} is not linked to this {kind}.")
            remove_job_order_link(ctx.session, kind, record.id, job_order_id, by=ctx.user.user_id,
                                  identity=ctx.user)

    def _tabs(self) -> None:
        kind, base = self.kind, self.base
        owner_column = activities.c.lead_id if kind == "lead" else activities.c.opportunity_id

        @self._route("GET", f"{base}/activities", f"list_{kind}_activities", permission=self.may_view,
                     query=PageQuery, response=ActivityOut, many=True,
                     summary=f"Activities of a {kind}, newest first")
        def list_activities(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            page = ctx.page(select(activities).where(owner_column == record.id, activity_visible(ctx.user)),
                            [SortKey("created_at", activities.c.created_at, descending=True),
                             SortKey("id", activities.c.id, descending=True)],
                            fingerprint=f"{kind}-activities:{record.id}")
            return ListResult([_row_dict(r) for r in page.rows], page.next_page_token)

        @self._route("GET", f"{base}/placements", f"list_{kind}_placements", permission=self.may_view,
                     query=PageQuery, response=PlacementOut, many=True,
                     summary=f"Placements of the job orders linked to a {kind}, newest first")
        def list_placements(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            stmt = select(placements).join(record_job_orders, and_(
                record_job_orders.c.job_order_id == placements.c.job_order_id,
                record_job_orders.c.record_kind == kind, record_job_orders.c.record_id == record.id))
            page = ctx.page(stmt, [SortKey("created_at", placements.c.created_at, descending=True),
                                   SortKey("id", placements.c.id, descending=True)],
                            fingerprint=f"{kind}-placements:{record.id}")
            return ListResult([_row_dict(r) for r in page.rows], page.next_page_token)

        @self._route("GET", f"{base}/timeline", f"list_{kind}_timeline", permission=self.may_view,
                     query=PageQuery, response=TimelineOut, many=True,
                     summary=f"What happened to a {kind} (stage changes, links, activities, conversion), newest first")
        def list_timeline(ctx: RequestContext, record_id: str) -> ListResult:
            record = self.readable(ctx, record_id)
            stmt = select(timeline).where(timeline.c.record_kind == kind, timeline.c.record_id == record.id)
            page = ctx.page(stmt, [SortKey("at", timeline.c.at, descending=True),
                                   SortKey("id", timeline.c.id, descending=True)],
                            fingerprint=f"{kind}-timeline:{record.id}")
            return ListResult([{"at": r.at, "type": r.type, "data": r.data} for r in page.rows],
                              page.next_page_token)


def _records_page(ctx: RequestContext, stmt: Select[Any], fingerprint: str) -> ListResult:
    page = ctx.page(stmt.where(visible_records(ctx.user)),
                    [SortKey("title", record_views.c.title), SortKey("id", record_views.c.id)],
                    fingerprint=fingerprint)
    return ListResult([_row_dict(r) for r in page.rows], page.next_page_token)


_RECORD_COLUMNS = (record_views.c.id, record_views.c.kind, record_views.c.title, record_views.c.stage_id,
                   record_views.c.stage_group_id, record_views.c.owner_id, record_views.c.office_id,
                   record_views.c.company_id, record_views.c.contact_id)


def _require_file(session: Session, table: Any, file_id: str, label: str) -> None:
    if session.execute(select(table.c.id).where(table.c.id == file_id)).first() is None:
        raise Problem(404, f"No {label} with id {file_id!r}.")


def _contact_records_route(api: Api, kind: str) -> None:
    plural = PLURALS[kind]

    def list_contact_records(ctx: RequestContext, contact_id: str) -> Any:
        require_permission(ctx.user, FILES_VIEW)
        _require_file(ctx.session, contacts, contact_id, "contact")
        link = and_(record_contacts.c.record_kind == record_views.c.kind,
                    record_contacts.c.record_id == record_views.c.id,
                    record_contacts.c.contact_id == contact_id)
        stmt = (select(*_RECORD_COLUMNS, record_contacts.c.role_id)
                .select_from(record_views.outerjoin(record_contacts, link))
                .where(record_views.c.kind == kind,
                       or_(record_contacts.c.contact_id.is_not(None), record_views.c.contact_id == contact_id)))
        return _records_page(ctx, stmt, f"contact-{plural}:{contact_id}")

    api.route("GET", f"/v1/contacts/<contact_id>/{plural}", permission=f"{plural}:view", query=PageQuery,
              response=ContactRecordOut, many=True, tags=("contacts",),
              summary=f"The {plural} a contact is on (linked with a role, or the {kind}'s own contact)",
              )(_named(f"list_contact_{plural}", list_contact_records))


def _file_routes(api: Api) -> None:
    for kind in RECORD_KINDS:
        _contact_records_route(api, kind)

    @api.get("/v1/companies/<company_id>/leads", permission="leads:view", query=PageQuery, response=LinkedRecordOut,
             many=True, tags=("companies",),
             summary="Leads of a company: its own, and those with a contact of the company")
    def list_company_leads(ctx: RequestContext, company_id: str) -> Any:
        require_permission(ctx.user, FILES_VIEW)
        _require_file(ctx.session, companies, company_id, "company")
        company_contacts = select(contacts.c.id).where(contacts.c.company_id == company_id)
        has_company_contact = (select(record_contacts.c.contact_id)
                               .where(record_contacts.c.record_kind == record_views.c.kind,
                                      record_contacts.c.record_id == record_views.c.id,
                                      record_contacts.c.contact_id.in_(company_contacts))
                               .exists())
        stmt = select(*_RECORD_COLUMNS).where(
            record_views.c.kind == "lead",
            or_(record_views.c.company_id == company_id, record_views.c.contact_id.in_(company_contacts),
                has_company_contact))
        return _records_page(ctx, stmt, f"company-leads:{company_id}")


def build_links_api(view: CatalogueView | None = None) -> Api:
    """The links of files to leads and opportunities, the records' detail tabs, and the
    records reached from a contact or a company."""
    api = Api("links")
    for kind in RECORD_KINDS:
        _Links(api, kind, view or CatalogueView()).declare()
    _file_routes(api)
    return api
