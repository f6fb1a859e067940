"""The scheduler of time-based triggers ("last modification date has passed since").

Every ``POLL_SECONDS`` one transaction takes the due ``schedule`` rows (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, so several workers never take the same row), fires each through
``engine.fire`` with the causing event ``time:<armed_at>`` and marks it fired. The execution,
the commands (outbox) and ``fired_at`` commit together: after a crash a firing is either
wholly done or still due, never lost and never repeated. Its view of records is
``record_states``, kept by the ``evaluate`` consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import func, select, update

from crm_kit.db import Database, utcnow
from crm_triggers.engine import SCHEDULER_LAG, TIME_TYPE, conditions_failing, fire
from crm_triggers.tables import record_states, schedule, trigger_rules

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
BATCH = 500


def tick(database: Database) -> int:
    """Fire what is due now; how many due rows were handled."""
    now = utcnow()
    due = (schedule.c.fired_at.is_(None)) & (schedule.c.due_at <= now)
    with database.transaction() as session:
        oldest = session.execute(select(func.min(schedule.c.due_at)).where(due)).scalar()
        SCHEDULER_LAG.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        rows = session.execute(select(schedule).where(due).order_by(schedule.c.due_at).limit(BATCH)
                               .with_for_update(skip_locked=True)).all()
        for row in rows:
            trigger = session.execute(select(trigger_rules).where(trigger_rules.c.id == row.trigger_id)).first()
            record = session.execute(select(record_states).where(record_states.c.id == row.record_id)).first()
            event = (trigger.definition.get("event") or {}) if trigger is not None else {}
            if (trigger is not None and trigger.active and event.get("type") == TIME_TYPE
                    and record is not None and not record.deleted
                    and not conditions_failing(trigger.definition.get("conditions") or {}, record.state)):
                fire(session, trigger, row.record_id, row.kind, f"time:{row.armed_at.isoformat()}", row.due_at, 0)
            # Otherwise obsolete (trigger gone, inactive or changed; record gone; conditions
            # do not hold): this modification's firing is settled either way.
            session.execute(update(schedule).where(schedule.c.trigger_id == row.trigger_id,
                                                   schedule.c.record_id == row.record_id,
                                                   schedule.c.armed_at == row.armed_at)
                            .values(fired_at=now))
        return len(rows)


def scheduler_loop(database: Database) -> Callable[[threading.Event], None]:
    """The scheduler as a worker loop: ``run(stop)`` ticks until ``stop`` is set."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                handled = tick(database)
            except Exception as exc:  # noqa: BLE001 - the next tick retries (nothing was committed)
                log.warning("scheduler tick failed: %s", exc)
                handled = 0
            if handled < BATCH:
                stop.wait(POLL_SECONDS)

    return run
