"""After a chaos run: compare what the clients were told with what each service's own database
and the broker hold. Every check counts what is missing (lost) and what is there more often
than it should be (duplicated); nothing is read through the services' APIs.

- events: every outbox row is sent and on its topic; every consumer's inbox holds every event
  of the topics it reads (so no event was skipped, dead-lettered or lost on the way);
- records: each record a client created exists once, with exactly the user moves its client
  made, the trigger effects its source calls for, and the version that all of them add up to;
- triggers: one execution per trigger and qualifying event (from the records' own events),
  all applied, each effect present once (history rows, group memberships, group events);
- read models: linking's and triggers' copies of every record and the catalogue's stage usage
  equal the records; every service's catalogue copy equals the catalogue;
- webhooks (``crm_devstack.chaos.webhooks``, after this): every public event of the outboxes
  reached the run's receiver, signed, in order per record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from sqlalchemy import Engine, MetaData, Table, select

from crm_devstack.chaos.observe import Handled, Subscriptions
from crm_devstack.chaos.workload import KINDS, KindSetup, RecordLedger
from crm_events.envelope import decode, record_state
from crm_events.topics import all_topics, get
from crm_kit.db import new_metadata

OUTBOX = new_metadata().tables["outbox"]
INBOX = new_metadata().tables["inbox"]
EXAMPLES = 5


@dataclass
class Check:
    """One comparison: how many items it looked at, how many were lost or duplicated."""

    name: str
    checked: int = 0
    lost: int = 0
    duplicated: int = 0
    examples: list[str] = field(default_factory=list)

    def missing(self, n: int, example: str) -> None:
        if n > 0:
            self.lost += n
            self._example(f"missing {n}: {example}")

    def surplus(self, n: int, example: str) -> None:
        if n > 0:
            self.duplicated += n
            self._example(f"extra {n}: {example}")

    def compare(self, expected: int, actual: int, example: str) -> None:
        self.checked += 1
        self.missing(expected - actual, example)
        self.surplus(actual - expected, example)

    def _example(self, text: str) -> None:
        if len(self.examples) < EXAMPLES:
            self.examples.append(text)


@dataclass
class Verification:
    checks: list[Check]
    republished: int  # messages on Kafka whose event_id was there already (the relay's redeliveries)
    dead_lettered: int  # messages in any <topic>.dlq
    counts: dict[str, int]

    @property
    def lost(self) -> int:
        return sum(c.lost for c in self.checks)

    @property
    def duplicated(self) -> int:
        return sum(c.duplicated for c in self.checks)


def _reflect(engine: Engine, *names: str) -> dict[str, Table]:
    metadata = MetaData()
    metadata.reflect(bind=engine, only=list(names))
    return {name: metadata.tables[name] for name in names}


def _rows(engine: Engine, statement: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(statement).all())


def scan_topics(bootstrap: str, topics: Iterable[str]) -> dict[str, Counter[str]]:
    """Every message of ``topics`` from the start: how often each event_id (header) occurs."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-verify", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    seen: dict[str, Counter[str]] = {}
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment = []
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            seen[topic] = Counter()
            for partition in (metadata.topics[topic].partitions if topic in metadata.topics else {}):
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                                            cached=False)
                if high > 0:
                    ends[(topic, partition)] = high
                    assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        if not assignment:
            return seen
        consumer.assign(assignment)
        remaining = dict(ends)
        idle = 0
        while remaining and idle < 30:
            messages = consumer.consume(num_messages=1000, timeout=1.0)
            idle = 0 if messages else idle + 1
            for msg in messages:
                if msg.error() is not None:
                    continue
                key = (msg.topic() or "", msg.partition() or 0)
                headers = dict(msg.headers() or [])
                event_id = headers.get("event_id")
                seen[key[0]][event_id.decode() if isinstance(event_id, bytes) else f"offset {msg.offset()}"] += 1
                if (msg.offset() or 0) + 1 >= remaining.get(key, 0):
                    remaining.pop(key, None)
        if remaining:
            raise RuntimeError(f"could not read these partitions to their end: {sorted(remaining)}")
        return seen
    finally:
        consumer.close()


class Verifier:
    def __init__(self, engines: Mapping[str, Engine], bootstrap: str, groups: Subscriptions, handled: Handled,
                 setups: Mapping[str, KindSetup], records: list[RecordLedger], tag: str) -> None:
        self.engines = engines
        self.bootstrap = bootstrap
        self.groups = groups
        self.handled = handled
        self.setups = setups
        self.records = records
        self.tag = tag
        self.checks: list[Check] = []
        self.counts: dict[str, int] = {}
        self.outboxes: dict[str, list[Any]] = {}  # service -> its outbox rows (``run`` reads them)
        self.envelopes: dict[str, Any] = {}  # event_id -> the decoded envelope

    def check(self, name: str) -> Check:
        found = Check(name)
        self.checks.append(found)
        return found

    def run(self) -> Verification:
        outboxes = {service: _rows(engine, select(OUTBOX.c.id, OUTBOX.c.event_id, OUTBOX.c.topic, OUTBOX.c.sent_at,
                                                  OUTBOX.c.created_at, OUTBOX.c.payload).order_by(OUTBOX.c.id))
                    for service, engine in self.engines.items()}
        envelopes = {row.event_id: decode(row.payload) for rows in outboxes.values() for row in rows}
        self.outboxes, self.envelopes = outboxes, envelopes  # the webhook check reads them too
        republished, dead_lettered = self.events(outboxes, envelopes)
        events = {kind: [envelopes[row.event_id] for row in outboxes[plural] if row.topic == f"crm.{plural}.v1"]
                  for kind, plural in KINDS.items()}
        for kind in KINDS:
            self.records_and_triggers(kind, events[kind])
        self.read_models()
        self.catalogue_copies()
        self.timeline()
        return Verification(self.checks, republished, dead_lettered, self.counts)

    # -- events ----------------------------------------------------------------------------------

    def events(self, outboxes: Mapping[str, list[Any]], envelopes: Mapping[str, Any]) -> tuple[int, int]:
        by_topic: dict[str, set[str]] = defaultdict(set)
        unsent = self.check("outbox rows published")
        for service, rows in outboxes.items():
            for row in rows:
                by_topic[row.topic].add(row.event_id)
                unsent.checked += 1
                if row.sent_at is None:
                    unsent.missing(1, f"{service} outbox row {row.event_id} ({row.topic}) never marked sent")
        self.counts["events"] = sum(len(ids) for ids in by_topic.values())
        topics = [t.name for t in all_topics()]
        on_kafka = scan_topics(self.bootstrap, topics)
        published = self.check("events on Kafka")
        for topic, ids in sorted(by_topic.items()):
            for event_id in ids:
                published.checked += 1
                if not on_kafka.get(topic, Counter()).get(event_id):
                    published.missing(1, f"event {event_id} of {topic} is not on the topic")
        republished = sum(n - 1 for t in topics if not get(t).is_dlq for n in on_kafka[t].values() if n > 1)
        dead_lettered = sum(sum(on_kafka[t].values()) for t in topics if get(t).is_dlq)
        consumed = self.check("events in each consumer's inbox")
        for service, consumers in self.groups.items():
            inbox = _rows(self.engines[service], select(INBOX.c.consumer, INBOX.c.event_id))
            done: dict[str, set[str]] = defaultdict(set)
            for row in inbox:
                done[row.consumer].add(row.event_id)
            for consumer, consumer_topics in consumers.items():
                acts_on = self.handled[service].get(consumer)
                for topic in consumer_topics:
                    for event_id in by_topic.get(topic, ()):
                        if acts_on is not None and envelopes[event_id].event_type not in acts_on:
                            continue  # a type this consumer leaves alone: no inbox row
                        consumed.checked += 1
                        if event_id not in done[consumer]:
                            consumed.missing(1, f"{consumer} never applied event {event_id} of {topic}")
        return republished, dead_lettered

    # -- records and triggers --------------------------------------------------------------------

    def records_and_triggers(self, kind: str, events: list[Any]) -> None:
        setup = self.setups[kind]
        plural = setup.plural
        engine = self.engines[plural]
        tables = _reflect(engine, plural, "stage_history", "record_groups")
        rows = {r.id: r for r in _rows(engine, select(tables[plural]))}
        history: dict[str, list[Any]] = defaultdict(list)
        for h in _rows(engine, select(tables["stage_history"])):
            history[h.record_id].append(h)
        groups: dict[str, dict[str, str]] = defaultdict(dict)
        for g in _rows(engine, select(tables["record_groups"])):
            groups[g.record_id][g.group_id] = g.added_by
        mine = [r for r in self.records if r.kind == kind]
        self.counts[f"{plural} created"] = len(mine)

        created = self.check(f"{plural}: each created once")
        titles = Counter(r.title for r in rows.values() if r.title.startswith(f"chaos {self.tag} "))
        known = {r.id for r in mine}
        for record in mine:
            created.checked += 1
            if record.id not in rows:
                created.missing(1, f"{kind} {record.id} ({record.title}) was created but is not in the database")
        for title, n in titles.items():
            created.surplus(n - 1, f"{n} {plural} titled {title!r}")
        for record_id, row in rows.items():
            if record_id not in known and row.title.startswith(f"chaos {self.tag} "):
                created.surplus(1, f"{kind} {record_id} ({row.title}) exists though no client was told of it")

        added_events = Counter((env.aggregate_id, env.group_changed.group_id) for env in events
                               if env.event_type == f"{kind}.added_to_group")
        group_events = self.check(f"{plural}: one added_to_group event per trigger membership")
        expected_pairs: set[tuple[str, str]] = set()
        trigger_of = {f"trigger:{tid}": name for name, tid in setup.triggers.items()}
        user_moves = self.check(f"{plural}: user stage changes")
        trigger_moves = self.check(f"{plural}: trigger stage changes")
        memberships = self.check(f"{plural}: trigger group memberships")
        versions = self.check(f"{plural}: versions (one bump per change)")
        final = self.check(f"{plural}: final stage")
        for record in mine:
            row = rows.get(record.id)
            if row is None:
                continue
            moves = history[record.id]
            qualifies = record.watched and record.handed_off
            user_moves.compare(record.user_moves,
                               sum(1 for h in moves if h.cause == "user" and h.from_stage_id is not None),
                               f"{kind} {record.id}")
            user_moves.compare(1, sum(1 for h in moves if h.from_stage_id is None), f"{kind} {record.id} creation")
            by_trigger = Counter(trigger_of.get(h.cause, h.cause) for h in moves if h.cause.startswith("trigger:"))
            trigger_moves.compare(1 if qualifies else 0, sum(by_trigger.values()), f"{kind} {record.id}: "
                                  f"{dict(by_trigger)}")
            expected_groups = ({setup.created_group} if record.watched else set()) | (
                {setup.qualified_group} if qualifies else set())
            memberships.checked += 1
            memberships.missing(len(expected_groups - set(groups[record.id])), f"{kind} {record.id} groups")
            memberships.surplus(len(set(groups[record.id]) - expected_groups), f"{kind} {record.id} groups")
            for group_id in expected_groups:
                expected_pairs.add((record.id, group_id))
                group_events.compare(1, added_events[(record.id, group_id)], f"{kind} {record.id} added to {group_id}")
            expected_version = 1 + record.user_moves + (1 if record.watched else 0) + (2 if qualifies else 0)
            versions.compare(expected_version, row.version, f"{kind} {record.id} version")
            expected_stage = setup.stages["Q"] if qualifies else record.stage
            final.checked += 1
            if row.stage_id != expected_stage:
                final.missing(1, f"{kind} {record.id} is in {row.stage_id}, expected {expected_stage}")
        for (record_id, group_id), n in added_events.items():
            if (record_id, group_id) not in expected_pairs:
                group_events.surplus(n, f"{kind} {record_id} added to {group_id}, which no trigger should do")
        self.triggers(kind, events, history)

    def triggers(self, kind: str, events: list[Any], history: Mapping[str, list[Any]]) -> None:
        """Executions against the qualifying events in the records' own outbox, and against the
        moves in their histories."""
        setup = self.setups[kind]
        engine = self.engines["triggers"]
        executions = _rows(engine, select(_reflect(engine, "executions")["executions"]))
        fired: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        results: Counter[str] = Counter()
        for e in executions:
            if e.trigger_id in setup.triggers.values():
                fired[e.trigger_id][(e.record_id, e.event_id)] += 1
                results[e.result] += 1
        self.counts[f"{kind} trigger executions"] = sum(results.values())
        self.counts[f"{kind} trigger executions applied"] = results["applied"]
        qualifying: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for env in events:
            what = env.event_type.partition(".")[2]
            record = record_state(env)
            watched = record is not None and record.source_id == setup.watched_source
            if not watched:
                continue
            if what == "created":
                qualifying[setup.triggers["created"]].add((env.aggregate_id, env.event_id))
            elif what == "stage_changed" and env.stage_changed.to_stage_id == setup.stages["H"]:
                qualifying[setup.triggers["handoff"]].add((env.aggregate_id, env.event_id))
            elif what == "stage_changed" and env.stage_changed.to_stage_id == setup.stages["Q"]:
                qualifying[setup.triggers["qualified"]].add((env.aggregate_id, env.event_id))
        once = self.check(f"{kind} triggers: one applied execution per qualifying event")
        for name, trigger_id in setup.triggers.items():
            for pair in qualifying[trigger_id]:
                once.compare(1, fired[trigger_id][pair], f"{name} trigger on {kind} {pair[0]} for event {pair[1]}")
            for pair, n in fired[trigger_id].items():
                if pair not in qualifying[trigger_id]:
                    once.surplus(n, f"{name} trigger fired on {kind} {pair[0]} for event {pair[1]}, which does not "
                                  "qualify")
        once.missing(sum(n for result, n in results.items() if result != "applied"),
                     f"executions not applied: {dict(results)}")
        # The records' histories against the executions: one hand-off move per firing.
        per_record = Counter(record_id for record_id, _ in qualifying[setup.triggers["handoff"]])
        moved = self.check(f"{kind} triggers: hand-off moves in the history vs firings")
        for record_id, n in per_record.items():
            to_h = sum(1 for h in history.get(record_id, ()) if h.to_stage_id == setup.stages["H"])
            moved.compare(n, to_h, f"{kind} {record_id}: moves to H")

    # -- read models -----------------------------------------------------------------------------

    def read_models(self) -> None:
        sources: dict[str, Any] = {}
        group_ids: dict[str, list[str]] = defaultdict(list)
        for plural in KINDS.values():
            tables = _reflect(self.engines[plural], plural, "record_groups")
            for row in _rows(self.engines[plural], select(tables[plural])):
                sources[row.id] = row
            for g in _rows(self.engines[plural], select(tables["record_groups"])):
                group_ids[g.record_id].append(g.group_id)
        self.counts["records"] = len(sources)

        linking = self.check("linking's record views equal the records")
        views = {r.id: r for r in _rows(self.engines["linking"],
                                        select(_reflect(self.engines["linking"], "record_views")["record_views"]))}
        fields = ("title", "owner_id", "office_id", "stage_id", "stage_group_id", "company_id", "contact_id",
                  "lead_id", "version")
        for record_id, source in sources.items():
            self._same(linking, f"record {record_id}", views.get(record_id),
                       {f: getattr(source, f) for f in fields}, source.version)

        triggers = self.check("triggers' record states equal the records")
        states = {r.id: r for r in _rows(self.engines["triggers"],
                                         select(_reflect(self.engines["triggers"], "record_states")["record_states"]))}
        for record_id, source in sources.items():
            state = states.get(record_id)
            view = None if state is None else {"version": state.version, **{
                f: state.state.get(f) for f in ("stage_id", "stage_group_id", "owner_id", "office_id", "source_id")},
                "group_ids": sorted(state.state.get("group_ids") or [])}
            expected = {"version": source.version, **{f: getattr(source, f) for f in (
                "stage_id", "stage_group_id", "owner_id", "office_id", "source_id")},
                "group_ids": sorted(group_ids[record_id])}
            self._same(triggers, f"record {record_id}", view, expected, source.version)

        usage = self.check("the catalogue's stage usage equals the records")
        stage_usage = _reflect(self.engines["catalogue"], "stage_usage")["stage_usage"]
        used = {r.record_id: r for r in _rows(self.engines["catalogue"], select(stage_usage))}
        for record_id, source in sources.items():
            row = used.get(record_id)
            self._same(usage, f"record {record_id}", None if row is None else
                       {"stage_id": row.stage_id, "version": row.version},
                       {"stage_id": source.stage_id, "version": source.version}, source.version)

    def _same(self, check: Check, what: str, copy: Any, expected: Mapping[str, Any], version: int) -> None:
        check.checked += 1
        if copy is None:
            check.missing(1, f"{what}: not in the read model")
            return
        actual = dict(copy) if isinstance(copy, Mapping) else {f: getattr(copy, f) for f in expected}
        if actual == dict(expected):
            return
        if actual.get("version", version) > version:
            check.surplus(1, f"{what}: {actual} is ahead of the source {dict(expected)}")
        else:
            check.missing(1, f"{what}: {actual} differs from the source {dict(expected)}")

    def catalogue_copies(self) -> None:
        engine = self.engines["catalogue"]
        tables = _reflect(engine, "stages", "table_entries", "templates")
        entities: dict[str, dict[str, Any]] = {}
        for s in _rows(engine, select(tables["stages"])):
            entities[s.id] = {"kind": s.kind, "entity": "stage", "code": s.code, "names": s.names, "index": s.index,
                              "active": s.active, "version": s.version}
        for t in _rows(engine, select(tables["table_entries"])):
            entities[t.id] = {"kind": t.kind, "entity": t.table_name, "code": t.code, "names": t.names,
                              "index": t.index, "active": t.active, "version": t.version}
        for t in _rows(engine, select(tables["templates"])):
            entities[t.id] = {"kind": "", "entity": "template", "code": "", "names": {}, "index": 0, "active": True,
                              "version": t.version}
        self.counts["catalogue entities"] = len(entities)
        for service in ("leads", "opportunities", "linking", "triggers"):
            copy_engine = self.engines[service]
            check = self.check(f"{service}'s catalogue copy equals the catalogue")
            rows = {r.id: r for r in _rows(copy_engine, select(_reflect(copy_engine, "catalogue_view")[
                "catalogue_view"]))}
            for entity_id, expected in entities.items():
                row = rows.get(entity_id)
                view = None if row is None or row.deleted else {f: getattr(row, f) for f in expected}
                self._same(check, f"catalogue entity {entity_id}", view, expected, expected["version"])
            for entity_id, row in rows.items():
                if entity_id not in entities and not row.deleted:
                    check.checked += 1
                    check.missing(1, f"catalogue entity {entity_id} was deleted but the copy still has it")

    def timeline(self) -> None:
        engine = self.engines["linking"]
        table = _reflect(engine, "timeline")["timeline"]
        entries = Counter((r.record_kind, r.record_id, r.type, r.event_id)
                          for r in _rows(engine, select(table.c.record_kind, table.c.record_id, table.c.type,
                                                        table.c.event_id)) if r.event_id)
        check = self.check("linking's timeline: one entry per event")
        for key, n in entries.items():
            check.compare(1, n, f"{key[0]} {key[1]} {key[2]} for event {key[3]}")
