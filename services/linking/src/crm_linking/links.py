"""The links of contacts and job orders to leads and opportunities: the rules and their storage,
shared by the routes (``link_routes.py``) and the reactions to the records' events.

Every change writes its ``linking.*`` event and a timeline entry in the caller's transaction.

The link rules are the database's (primary key of ``record_contacts``; UNIQUE (job_order_id,
record_kind) of ``record_job_orders``; UNIQUE (record_kind, record_id, exclusive_role) of
``record_contacts``): a link is inserted in a savepoint and a constraint violation becomes a
409, so concurrent requests cannot break them. Linking a job order to the record it is already
linked to is a 409 too (not an idempotent 200): the client asked for a change that cannot
happen, and a retry that must not fail uses ``Idempotency-Key``.

The main contact (role ``MAIN``) is the record's own ``contact_id``: ``sync_main_contact``
keeps the contacts tab in step with it from the records' events (``records.apply_record_event``)
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
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Insert, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm_catalogue_view import CatalogueEntryView, CatalogueView
from crm_kit.db import utcnow
from crm_kit.identity import Identity
from crm_linking import journal
from crm_linking.access import PLURALS, load_record
from crm_linking.errors import (
    ConcurrentChange,
    ContactLinkedAlready,
    IsTheMainContact,
    JobOrderLinkedAlready,
    LinkRefused,
    MainContactChanged,
    MainIsTheRecords,
    NotLinked,
    SignIsNoRoleChange,
    SignTaken,
    UnknownRecord,
    UnknownReference,
)
from crm_linking.tables import companies, contacts, job_orders, record_contacts, record_job_orders

log = logging.getLogger(__name__)

RECORD_KINDS = ("lead", "opportunity")
# Roles a record has at most one contact with: its main contact (its contact_id) and its signing
# authority. A PATCH from the list never moves a link to or from them.
PROTECTED_ROLE_CODES = frozenset({"MAIN", "SIGN"})


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


# Asked for every record event (the main contact's sync): built once, with parameters.
_EXCLUSIVE_LINK = select(record_contacts).where(
    record_contacts.c.record_kind == bindparam("kind"), record_contacts.c.record_id == bindparam("record_id"),
    record_contacts.c.exclusive_role == bindparam("code"))


def exclusive_link(session: Session, kind: str, record_id: str, code: str) -> Any:
    """The record's contact link with the exclusive role ``code`` (MAIN or SIGN), if any."""
    return session.execute(_EXCLUSIVE_LINK, {"kind": kind, "record_id": record_id, "code": code}).first()


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
    gets it with the record's next event. ``ConcurrentChange`` when a concurrent change
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
    raise ConcurrentChange(f"{kind} {record_id}: the MAIN contact changed while contact {contact_id} "
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


def job_order_link(session: Session, kind: str, record_id: str, job_order_id: str) -> Any:
    """The record_job_orders row of ``job_order_id`` on the record, if linked."""
    return session.execute(select(record_job_orders).where(
        record_job_orders.c.record_kind == kind, record_job_orders.c.record_id == record_id,
        record_job_orders.c.job_order_id == job_order_id)).first()


# -- the changes a caller asks for on a record's tabs (the routes: link_routes.py) ---------------
# ``record`` is the record's view row, loaded for a caller who may see it (access.load_record).

def require_role(session: Session, view: CatalogueView, kind: str, role_id: str) -> CatalogueEntryView:
    """The active role ``role_id`` of ``kind`` (CatalogueReferenceError, naming ``role_id``, if not)."""
    return view.require(session, role_id, kind=kind, entity="roles", field_name="role_id")


def _require_company(session: Session, company_id: str | None, field_name: str) -> None:
    if company_id and session.execute(select(companies.c.id).where(companies.c.id == company_id)).first() is None:
        raise UnknownReference(field_name, "company", company_id)


def _create_inline(session: Session, table: Any, entity: str, data: Mapping[str, Any], identity: Identity) -> Any:
    """A new contact or job order given inline with its link (``linking.<entity>.created``)."""
    now = utcnow()
    values = {"id": str(uuid.uuid4()), **data, "version": 1, "created_at": now, "created_by": identity.user_id,
              "modified_at": now, "modified_by": identity.user_id}
    session.execute(insert(table).values(**values))
    journal.publish(session, f"linking.{entity}.created", entity, values["id"], values, identity=identity)
    return session.execute(select(table).where(table.c.id == values["id"])).one()


def _existing_or_new(session: Session, identity: Identity, table: Any, entity: str, existing_id: str | None,
                     new: Mapping[str, Any] | None) -> Any:
    """The contact or job order a link names: a new one given inline (created with the link, its
    company checked), else the existing one by id (unknown: ``<entity>_id`` refused)."""
    if new is not None:
        _require_company(session, new.get("company_id"), f"{entity}.company_id")
        return _create_inline(session, table, entity, new, identity)
    row = session.execute(select(table).where(table.c.id == existing_id)).first()
    if row is None:
        raise UnknownReference(f"{entity}_id", entity.replace("_", " "), str(existing_id))
    return row


def link_contact(session: Session, identity: Identity, kind: str, record: Any, role_id: str, *,
                 contact_id: str | None = None, new_contact: Mapping[str, Any] | None = None,
                 view: CatalogueView | None = None) -> tuple[str, bool]:
    """Link an existing contact (``contact_id``) or a new one (``new_contact``, created with the
    link) to the record with the role ``role_id``; (the contact's id, whether anything changed).

    ``MAIN`` only confirms the record's own ``contact_id`` (nothing changes when the tab agrees
    already); ``SIGN`` only while the record has none. The friendly first looks answer the common
    cases; the constraints decide under concurrency.
    """
    view = view or CatalogueView()
    plural = PLURALS[kind]
    role = require_role(session, view, kind, role_id)
    code = exclusive_code(role)
    if code == "MAIN" and (not record.contact_id or contact_id != record.contact_id):
        raise MainIsTheRecords(kind, plural)
    contact = _existing_or_new(session, identity, contacts, "contact", contact_id, new_contact)
    if code == "MAIN":  # the record's own contact: make sure the tab agrees, and say whether it did
        try:
            changed = sync_main_contact(session, kind, record.id, record.contact_id, by=identity.user_id,
                                        identity=identity, view=view)
        except ConcurrentChange:
            raise MainContactChanged(kind) from None
        return contact.id, changed
    if contact_link(session, kind, record.id, contact.id) is not None:
        raise ContactLinkedAlready(contact.id, kind, plural)
    holder = exclusive_link(session, kind, record.id, code) if code else None
    if holder is not None:
        raise SignTaken(kind, holder.contact_id)
    if not add_contact_link(session, kind, record.id, contact, role.id, exclusive=code, by=identity.user_id,
                            identity=identity):
        if contact_link(session, kind, record.id, contact.id) is not None:
            raise ContactLinkedAlready(contact.id, kind, plural)  # a concurrent request linked it first
        holder = exclusive_link(session, kind, record.id, code) if code else None
        if holder is not None:
            raise SignTaken(kind, holder.contact_id)  # a concurrent request added one first
        raise LinkRefused("Contact", contact.id)
    return contact.id, True


def set_contact_role(session: Session, identity: Identity, kind: str, record: Any, contact_id: str, role_id: str,
                     view: CatalogueView | None = None) -> None:
    """Give a linked contact another role; never to or from ``MAIN`` or ``SIGN``. The same role
    again changes nothing."""
    view = view or CatalogueView()
    plural = PLURALS[kind]
    link = contact_link(session, kind, record.id, contact_id)
    if link is None:
        raise NotLinked("Contact", contact_id, kind)
    new = require_role(session, view, kind, role_id)
    current = view.get(session, link.role_id) if link.role_id else None
    for code, which in ((link.exclusive_role or exclusive_code(current), "current"), (exclusive_code(new), "new")):
        if code == "MAIN":
            raise MainIsTheRecords(kind, plural, which)
        if code == "SIGN":
            raise SignIsNoRoleChange(kind, plural, which)
    if new.id != link.role_id:
        change_contact_role(session, kind, record.id, link, new.id, by=identity.user_id, identity=identity)


def unlink_contact(session: Session, identity: Identity, kind: str, record: Any, contact_id: str) -> None:
    """Take a contact off the record (the contact itself stays); never its main contact."""
    link = contact_link(session, kind, record.id, contact_id)
    if link is None:
        raise NotLinked("Contact", contact_id, kind)
    if link.exclusive_role == "MAIN" or record.contact_id == contact_id:
        raise IsTheMainContact(contact_id, kind)
    remove_contact_link(session, kind, record.id, link, by=identity.user_id, identity=identity)


def _job_order_taken(session: Session, identity: Identity, kind: str, job_order_id: str, linked_to: str,
                     record_id: str) -> JobOrderLinkedAlready:
    if linked_to == record_id:
        return JobOrderLinkedAlready(job_order_id, kind, linked_to, this_record=True)
    try:
        load_record(session, kind, linked_to, identity)
    except UnknownRecord:  # a record the caller may not see is not named
        return JobOrderLinkedAlready(job_order_id, kind, None)
    return JobOrderLinkedAlready(job_order_id, kind, linked_to)


def link_job_order(session: Session, identity: Identity, kind: str, record: Any, *, job_order_id: str | None = None,
                   new_job_order: Mapping[str, Any] | None = None) -> str:
    """Link an existing job order (``job_order_id``) or a new one (``new_job_order``, created with
    the link) to the record; its id. A job order links to at most one record of each kind."""
    order = _existing_or_new(session, identity, job_orders, "job_order", job_order_id, new_job_order)
    # A friendly answer for the common case; the constraint decides under concurrency.
    existing = job_order_link_of_kind(session, order.id, kind)
    if existing is not None:
        raise _job_order_taken(session, identity, kind, order.id, existing.record_id, record.id)
    if not add_job_order_link(session, kind, record.id, order, by=identity.user_id, identity=identity):
        existing = job_order_link_of_kind(session, order.id, kind)
        if existing is None:
            raise LinkRefused("Job order", order.id)
        raise _job_order_taken(session, identity, kind, order.id, existing.record_id, record.id)
    return str(order.id)


def unlink_job_order(session: Session, identity: Identity, kind: str, record: Any, job_order_id: str) -> None:
    """Take a job order off the record (the job order itself stays)."""
    if job_order_link(session, kind, record.id, job_order_id) is None:
        raise NotLinked("Job order", job_order_id, kind)
    remove_job_order_link(session, kind, record.id, job_order_id, by=identity.user_id, identity=identity)
