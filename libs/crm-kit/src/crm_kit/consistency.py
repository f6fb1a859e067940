"""Read-your-writes inside one service: where its outbox stands on Kafka, and whether its
read models have caught up with the Kafka positions the gateway asks for.

The token a client carries is the gateway's business (``crm_gateway.consistency``); a service
only answers two questions, both from its own database:

* **Producer side** - "are my outbox rows up to id P on Kafka, and at which offsets?"
  (``outbox_position``). The relay writes, in the transaction that marks rows sent, the next
  offset of every partition it delivered to (``relay_positions``). When no unsent row with an
  id <= P is left, those offsets cover every event up to P.
* **Consumer side** - "have my read models applied every message before these offsets?"
  (``ReadModels.wait_for``). Consumers write each partition's next offset with their effects
  (``consumer_offsets``), so the answer is one small query, true across restarts, rebalances
  and a rebuilt read model (which starts from offset 0, so it is behind until it has replayed).

The gateway sends what it needs in ``Crm-Require-*`` headers (never forwarded from clients);
the kit's view wrapper waits before the handler runs, so a request that cannot be served
fresh writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from crm_kit import metrics
from crm_kit.db import Database, new_metadata

# Gateway -> service: the offsets to wait for, how (strict: 503 when behind; lenient: answer
# anyway and say so), and how long (seconds, what is left of the request's budget).
REQUIRE_OFFSETS = "Crm-Require-Offsets"
REQUIRE_MODE = "Crm-Require-Mode"
REQUIRE_WAIT = "Crm-Require-Wait"
# Service -> gateway: the newest outbox id this request wrote; the answer is not as fresh as asked.
WRITTEN = "Crm-Written"
STALE = "Crm-Stale"
# Service -> gateway: "none" when the answer consulted none of the service's read models (a route
# of its own data alone, or a refusal of the request before any copy was read), so a refusal in it
# is final: asking again after the latest writes would get the same.
COPIES = "Crm-Copies"

STRICT, LENIENT = "strict", "lenient"
RETRY_AFTER_SECONDS = 1
_POLL_FIRST, _POLL_MAX = 0.002, 0.01  # small queries on small tables: poll often

_TABLES = new_metadata().tables
OUTBOX = _TABLES["outbox"]
OFFSETS = _TABLES["consumer_offsets"]
RELAY_POSITIONS = _TABLES["relay_positions"]
# Asked on every request that needs fresh copies or positions: built once, with parameters.
_OFFSETS_OF = select(OFFSETS).where(OFFSETS.c.topic.in_(bindparam("topics", expanding=True)))
_NEWEST = select(func.max(OUTBOX.c.id))
_PENDING = select(OUTBOX.c.id).where(OUTBOX.c.sent_at.is_(None), OUTBOX.c.id <= bindparam("target")).limit(1)
_POSITIONS = select(RELAY_POSITIONS)

# topic -> {partition: next offset}
Offsets = dict[str, dict[int, int]]

_written: ContextVar[int | None] = ContextVar("crm_outbox_written", default=None)


class ConsistencyError(Exception):
    """A read model or the outbox is not as fresh as asked within the wait."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequirementError(ValueError):
    """A ``Crm-Require-*`` header that cannot be read."""


# -- what this request wrote ------------------------------------------------------------------

def start_request() -> None:
    """Forget the outbox id of an earlier request on this thread."""
    _written.set(None)


def note_written(outbox_id: int) -> None:
    """Remember that the current request wrote outbox row ``outbox_id`` (the newest counts)."""
    current = _written.get()
    if current is None or outbox_id > current:
        _written.set(outbox_id)


def written() -> int | None:
    """The newest outbox id the current request wrote, if any."""
    return _written.get()


# -- offsets ----------------------------------------------------------------------------------

def merge_offsets(*many: Mapping[str, Mapping[int, int]]) -> Offsets:
    """The union of several offset maps, the higher offset winning per partition."""
    merged: Offsets = {}
    for offsets in many:
        for topic, partitions in offsets.items():
            into = merged.setdefault(topic, {})
            for partition, offset in partitions.items():
                if offset > into.get(partition, -1):
                    into[partition] = offset
    return merged


def encode_offsets(offsets: Mapping[str, Mapping[int, int]]) -> str:
    return json.dumps({t: {str(p): o for p, o in ps.items()} for t, ps in offsets.items()}, separators=(",", ":"))


def decode_offsets(value: str) -> Offsets:
    """Parse ``encode_offsets``' text; ``InvalidRequirementError`` for anything else."""
    try:
        raw = json.loads(value)
        offsets = {str(t): {int(p): int(o) for p, o in ps.items()} for t, ps in raw.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidRequirementError(f"unreadable {REQUIRE_OFFSETS}: {exc}") from None
    return offsets


@dataclass(frozen=True)
class Requirement:
    """What the gateway asked of one request."""

    offsets: Offsets
    mode: str
    wait: float

    @classmethod
    def from_headers(cls, headers: Any, default_wait: float) -> Requirement | None:
        """The requirement in ``headers`` (a mapping of header names), None when there is none."""
        value = headers.get(REQUIRE_OFFSETS)
        if not value:
            return None
        mode = headers.get(REQUIRE_MODE) or STRICT
        if mode not in (STRICT, LENIENT):
            raise InvalidRequirementError(f"{REQUIRE_MODE} must be {STRICT} or {LENIENT}")
        return cls(decode_offsets(value), mode, wait_from(headers, default_wait))


def wait_from(headers: Any, default_wait: float) -> float:
    """The wait the gateway left this request (``Crm-Require-Wait``), never over ``default_wait``."""
    try:
        return min(max(float(headers.get(REQUIRE_WAIT) or default_wait), 0.0), default_wait)
    except ValueError:
        raise InvalidRequirementError(f"{REQUIRE_WAIT} must be a number of seconds") from None


def _poll(deadline: float, attempt: int) -> bool:
    """Sleep a little (growing) unless the deadline passed; False when it has."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    time.sleep(min(_POLL_FIRST * (2 ** attempt), _POLL_MAX, remaining))
    return True


# -- consumer side ----------------------------------------------------------------------------

class ReadModels:
    """This service's read models: which of its consumers read each topic, and how far they are.

    ``readers`` maps a topic to the consumer names (as in ``consumer_offsets``) that read it;
    a requirement on a topic no consumer here reads is met by definition.
    """

    def __init__(self, service: str, database: Database, readers: Mapping[str, list[str]], wait: float) -> None:
        self.service = service
        self.database = database
        self.readers = {topic: list(names) for topic, names in readers.items() if names}
        self.wait = wait  # the longest wait (CRM_CONSISTENCY_WAIT)

    def behind(self, session: Session, required: Mapping[str, Mapping[int, int]]) -> list[str]:
        """The ``consumer topic[partition]`` pairs not yet at the required offsets."""
        topics = [t for t in required if t in self.readers]
        if not topics:
            return []
        stored = {(row.consumer, row.topic, row.partition): row.next_offset
                  for row in session.execute(_OFFSETS_OF, {"topics": topics})}
        late = []
        for topic in topics:
            for partition, offset in required[topic].items():
                for consumer in self.readers[topic]:
                    if stored.get((consumer, topic, partition), 0) < offset:
                        late.append(f"{consumer} {topic}[{partition}]")
        return late

    def met_in(self, session: Session, requirement: Requirement) -> bool:
        """One look in ``session`` (the request's own transaction, before the handler reads
        anything): True, counted as fresh, when every read model has applied the required offsets."""
        started = time.monotonic()
        if self.behind(session, requirement.offsets):
            return False
        _observe(self.service, "read_models", "fresh", started)
        return True

    def wait_for(self, requirement: Requirement) -> bool:
        """Wait until every read model has applied the required offsets; True when fresh.

        Strict requirements raise ``ConsistencyError`` once the wait is over; lenient ones
        return False then (the caller answers from what it has, and says so).
        """
        started = time.monotonic()
        deadline = started + requirement.wait
        attempt = 0
        while True:
            with self.database.transaction() as session:
                late = self.behind(session, requirement.offsets)
            if not late:
                _observe(self.service, "read_models", "fresh" if attempt == 0 else "waited", started)
                return True
            if not _poll(deadline, attempt):
                break
            attempt += 1
        _observe(self.service, "read_models", "timeout" if requirement.mode == STRICT else "stale", started)
        if requirement.mode == STRICT:
            raise ConsistencyError(
                f"The {self.service} service's copies are behind your last change ({', '.join(late[:3])}); "
                "retry shortly.")
        return False


# -- producer side ----------------------------------------------------------------------------

def relay_positions(session: Session) -> Offsets:
    """The next offset of every partition the relay has delivered to (from ``relay_positions``)."""
    positions: Offsets = {}
    for row in session.execute(_POSITIONS):
        positions.setdefault(row.topic, {})[row.partition] = row.next_offset
    return positions


def advance_relay_positions(session: Session, delivered: Mapping[tuple[str, int], int]) -> None:
    """Record ``(topic, partition) -> next offset`` in the transaction that marks rows sent."""
    for (topic, partition), next_offset in delivered.items():
        key = (RELAY_POSITIONS.c.topic == topic, RELAY_POSITIONS.c.partition == partition)
        result: Any = session.execute(update(RELAY_POSITIONS).where(*key, RELAY_POSITIONS.c.next_offset < next_offset)
                                      .values(next_offset=next_offset))
        if result.rowcount == 0 and session.execute(select(RELAY_POSITIONS.c.next_offset).where(*key)).first() is None:
            session.execute(RELAY_POSITIONS.insert().values(topic=topic, partition=partition, next_offset=next_offset))


def outbox_position(service: str, database: Database, upto: int | None, wait: float) -> tuple[int, Offsets]:
    """``(outbox id, offsets)``: once every outbox row up to ``upto`` (None: every row committed
    now) is on Kafka, the relay's offsets, which cover them. ``ConsistencyError`` after ``wait``.

    ``upto`` is capped at the newest row: a client's own writes are all committed, so a larger
    number is not one of them (a forged token, or a database restored from a backup).
    """
    started = time.monotonic()
    deadline = started + wait
    attempt = 0
    while True:
        with database.transaction() as session:
            newest = session.execute(_NEWEST).scalar() or 0
            target = newest if upto is None else min(upto, newest)
            pending = session.execute(_PENDING, {"target": target}).first()
            if pending is None:
                positions = relay_positions(session)
        if pending is None:
            _observe(service, "outbox", "fresh" if attempt == 0 else "waited", started)
            return target, positions
        if not _poll(deadline, attempt):
            break
        attempt += 1
    _observe(service, "outbox", "timeout", started)
    raise ConsistencyError(f"The {service} service's events are not on Kafka yet (outbox row {pending[0]}); "
                           "retry shortly.")


def _observe(service: str, stage: str, result: str, started: float) -> None:
    metrics.CONSISTENCY_CHECKS.labels(service, stage, result).inc()
    if result != "fresh":
        metrics.CONSISTENCY_WAIT.labels(service, stage).observe(time.monotonic() - started)
