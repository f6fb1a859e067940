"""The unit of work: the one way a service writes events.

A change's transaction collects the events of what it touched (``UnitOfWork.of(session).add``)
and writes them to the outbox when it commits, in one multi-row insert, in the order they
were added. A savepoint that is rolled back (one bulk item failing, an import's check)
takes the events added inside it with it, and a transaction that rolls back writes none:
an event is in the outbox exactly when the change it describes is in the tables.

The session decides when: whoever commits it (the web edge after a request, the consumer
after an event together with its inbox row and offset, an import batch) commits the
events too. No caller writes outbox rows itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from crm.events.v1.envelope_pb2 import Envelope
from crm_kafka.outbox import record_rows
from crm_kit.db import hold_back_writes

_INFO_KEY = "crm_kafka.unit_of_work"


@dataclass
class UnitOfWork:
    """The events of ``session``'s current transaction, written when it commits."""

    session: Session
    pending: list[tuple[str, Envelope, str | None]] = field(default_factory=list)
    # A savepoint's rollback drops what was added since it began (how many were pending then).
    _marks: WeakKeyDictionary[SessionTransaction, int] = field(default_factory=WeakKeyDictionary)

    @classmethod
    def of(cls, session: Session) -> UnitOfWork:
        """The unit of work of ``session`` (one per session, made on first use)."""
        uow = session.info.get(_INFO_KEY)
        if uow is None:
            uow = session.info[_INFO_KEY] = cls(session)
            # A request's answer names the outbox rows it wrote: the web edge writes them before answering.
            hold_back_writes(session, uow.write)
        return uow  # type: ignore[no-any-return]

    def add(self, topic: str, envelope: Envelope, key: str | None = None) -> None:
        """Publish ``envelope`` on ``topic`` if, and when, this transaction commits.

        The Kafka key is the aggregate id unless given, so one record's events stay in order.
        """
        self.pending.append((topic, envelope, key))

    def add_all(self, topic: str, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            self.add(topic, envelope)

    def write(self) -> None:
        """Write the pending events to the outbox now (the commit does it; tests and bulk paths may
        call it to see the rows before committing)."""
        if self.pending:
            rows, self.pending = self.pending, []
            self._marks.clear()  # written rows go with a savepoint's rollback by themselves
            record_rows(self.session, rows)


def _on_begin(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested and _INFO_KEY in session.info:
        uow: UnitOfWork = session.info[_INFO_KEY]
        uow._marks[transaction] = len(uow.pending)


def _on_rollback(session: Session, transaction: SessionTransaction) -> None:
    uow: UnitOfWork | None = session.info.get(_INFO_KEY)
    if uow is None:
        return
    if transaction.nested:
        mark = uow._marks.pop(transaction, None)
        # A savepoint begun before the unit of work existed had nothing pending: drop everything added since.
        del uow.pending[mark or 0:]
    elif transaction.parent is None:
        uow.pending.clear()


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    # A transaction that ends without commit or rollback (a closed session) leaves nothing behind.
    uow: UnitOfWork | None = session.info.get(_INFO_KEY)
    if uow is not None and transaction.parent is None:
        uow.pending.clear()
        uow._marks.clear()


def _on_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint's events go with the whole transaction
        return
    uow: UnitOfWork | None = session.info.get(_INFO_KEY)
    if uow is not None:
        uow.write()


def _listen(name: str, fn: Any) -> None:
    if not event.contains(Session, name, fn):
        event.listen(Session, name, fn)


_listen("after_transaction_create", _on_begin)
_listen("after_soft_rollback", _on_rollback)
_listen("after_transaction_end", _on_end)
_listen("before_commit", _on_commit)
