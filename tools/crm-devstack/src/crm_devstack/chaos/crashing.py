"""The crashing relay and consumer: the kit's components wrapped with the chaos run's faults.

They override the extension points the components declare for it and die like a SIGKILL there:

- ``CrashingRelay``: after Kafka confirmed a batch, before the rows are marked sent (so the
  rows are published again after a restart);
- ``CrashingConsumer``: after its N-th applied event committed, before the offset commit (so
  Kafka redelivers events that are done; the inbox must drop them).

``install`` makes the kit's ``Worker`` build them instead of the plain ones; the
``faulty_worker`` command runs a service's worker that way. Production code knows nothing of
this: the faults exist only in processes started through that command (``make chaos``) and in
the kit's tests, which build these classes.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from crm.events.v1.envelope_pb2 import Envelope
from crm_kafka.consumer import IdempotentConsumer
from crm_kafka.relay import OutboxRelay
from crm_kafka.worker import Worker

log = logging.getLogger(__name__)

# What the wrapped components log as they kill themselves (the chaos run looks for it in the log).
RELAY_FAULT_LOG = "fault injection: relay killing itself"
CONSUMER_FAULT_LOG = "fault injection: consumer killing itself"


def _die() -> None:
    """End this process at once, as SIGKILL would: no cleanup, no commit, no flush."""
    logging.shutdown()  # the line above must reach the log first
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingRelay(OutboxRelay):
    """An outbox relay that dies after Kafka confirmed its first batch, before marking it sent."""

    def _after_publish(self, row_ids: list[int]) -> None:
        log.warning("%s after publishing %d rows", RELAY_FAULT_LOG, len(row_ids))
        _die()


class CrashingConsumer(IdempotentConsumer):
    """A consumer that dies once it applied ``exit_after`` events, before their offset commit."""

    exit_after = 1  # the default of every instance (``install`` sets it for a whole worker)

    def __init__(self, *args: Any, exit_after: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if exit_after is not None:
            self.exit_after = exit_after

    def _after_apply(self, envelope: Envelope) -> None:
        if self.applied >= self.exit_after:
            log.warning("%s after %d events", CONSUMER_FAULT_LOG, self.applied)
            _die()


def install(*, relay_exit_after_publish: bool = False, consumer_exit_after: int = 0) -> None:
    """Make the kit's ``Worker`` in this process build the crashing components asked for."""
    if relay_exit_after_publish:
        Worker.relay_type = CrashingRelay
    if consumer_exit_after > 0:
        CrashingConsumer.exit_after = consumer_exit_after
        Worker.consumer_type = CrashingConsumer
