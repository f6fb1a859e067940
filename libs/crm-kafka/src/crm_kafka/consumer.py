"""The idempotent consumer: each event's effect is applied once, whatever Kafka redelivers.

For the messages of one poll batch: decode each envelope once; in one database transaction
write each partition's next offset, read which of the batch's ``(consumer, event_id)`` the
inbox has (those, and repeats inside the batch, are duplicates), apply the handler to each new
event in order, insert their inbox rows in one statement (plus whatever outbox rows the
handlers wrote); commit; only then store the offsets, and commit them to Kafka. A crash
anywhere before the Kafka commit redelivers the messages and the inbox says "done already".

That is the happy path, one transaction instead of one per event. When anything in it fails
(a handler's error, the database away, a concurrent delivery's inbox row) it is rolled back
and the batch goes one message at a time, each in its own transaction as above, which is where
failures are dealt with: a message that cannot be decoded, a batch of one and the messages
behind an event being retried go that way too.

Where to start reading is the database's decision, not Kafka's: the next offset of each
partition is written in the same transaction as the effect (``consumer_offsets``), and on
assignment the consumer seeks there - or to offset 0 when the database has none. So a read
model on a fresh database rebuilds itself from the whole topic even though its consumer
group committed offsets long ago, and a restored backup resumes where the backup was.
Kafka's committed offsets are still kept, for lag monitoring (on assignment, the database's are
committed there too).

A handler may batch its writes: when it has a ``finish(session)`` method, the consumer calls it
once per transaction, after the handler has seen that transaction's events and before their
inbox rows are written (a batch's, or a single event's), so a handler that only gathers in
``__call__`` can write the whole batch in a few multi-row statements. Whatever ``finish`` raises
fails the transaction exactly as a handler's error does.

A failing handler is retried with exponential backoff; after ``max_attempts`` the message
goes to ``<topic>.dlq`` with the error and its origin in headers, and the consumer goes on.
Undecodable messages go to the DLQ at once. A database that cannot be reached is waited for
(backoff up to 5 s) however long it takes, without using up the event's attempts.

Backpressure: the consumer never sleeps while it waits to retry. It pauses its partitions,
rewinds each to its first message not done (the failed one), and keeps calling ``poll`` -
which returns nothing from paused partitions but tells the group this member is alive - until
the wait is over; then it resumes and the messages come again in their order. So an outage
longer than ``max.poll.interval.ms`` does not make it leave its group (a rebalance of every
member), and ``stop`` is honoured within half a second.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crm.events.v1.envelope_pb2 import Envelope
from crm_events.envelope import EnvelopeDecodeError, decode
from crm_events.topics import dlq_name
from crm_kit import correlation, metrics
from crm_kit.db import Database, database_unavailable, new_metadata, utcnow

log = logging.getLogger(__name__)

INBOX = new_metadata().tables["inbox"]
OFFSETS = new_metadata().tables["consumer_offsets"]
Handler = Callable[[Session, Envelope], None]
# Run for every event or batch: built once, with parameters (built per call they cost more CPU than
# running them). An INSERT without values() takes its columns from the parameters.
_WRITE_OFFSET = update(OFFSETS).where(
    OFFSETS.c.consumer == bindparam("at_consumer"), OFFSETS.c.topic == bindparam("at_topic"),
    OFFSETS.c.partition == bindparam("at_partition")).values(next_offset=bindparam("at_next_offset"))
_SEEN = select(INBOX.c.event_id).where(INBOX.c.consumer == bindparam("consumer"),
                                       INBOX.c.event_id.in_(bindparam("event_ids", expanding=True)))


@dataclass
class _Failure:
    """What went wrong so far with the event at ``offset`` of a partition."""

    offset: int
    attempts: int = 0  # failed attempts of its own (handler errors), up to max_attempts
    outages: int = 0  # attempts that found the database unavailable: they do not count
    dead_lettered: bool = False  # the DLQ has it; only its offset is left to store


class Dispatch:
    """One handler from a map of ``event_type`` -> handler; other types are ignored (or given to
    ``default``). Ignoring is deliberate: topics carry more types than any one consumer needs,
    and new types must not break old consumers.

    Without a default, ``event_types`` says which types it handles: the consumer then leaves
    the others alone altogether (no handler call, no inbox row; their offsets still advance).
    """

    def __init__(self, handlers: Mapping[str, Handler], default: Handler | None = None) -> None:
        self.handlers = dict(handlers)
        self.default = default
        self.event_types: frozenset[str] | None = frozenset(self.handlers) if default is None else None

    def __call__(self, session: Session, envelope: Envelope) -> None:
        handler = self.handlers.get(envelope.event_type, self.default)
        if handler is not None:
            handler(session, envelope)


class IdempotentConsumer:
    """One consumer group over some topics, applying ``handler`` exactly once per event.

    ``batch_transactions=False`` gives each message its own transaction even on the happy path
    (how it was before batches; the drain bench compares the two).

    Extension point: ``_after_apply`` runs once per applied event, after its effect and inbox
    row committed (with the rest of its batch) and before its offset is committed to Kafka - the
    window where a crash makes Kafka redeliver events that are done. It does nothing here; a
    subclass may observe there (the chaos tooling's ``crm_devstack.chaos.crashing`` dies in it,
    like a SIGKILL, to prove the inbox).
    """

    def __init__(
        self,
        name: str,
        topics: list[str],
        handler: Handler,
        database: Database,
        consumer_config: dict[str, Any],
        dlq_producer_factory: Callable[[], Producer],
        service: str,
        *,
        max_attempts: int = 4,
        backoff: float = 0.2,
        batch_size: int = 200,
        batch_transactions: bool = True,
    ) -> None:
        self.name = name
        self.topics = topics
        self.handler = handler
        # The event types the handler acts on, when it says (a Dispatch): the rest are skipped.
        self.event_types: frozenset[str] | None = getattr(handler, "event_types", None)
        self.database = database
        self.config = dict(consumer_config)
        self.dlq_producer_factory = dlq_producer_factory
        self.service = service
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.batch_size = batch_size
        self.batch_transactions = batch_transactions
        self.heartbeat = time.monotonic()
        self.applied = 0
        self._dlq: Producer | None = None
        self._last_lag = 0.0
        self._failures: dict[tuple[str, int], _Failure] = {}  # per partition: its event waiting to be retried
        self._resume_at: float | None = None  # while paused: when the partitions resume
        self._to_confirm: list[TopicPartition] = []  # assigned partitions' database offsets, for Kafka

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, then commit what was done and leave the group.

        Survives database and broker outages: a failure outside one event's handling (the
        database away while partitions are assigned, an offset of a partition lost in a
        rebalance) closes the consumer and starts it again a second later; the database's
        offsets and the inbox make the restart lose and repeat nothing.
        """
        while not stop.is_set():
            try:
                self._consume(stop)
            except Exception:  # noqa: BLE001 - the consumer must outlive a database or broker blip
                log.exception("consumer %s failed; starting it again in 1 s", self.name)
                stop.wait(1.0)

    def _consume(self, stop: threading.Event) -> None:
        consumer = Consumer(self.config)
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._resume_at = None
        try:
            while not stop.is_set():
                self.heartbeat = time.monotonic()  # also while paused: waiting is not being stuck
                messages = self._poll(consumer)
                self._confirm_offsets(consumer)
                if self._handle(consumer, messages, stop):
                    self._commit(consumer)
                self._report_lag(consumer)
        finally:
            try:
                self._commit(consumer)
            finally:
                consumer.close()
                if self._dlq is not None:
                    self._dlq.flush(5)

    def _poll(self, consumer: Consumer) -> list[Message]:
        """The next messages; while paused, at most one (from a partition a rebalance assigned
        meanwhile) after a poll of at most 0.5 s, and the partitions resume when the wait is over."""
        if self._resume_at is not None:
            remaining = self._resume_at - time.monotonic()
            if remaining > 0:
                # Paused partitions give nothing, but the poll tells the group this member is alive.
                msg = consumer.poll(min(remaining, 0.5))
                return [msg] if msg is not None else []
            consumer.resume(consumer.assignment())
            self._resume_at = None
        return self._next_batch(consumer)

    def _pause(self, consumer: Consumer, unprocessed: list[Message], delay: float) -> None:
        """Stop fetching until ``delay`` seconds have passed, and rewind each partition to its
        first message not done (the failed one first), so nothing is skipped or reordered."""
        consumer.pause(consumer.assignment())
        first: dict[tuple[str, int], int] = {}
        for msg in unprocessed:
            if msg.error() is None:
                first.setdefault((msg.topic() or "", msg.partition() or 0), msg.offset() or 0)
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        self._resume_at = time.monotonic() + delay

    def _next_batch(self, consumer: Consumer) -> list[Message]:
        """Up to ``batch_size`` messages, returned as soon as the first is there.

        ``consume(n, timeout)`` waits out its whole timeout unless ``n`` messages arrive, which
        added up to 0.5 s per hop to every event at low traffic (``make bench`` figure 2). So:
        block in ``poll`` for the first, then take whatever else is already fetched, without
        waiting.
        """
        first = consumer.poll(0.5)
        if first is None:
            return []
        if self.batch_size <= 1:
            return [first]
        return [first, *consumer.consume(num_messages=self.batch_size - 1, timeout=0)]

    def _handle(self, consumer: Consumer, polled: list[Message], stop: threading.Event) -> bool:
        """Apply, skip or dead-letter the polled messages in order - runs of them in one
        transaction each, the rest one by one - until one has to wait (then the partitions are
        paused) or ``stop`` is set (the rest is not stored: it comes again after the restart).
        True when some offset was stored."""
        messages = []
        for msg in polled:
            err = msg.error()
            if err is None:
                messages.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer %s: %s", self.name, err)
        index, stored = 0, False
        while index < len(messages) and not stop.is_set():
            run = self._decoded_run(messages, index)
            if len(run) > 1 and self._apply_batch(run):
                for msg, _envelope in run:
                    consumer.store_offsets(message=msg)
                index, stored = index + len(run), True
                continue
            # One by one: the run whose transaction failed, or a message that has to go alone.
            alone: list[tuple[Message, Envelope | None]] = [(messages[index], None)]
            for msg, envelope in run or alone:
                if stop.is_set():
                    return stored
                delay = self._process(msg, envelope)
                if delay is not None:
                    self._pause(consumer, messages[index:], delay)
                    return stored
                consumer.store_offsets(message=msg)
                index, stored = index + 1, True
        return stored

    def _decoded_run(self, messages: list[Message], start: int) -> list[tuple[Message, Envelope]]:
        """The messages from ``start`` on that can go in one transaction, with their envelopes:
        up to the first that cannot be decoded. None while an event is being retried (it and
        what comes with it go one by one), or when batches are off."""
        if not self.batch_transactions or self._failures:
            return []
        run = []
        for msg in messages[start:]:
            try:
                run.append((msg, decode(msg.value() or b"")))
            except EnvelopeDecodeError:
                break  # it goes alone, to the DLQ
        return run

    # -- a batch in one transaction ---------------------------------------------------------------

    def _apply_batch(self, run: list[tuple[Message, Envelope]]) -> bool:
        """Apply ``run`` in one transaction with its inbox rows and each partition's next offset;
        False (nothing of it written) if anything failed, for the messages to go one by one."""
        last: dict[tuple[str, int], Message] = {}
        for msg, _envelope in run:
            last[(msg.topic() or "", msg.partition() or 0)] = msg
        applied: set[int] = set()  # positions in ``run``
        try:
            with self.database.transaction() as session:
                # Offsets first, in one order: their row locks make a concurrent delivery of the
                # same partition (a rebalance) wait for this commit, then find the inbox rows.
                for key in sorted(last):
                    self._write_offset(session, last[key])
                wanted = {e.event_id for _m, e in run if self._wants(e)}
                seen = set(session.execute(_SEEN, {"consumer": self.name, "event_ids": list(wanted)}).scalars()) \
                    if wanted else set()
                rows = []
                for position, (msg, envelope) in enumerate(run):
                    if envelope.event_id in seen or envelope.event_id not in wanted:
                        continue
                    seen.add(envelope.event_id)  # the same event twice in the batch: once
                    token = correlation.set(envelope.correlation_id or correlation.new_id())
                    try:
                        self.handler(session, envelope)
                    finally:
                        correlation.reset(token)
                    applied.add(position)
                    rows.append({"consumer": self.name, "event_id": envelope.event_id, "topic": msg.topic() or "",
                                 "processed_at": utcnow()})
                if rows:
                    self._finish(session)
                    # With RETURNING, SQLAlchemy sends the rows as one multi-row INSERT from a statement
                    # compiled once ("insertmanyvalues"); ``.values(rows)`` would compile 200 rows
                    # afresh for every batch (about 40 ms of CPU).
                    session.execute(INBOX.insert().returning(INBOX.c.event_id), rows)
        except Exception as exc:  # noqa: BLE001 - every failure is the one-by-one path's to handle
            log.info("consumer %s: a batch of %d failed, applying it one by one: %s: %s",
                     self.name, len(run), type(exc).__name__, exc)
            return False
        for position, (msg, envelope) in enumerate(run):
            done = position in applied
            outcome = "applied" if done else "duplicate" if self._wants(envelope) else "ignored"
            metrics.EVENTS_CONSUMED.labels(self.service, self.name, msg.topic() or "", outcome).inc()
            if done:
                self.applied += 1
                self._after_apply(envelope)
        return True

    # -- one message ----------------------------------------------------------------------------

    def _process(self, msg: Message, envelope: Envelope | None = None) -> float | None:
        """Apply, skip as a duplicate, or dead-letter one message (``envelope``: its decoded
        value, when known): None once it is done, else the seconds to wait before its next
        attempt (its partitions paused meanwhile)."""
        key = (msg.topic() or "", msg.partition() or 0)
        failure = self._failures.pop(key, None)
        if failure is None or failure.offset != msg.offset():
            failure = _Failure(msg.offset() or 0)
        try:
            delay = None if failure.dead_lettered else self._attempt(msg, failure, envelope)
            if failure.dead_lettered:
                self._store_offset(msg)  # the DLQ has it: a restart must not dead-letter it again
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            delay = self._wait_for_database(msg, failure, exc, f"message {key[0]}/{key[1]}@{failure.offset}")
        if delay is not None:
            self._failures[key] = failure
        return delay

    def _attempt(self, msg: Message, failure: _Failure, envelope: Envelope | None) -> float | None:
        """One attempt at the message; None when applied, a duplicate or dead-lettered
        (``failure.dead_lettered``), else the seconds until the next attempt."""
        topic = msg.topic() or ""
        if envelope is None:
            try:
                envelope = decode(msg.value() or b"")
            except EnvelopeDecodeError as exc:
                self._dead_letter(msg, exc, attempts=1)
                failure.dead_lettered = True
                return None
        token = correlation.set(envelope.correlation_id or correlation.new_id())
        try:
            outcome = self._apply_once(envelope, msg)
        except Exception as exc:  # noqa: BLE001 - any handler error is retried, then dead-lettered
            if database_unavailable(exc):
                return self._wait_for_database(msg, failure, exc, f"event {envelope.event_id}")
            failure.attempts += 1
            if failure.attempts >= self.max_attempts:
                log.error("event %s failed %d times; sending to DLQ: %s", envelope.event_id, failure.attempts, exc)
                self._dead_letter(msg, exc, attempts=failure.attempts)
                failure.dead_lettered = True
                return None
            metrics.EVENT_RETRIES.labels(self.service, self.name, topic).inc()
            delay = self.backoff * (2 ** (failure.attempts - 1))
            log.warning("event %s failed (attempt %d of %d), retrying in %.2f s: %s",
                        envelope.event_id, failure.attempts, self.max_attempts, delay, exc)
            return delay
        finally:
            correlation.reset(token)
        metrics.EVENTS_CONSUMED.labels(self.service, self.name, topic, outcome).inc()
        if outcome == "applied":
            self.applied += 1
            self._after_apply(envelope)
        return None

    def _wait_for_database(self, msg: Message, failure: _Failure, exc: BaseException, what: str) -> float:
        """Not the event's fault: wait for the database however long it takes (a restart, a
        failover), without using up the event's attempts."""
        failure.outages += 1
        metrics.EVENT_RETRIES.labels(self.service, self.name, msg.topic() or "").inc()
        delay = min(self.backoff * (2 ** min(failure.outages - 1, 8)), 5.0)
        log.warning("%s: the database is unavailable, retrying in %.2f s: %s", what, delay, exc)
        return delay

    def _wants(self, envelope: Envelope) -> bool:
        return self.event_types is None or envelope.event_type in self.event_types

    def _apply_once(self, envelope: Envelope, msg: Message) -> str:
        """Apply the event in one transaction with its inbox row and the partition's next
        offset: ``applied``, ``duplicate`` (done before) or ``ignored`` (a type the handler
        does not act on: only the offset is written)."""
        topic = msg.topic() or ""
        try:
            with self.database.transaction() as session:
                self._write_offset(session, msg)
                if not self._wants(envelope):
                    return "ignored"
                if self._seen(session, envelope.event_id):
                    return "duplicate"
                self.handler(session, envelope)
                self._finish(session)
                session.execute(INBOX.insert(), {"consumer": self.name, "event_id": envelope.event_id, "topic": topic,
                                                 "processed_at": utcnow()})
            return "applied"
        except IntegrityError:
            # A concurrent delivery of the same event (e.g. during a rebalance) won the
            # inbox row: if it is there now, this one is a duplicate; otherwise re-raise.
            with self.database.transaction() as session:
                if self._seen(session, envelope.event_id):
                    return "duplicate"
            raise

    def _finish(self, session: Session) -> None:
        """The handler's end of a transaction's events (a handler that batches its writes)."""
        finish = getattr(self.handler, "finish", None)
        if finish is not None:
            finish(session)

    def _after_apply(self, envelope: Envelope) -> None:
        """Called once ``envelope``'s effect committed (``self.applied`` counts it), before its
        offset is stored and committed to Kafka (after the whole batch's commit, when it was
        applied in one)."""

    # -- offsets kept in the database ------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each assigned partition where the database says (0 when it knows nothing)."""
        with self.database.transaction() as session:
            stored = {
                (row.topic, row.partition): row.next_offset
                for row in session.execute(select(OFFSETS).where(OFFSETS.c.consumer == self.name))
            }
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        self._resume_at = None  # the partitions start afresh, unpaused
        self._to_confirm = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in partitions
                            if (tp.topic, tp.partition) in stored]

    def _confirm_offsets(self, consumer: Consumer) -> None:
        """Commit the database's offsets of the partitions just assigned to Kafka. A crash after
        a batch's database commit and before its Kafka commit can leave a partition done in the
        database but not in Kafka, and with no message left to commit after, its group lag
        (monitoring, catch-up checks) would stay up until the next event."""
        if not self._to_confirm:
            return
        offsets, self._to_confirm = self._to_confirm, []
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - Kafka's offsets only inform (lag)
            log.warning("consumer %s: could not commit the database's offsets to Kafka: %s", self.name, exc)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A rebalance takes these partitions away (to this member again, or to another): their
        waits are over; whoever gets them starts at the database's offsets."""
        for tp in partitions:
            self._failures.pop((tp.topic, tp.partition), None)
        self._resume_at = None
        self._to_confirm = []

    def _write_offset(self, session: Session, msg: Message) -> None:
        next_offset = (msg.offset() or 0) + 1
        result: Any = session.execute(_WRITE_OFFSET, {"at_consumer": self.name, "at_topic": msg.topic(),
                                                      "at_partition": msg.partition(), "at_next_offset": next_offset})
        if result.rowcount == 0:
            session.execute(OFFSETS.insert(), {"consumer": self.name, "topic": msg.topic(),
                                               "partition": msg.partition(), "next_offset": next_offset})

    def _store_offset(self, msg: Message) -> None:
        """Record a dead-lettered message as done, so a restart does not dead-letter it again."""
        with self.database.transaction() as session:
            self._write_offset(session, msg)

    def _seen(self, session: Session, event_id: str) -> bool:
        """True when this consumer's inbox already has ``event_id``."""
        return session.execute(_SEEN, {"consumer": self.name, "event_ids": [event_id]}).first() is not None

    def _dead_letter(self, msg: Message, exc: BaseException, attempts: int) -> None:
        topic = msg.topic() or ""
        if self._dlq is None:
            self._dlq = self.dlq_producer_factory()
        original: Any = msg.headers() or []  # librdkafka's stubs type this loosely
        headers: list[tuple[str, str | bytes | None]] = [(str(k), v) for k, v in original]
        headers += [
            ("dlq.error", f"{type(exc).__name__}: {exc}"[:2000].encode()),
            ("dlq.stacktrace", "".join(traceback.format_exception(exc))[-4000:].encode()),
            ("dlq.origin.topic", topic.encode()),
            ("dlq.origin.partition", str(msg.partition()).encode()),
            ("dlq.origin.offset", str(msg.offset()).encode()),
            ("dlq.consumer", self.name.encode()),
            ("dlq.attempts", str(attempts).encode()),
            ("dlq.service", self.service.encode()),
        ]
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        # The offset is committed only after the DLQ has the message: nothing is lost.
        while True:
            self._dlq.produce(dlq_name(topic), key=msg.key(), value=msg.value(), headers=headers,
                              on_delivery=on_delivery)
            self._dlq.flush(30)
            if not errors:
                break
            log.error("could not write to %s (%s); retrying", dlq_name(topic), errors[-1])
            errors.clear()
            time.sleep(1)
        metrics.DLQ_MESSAGES.labels(self.service, self.name, topic).inc()
        metrics.EVENTS_CONSUMED.labels(self.service, self.name, topic, "dead_lettered").inc()

    # -- offsets and lag ------------------------------------------------------------------------

    def _commit(self, consumer: Consumer) -> None:
        try:
            consumer.commit(asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - "no offset stored" is normal; a retry comes next batch
            if "NO_OFFSET" not in str(exc):
                log.warning("offset commit failed (will retry): %s", exc)

    def _report_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5.0:
            return
        self._last_lag = now
        try:
            assignment = consumer.assignment()
            if not assignment:
                return
            positions = consumer.position(assignment)
            for tp in positions:
                # The high watermark every fetch response brings (librdkafka keeps it): asking the
                # broker instead (cached=False) took a round trip per partition, every 5 s, in the
                # thread that applies the events - a stall of up to a few hundred ms on a busy broker
                # (make bench figure 7: 4 of 100 reads waiting 180-290 ms for linking's consumer).
                _low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
                if high < 0:
                    continue  # not fetched yet
                lag = max(0, high - tp.offset) if tp.offset >= 0 else high
                metrics.CONSUMER_LAG.labels(self.service, self.name, tp.topic, str(tp.partition)).set(lag)
        except Exception as exc:  # noqa: BLE001 - lag is informational
            log.debug("lag report failed: %s", exc)
