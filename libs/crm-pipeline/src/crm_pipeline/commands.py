"""Commands from the triggers service, applied exactly once by command id.

The command's envelope ``event_id`` is its id (derived by the triggers service from trigger,
record and causing event), so the idempotent consumer's inbox applies it once however often
it is delivered. Its cause (``trigger:<id>``) and ``trigger_depth`` go into the history and
into every event the change produces, so the triggers service can stop loops.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_kafka.consumer import Handler
from crm_kit.errors import ChangedMeanwhile, DomainError
from crm_pipeline.events import command_actor
from crm_pipeline.records import Records

log = logging.getLogger(__name__)


def command_handler(records: Records) -> Handler:
    """The handler for ``crm.<records>.commands.v1``."""

    def handle(session: Session, envelope: Envelope) -> None:
        if envelope.WhichOneof("payload") != "command" or envelope.command.kind != records.kind.kind:
            return
        command = envelope.command
        row = records.get(session, command.record_id)
        if row is None:
            log.warning("command %s: %s %s no longer exists", envelope.event_id, command.kind, command.record_id)
            return
        actor = command_actor(envelope, row.office_id)
        try:
            # A savepoint: a refused command leaves none of its writes behind (a membership or
            # history row written before the refusal would otherwise commit with the inbox row).
            with session.begin_nested():
                if command.action == "set_stage":
                    records.update(session, row, {"stage_id": command.stage_id}, actor)
                elif command.action == "add_to_group":
                    records.add_group(session, row, command.group_id, actor)
                elif command.action == "remove_from_group":
                    records.remove_group(session, row, command.group_id, actor)
                else:
                    log.warning("command %s: unknown action %r", envelope.event_id, command.action)
        except ChangedMeanwhile:
            # A user's write to the record committed between our read and our write: the
            # command is still due. Raising rolls the event back; the consumer retries it
            # on a fresh read.
            raise
        except DomainError as exc:
            # A rule refused it (inactive stage, not a member...): retrying cannot help.
            log.warning("command %s refused: %s", envelope.event_id, exc.detail)

    return handle
