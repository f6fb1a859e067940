"""linking_0002 on a database that linking_0001 filled (SQLite and PostgreSQL): role-less links,
one MAIN and one SIGN per record from then on, and the activities' office, backfilled sensibly.
linking_0005: the record topics' two consumer groups become one, at the lower position.
The tables the code defines and the ones the migrations make agree (Alembic finds no difference).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from crm_devstack.migration_testing import Migrations
from crm_events.topics import CATALOGUE, LEADS, OPPORTUNITIES
from crm_kafka.consumer import INBOX, OFFSETS
from crm_kit.db import Database
from crm_linking.tables import activities, catalogue_view, contacts, record_contacts, record_views

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def _audit() -> dict[str, Any]:
    return {"version": 1, "created_at": NOW, "created_by": "seed", "modified_at": NOW, "modified_by": "seed"}


def test_0002_backfills_exclusive_roles_and_offices(any_db_url: str) -> None:
    migrations = Migrations("linking", any_db_url)
    migrations.start_at("linking_0001")
    db = Database(any_db_url)
    try:
        roles = {code: str(uuid.uuid4()) for code in ("MAIN", "SIGN", "OTHER")}
        people = {name: str(uuid.uuid4()) for name in ("ann", "bob", "cas", "dan", "eve")}
        lead, other_lead, opportunity, gone = (str(uuid.uuid4()) for _ in range(4))
        with db.transaction() as s:
            for code, role_id in roles.items():
                s.execute(insert(catalogue_view).values(
                    id=role_id, kind="lead", entity="roles", code=code, names={"en": code}, index=0, active=True,
                    deleted=False, version=1, attributes={}, updated_at=NOW))
            for name, contact_id in people.items():
                s.execute(insert(contacts).values(id=contact_id, first_name=name, last_name="X", **_audit()))
            for record_id, kind, office, contact_id in ((lead, "lead", "o1", people["bob"]),
                                                        (other_lead, "lead", "o2", None),
                                                        (opportunity, "opportunity", "o3", None)):
                s.execute(insert(record_views).values(id=record_id, kind=kind, title="R", owner_id="u",
                                                      office_id=office, contact_id=contact_id, version=1,
                                                      updated_at=NOW))
            # Before 0002, the tab could hold several MAIN and SIGN contacts.
            for record_id, name, code, minutes in ((lead, "ann", "MAIN", 0), (lead, "bob", "MAIN", 1),
                                                   (lead, "cas", "SIGN", 2), (lead, "dan", "SIGN", 3),
                                                   (lead, "eve", "OTHER", 4), (other_lead, "ann", "MAIN", 0),
                                                   (other_lead, "bob", "MAIN", 1)):
                s.execute(insert(record_contacts).values(
                    record_kind="lead", record_id=record_id, contact_id=people[name], role_id=roles[code],
                    linked_at=NOW + dt.timedelta(minutes=minutes), linked_by="u"))
            acts = {name: str(uuid.uuid4()) for name in ("on_lead", "on_both", "on_opportunity", "on_gone", "free")}
            for name, lead_id, opportunity_id in (("on_lead", lead, None), ("on_both", other_lead, opportunity),
                                                  ("on_opportunity", None, opportunity), ("on_gone", gone, None),
                                                  ("free", None, None)):
                s.execute(insert(activities).values(
                    id=acts[name], type="note", subject=name, lead_id=lead_id, opportunity_id=opportunity_id,
                    **_audit()))

        migrations.upgrade()

        with db.transaction() as s:
            rows = s.execute(select(record_contacts.c.record_id, record_contacts.c.contact_id,
                                    record_contacts.c.role_id, record_contacts.c.exclusive_role)).all()
            offices = dict(s.execute(select(activities.c.id, activities.c.office_id)).all())
        links = {(r.record_id, r.contact_id): (r.role_id, r.exclusive_role) for r in rows}
        # The lead's own contact_id (Bob) stays MAIN; otherwise the earliest; the others lose the role.
        assert links == {
            (lead, people["ann"]): (None, None), (lead, people["bob"]): (roles["MAIN"], "MAIN"),
            (lead, people["cas"]): (roles["SIGN"], "SIGN"), (lead, people["dan"]): (None, None),
            (lead, people["eve"]): (roles["OTHER"], None),
            (other_lead, people["ann"]): (roles["MAIN"], "MAIN"), (other_lead, people["bob"]): (None, None)}
        assert offices == {acts["on_lead"]: "o1", acts["on_both"]: "o2", acts["on_opportunity"]: "o3",
                           acts["on_gone"]: None, acts["free"]: None}

        # From now on the database refuses a second SIGN; role-less links are many.
        with pytest.raises(IntegrityError), db.transaction() as s:
            s.execute(record_contacts.update().where(record_contacts.c.contact_id == people["dan"],
                                                     record_contacts.c.record_id == lead)
                      .values(role_id=roles["SIGN"], exclusive_role="SIGN"))

        # The tables of the code and of the migrations agree.
        assert migrations.differences(db) == []

        migrations.downgrade("linking_0001")  # and back: role-less links cannot stay
        with db.transaction() as s:
            assert s.execute(select(record_contacts.c.contact_id).where(record_contacts.c.record_id == lead)
                             .order_by(record_contacts.c.contact_id)).scalars().all() == sorted(
                [people["bob"], people["cas"], people["eve"]])
    finally:
        db.dispose()


def test_0005_records_takes_over_reactions_at_the_lower_position(any_db_url: str) -> None:
    """Every event either consumer had not applied yet is applied again (by both halves, each
    idempotent); nothing of ``reactions`` is left to hold reads that wait for the record topics."""
    migrations = Migrations("linking", any_db_url)
    migrations.start_at("linking_0004")
    db = Database(any_db_url)
    records, reactions, catalogue = "linking.records", "linking.reactions", "linking.catalogue"
    try:
        with db.transaction() as s:
            s.execute(insert(OFFSETS), [
                {"consumer": records, "topic": LEADS, "partition": 0, "next_offset": 10},
                {"consumer": records, "topic": LEADS, "partition": 1, "next_offset": 5},
                {"consumer": records, "topic": OPPORTUNITIES, "partition": 0, "next_offset": 7},
                {"consumer": reactions, "topic": LEADS, "partition": 0, "next_offset": 8},
                {"consumer": reactions, "topic": LEADS, "partition": 1, "next_offset": 9},
                {"consumer": catalogue, "topic": CATALOGUE, "partition": 0, "next_offset": 4}])
            s.execute(insert(INBOX), [{"consumer": consumer, "event_id": str(uuid.uuid4()), "topic": LEADS,
                                       "processed_at": NOW} for consumer in (records, records, reactions, catalogue)])

        migrations.upgrade()

        def positions() -> set[tuple[str, str, int, int]]:
            with db.transaction() as s:
                return {tuple(row) for row in s.execute(select(OFFSETS.c.consumer, OFFSETS.c.topic,
                                                               OFFSETS.c.partition, OFFSETS.c.next_offset))}

        def inboxes() -> list[str]:
            with db.transaction() as s:
                return sorted(s.execute(select(INBOX.c.consumer)).scalars())

        # The opportunities' partition 0: reactions had no position (the beginning), so neither has.
        assert positions() == {(records, LEADS, 0, 8), (records, LEADS, 1, 5), (catalogue, CATALOGUE, 0, 4)}
        assert inboxes() == [catalogue]
        assert migrations.differences(db) == []

        migrations.downgrade("linking_0004")
        assert positions() == {(records, LEADS, 0, 8), (records, LEADS, 1, 5), (reactions, LEADS, 0, 8),
                               (reactions, LEADS, 1, 5), (catalogue, CATALOGUE, 0, 4)}
    finally:
        db.dispose()
