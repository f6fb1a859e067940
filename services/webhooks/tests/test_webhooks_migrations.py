"""webhooks_0002 on a database that webhooks_0001 filled (SQLite and PostgreSQL): a link's id fits
the log, the states and the queue; the tables the code defines and the ones the migrations make
agree (Alembic finds no difference); and back, what does not fit is removed."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, insert, select

from crm_devstack.migration_testing import Migrations
from crm_kit.db import Database, utcnow
from crm_webhooks.tables import deliveries, entity_states, events

pytestmark = pytest.mark.integration


def _event(entity_id: str) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "type": "contact.linked", "entity": "contact", "entity_id": entity_id,
            "occurred_at": utcnow(), "body": "{}"}


def test_0002_makes_room_for_link_ids_and_agrees_with_the_code(any_db_url: str) -> None:
    migrations = Migrations("webhooks", any_db_url)
    migrations.start_at("webhooks_0001")
    db = Database(any_db_url)
    try:
        record = str(uuid.uuid4())
        with db.transaction() as s:
            s.execute(insert(events).values(**_event(record)))
        migrations.upgrade()
        link = f"{uuid.uuid4()}:{record}"  # <contact id>:<record id>, 73 characters
        with db.transaction() as s:
            seq = s.execute(insert(events).values(**_event(link)).returning(events.c.seq)).scalar_one()
            s.execute(insert(entity_states).values(entity="contact", id=link, version=1, office_id="o1", data={}))
            s.execute(insert(deliveries).values(
                subscription_id=str(uuid.uuid4()), event_seq=seq, event_id=str(uuid.uuid4()),
                event_type="contact.linked", ordering_key=f"contact:{link}", state="pending", attempts=0,
                next_attempt_at=utcnow(), created_at=utcnow()))
        assert migrations.differences(db) == []

        migrations.downgrade("webhooks_0001")
        with db.transaction() as s:
            assert s.execute(select(events.c.entity_id)).scalars().all() == [record]
            assert s.execute(select(func.count()).select_from(entity_states)).scalar_one() == 0
            assert s.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0
    finally:
        db.dispose()
