"""webhooks_0002 on a database that webhooks_0001 filled (SQLite and PostgreSQL): a link's id fits
the log, the states and the queue; the tables the code defines and the ones the migrations make
agree (Alembic finds no difference); and back, what does not fit is removed."""

from __future__ import annotations

import uuid

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, select

from crm_kit.db import Database, utcnow
from crm_kit.migrations import alembic_config
from crm_kit.service import find_service
from crm_webhooks.tables import deliveries, entity_states, events

pytestmark = pytest.mark.integration


def _event(entity_id: str) -> dict[str, object]:
    return {"event_id": str(uuid.uuid4()), "type": "contact.linked", "entity": "contact", "entity_id": entity_id,
            "occurred_at": utcnow(), "body": "{}"}


def test_0002_makes_room_for_link_ids_and_agrees_with_the_code(any_db_url: str) -> None:
    spec = find_service("webhooks")
    assert spec.migrations is not None
    config = alembic_config(any_db_url, spec.migrations, spec.metadata)
    command.upgrade(config, "webhooks_0001")
    command.upgrade(config, "kit@head")
    db = Database(any_db_url)
    try:
        record = str(uuid.uuid4())
        with db.transaction() as s:
            s.execute(insert(events).values(**_event(record)))
        command.upgrade(config, "heads")
        link = f"{uuid.uuid4()}:{record}"  # <contact id>:<record id>, 73 characters
        with db.transaction() as s:
            seq = s.execute(insert(events).values(**_event(link)).returning(events.c.seq)).scalar_one()
            s.execute(insert(entity_states).values(entity="contact", id=link, version=1, office_id="o1", data={}))
            s.execute(insert(deliveries).values(
                subscription_id=str(uuid.uuid4()), event_seq=seq, event_id=str(uuid.uuid4()),
                event_type="contact.linked", ordering_key=f"contact:{link}", state="pending", attempts=0,
                next_attempt_at=utcnow(), created_at=utcnow()))
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), spec.metadata)
        assert diff == [], diff

        command.downgrade(config, "webhooks_0001")
        with db.transaction() as s:
            assert s.execute(select(events.c.entity_id)).scalars().all() == [record]
            assert s.execute(select(func.count()).select_from(entity_states)).scalar_one() == 0
            assert s.execute(select(func.count()).select_from(deliveries)).scalar_one() == 0
    finally:
        db.dispose()
