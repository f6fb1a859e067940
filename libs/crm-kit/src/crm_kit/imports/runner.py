"""The worker loop of imports: one more loop of a service's worker (``WorkerPlan.extra_loops``).

Each round takes one batch of one job (``Imports.work_once``) in its own transaction and commits
it; a killed worker loses and doubles nothing (the batch's records and its rows' results commit
together, and the rows still pending are taken by the restarted worker or another replica; on
PostgreSQL the job and its rows are locked with SKIP LOCKED, on SQLite the single writer
serialises). With nothing to do it polls every ``idle`` seconds, so an import starts at once.
A failing round is logged and retried after a pause (after ``ATTEMPTS`` failures in a row, that
batch's rows are marked invalid / error with the reason, so one bad batch does not stop the job
or the jobs after it); the loop itself never stops, so the worker's health check stays green.
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
ATTEMPTS = 3  # a batch failing this many times in a row is marked failed, row by row, with the reason


class ImportRunner:
    """``run(stop)`` for ``WorkerPlan.extra_loops``; ``heartbeat`` is the monotonic time of its
    last round (for a health check that wants it)."""

    def __init__(self, database: Database, imports: Imports, *, idle: float = IDLE_SECONDS) -> None:
        self.database = database
        self.imports = imports
        self.idle = idle
        self.heartbeat = time.monotonic()
        self.failures: dict[str, int] = {}  # job id -> batches failed in a row
        self.given_up: dict[str, str] = {}  # job id -> why its next batch is marked failed

    def round(self) -> bool:
        """One batch, committed; False when there was nothing to do. A batch that failed
        ``ATTEMPTS`` times in a row is marked failed with the reason (``Imports.work_once``)."""
        picked: list[str] = []
        try:
            with self.database.transaction() as session:
                worked = self.imports.work_once(session, picked=picked, failed=self.given_up)
        except Exception as exc:
            if picked:
                job = picked[-1]
                self.failures[job] = self.failures.get(job, 0) + 1
                if self.failures[job] >= ATTEMPTS:
                    self.given_up[job] = f"{type(exc).__name__}: {str(exc)[:300]}"
            raise
        for job in picked:
            self.failures.pop(job, None)
            self.given_up.pop(job, None)
        return worked

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
