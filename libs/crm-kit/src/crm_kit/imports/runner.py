"""The worker loop of imports: one more loop of a service's worker (``WorkerPlan.extra_loops``).

Each round takes one batch of one job (``Imports.work_once``) in its own transaction and commits
it; a killed worker loses and doubles nothing (the batch's records and its rows' results commit
together, and the rows still pending are taken by the restarted worker or another replica; on
PostgreSQL the job and its rows are locked with SKIP LOCKED, on SQLite the single writer
serialises). With nothing to do it polls every ``idle`` seconds, so an import starts at once.
A failing round is logged and retried after a pause; the loop itself never stops, so the
worker's health check stays green while the service's database is reachable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from crm_kit.db import Database
from crm_kit.imports.jobs import Imports

log = logging.getLogger(__name__)

IDLE_SECONDS = 0.2
RETRY_SECONDS = 2.0


class ImportRunner:
    """``run(stop)`` for ``WorkerPlan.extra_loops``; ``heartbeat`` is the monotonic time of its
    last round (for a health check that wants it)."""

    def __init__(self, database: Database, imports: Imports, *, idle: float = IDLE_SECONDS) -> None:
        self.database = database
        self.imports = imports
        self.idle = idle
        self.heartbeat = time.monotonic()

    def round(self) -> bool:
        """One batch, committed; False when there was nothing to do."""
        with self.database.transaction() as session:
            return self.imports.work_once(session)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                worked = self.round()
            except Exception:  # noqa: BLE001 - logged; the batch rolled back and is taken again
                log.exception("import batch failed; retrying")
                stop.wait(RETRY_SECONDS)
                continue
            if not worked:
                stop.wait(self.idle)

    def drain(self, limit: int = 10_000) -> int:
        """Rounds until there is no work (tests); how many batches it took."""
        done = 0
        while done < limit and self.round():
            done += 1
        return done


def import_loop(database: Database, imports: Imports) -> tuple[str, Callable[[threading.Event], None]]:
    """The ``(name, run)`` entry of ``WorkerPlan.extra_loops``."""
    return "imports", ImportRunner(database, imports).run
