"""Watching a chaos run: redeliveries the consumers dropped, and "has everything caught up?".

Every process's counters start at zero when it starts (and a SIGKILLed worker takes its
counts with it), so ``RedeliveryWatch`` scrapes each worker's ``/metrics`` every second and
keeps the last value seen per worker process: the sum is a lower bound of what the consumers
dropped as duplicates.

``caught_up`` asks the databases and the broker, not the processes: nothing is left unsent in
any outbox, and every consumer's offsets (kept in its service's database with its effects) are
at the end of every partition it reads.

Which consumer groups there are and which topics each reads is not written down here: it comes
from the services' own worker plans (``subscriptions``), the same declaration their workers run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from crm_devstack.platform import Platform
from crm_devstack.stack import SERVICES
from crm_kit.db import new_metadata
from crm_kit.service import find_service
from crm_kit.settings import Settings, load_settings

OUTBOX = new_metadata().tables["outbox"]
OFFSETS = new_metadata().tables["consumer_offsets"]

Subscriptions = dict[str, dict[str, tuple[str, ...]]]
"""Service -> its consumer groups (as named in ``consumer_offsets`` and ``inbox``) -> their topics."""


def consumer_groups(service: str, settings: Settings) -> dict[str, tuple[str, ...]]:
    """``service``'s consumer groups and the topics each reads, from its worker plan.

    The kit keeps the plan's readers (topic -> group names) as the app's read models
    (``crm_kafka.service``); building the app connects to nothing.
    """
    readers = find_service(service).build_app(settings).extensions["crm_read_models"].readers
    groups: dict[str, list[str]] = {}
    for topic, names in readers.items():
        for name in names:
            groups.setdefault(name, []).append(topic)
    return {name: tuple(sorted(topics)) for name, topics in sorted(groups.items())}


def subscriptions(platform: Platform) -> Subscriptions:
    """Every domain service's consumer groups, from the worker plans with the platform's settings."""
    return {service: consumer_groups(service, load_settings("domain", platform.env_for(service, "worker")))
            for service in SERVICES}


Handled = dict[str, dict[str, frozenset[str] | None]]
"""Service -> its consumer groups -> the event types each acts on (None: every type; the rest get no inbox row)."""


def event_types(service: str, settings: Settings) -> dict[str, frozenset[str] | None]:
    """``service``'s consumer groups and the event types each acts on, from its worker plan."""
    plan = find_service(service).worker_plan
    if plan is None:
        raise ValueError(f"{service} has no worker plan")
    return plan(settings).event_types()


def handled_types(platform: Platform) -> Handled:
    """What each domain service's consumers act on, from the worker plans with the platform's settings."""
    return {service: event_types(service, load_settings("domain", platform.env_for(service, "worker")))
            for service in SERVICES}


class RedeliveryWatch:
    """Scrapes the workers' ``crm_events_consumed_total{result="duplicate"}`` in a thread."""

    def __init__(self, platform: Platform, interval: float = 1.0) -> None:
        self.platform = platform
        self.interval = interval
        self._last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-redeliveries", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.scrape()
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def duplicates_dropped(self) -> int:
        return int(sum(self._last.values()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scrape()

    def scrape(self) -> None:
        for service in SERVICES:
            pid = self.platform.processes.pid(f"{service}-worker")
            if pid is None:
                continue
            try:
                text = requests.get(f"{self.platform.worker_url(service)}/metrics", timeout=2).text
            except requests.RequestException:
                continue
            if self.platform.processes.pid(f"{service}-worker") != pid:
                continue  # restarted meanwhile: the numbers may be the new process's
            value = 0.0
            for family in text_string_to_metric_families(text):
                if family.name == "crm_events_consumed":
                    value += sum(s.value for s in family.samples
                                 if s.name.endswith("_total") and s.labels.get("result") == "duplicate")
            key = (service, pid)
            self._last[key] = max(self._last.get(key, 0.0), value)


@dataclass
class Backlog:
    """What is not done yet: unsent outbox rows per service, lag per consumer."""

    unsent: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.unsent.values()) and not any(self.lag.values())

    def __str__(self) -> str:
        unsent = {k: v for k, v in self.unsent.items() if v}
        lag = {k: v for k, v in self.lag.items() if v}
        return f"unsent outbox rows {unsent or 'none'}, consumer lag {lag or 'none'}"


def high_watermarks(bootstrap: str, topics: set[str]) -> dict[tuple[str, int], int]:
    """The end offset of every partition of ``topics``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-watermarks",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        for topic in sorted(topics):
            for partition in (metadata.topics[topic].partitions if topic in metadata.topics else {}):
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10,
                                                            cached=False)
                ends[(topic, partition)] = high
        return ends
    finally:
        consumer.close()


def backlog(engines: Mapping[str, Engine], bootstrap: str, groups: Subscriptions) -> Backlog:
    """Unsent outbox rows and consumer lag, from the databases and the broker."""
    result = Backlog()
    topics = {t for consumers in groups.values() for ts in consumers.values() for t in ts}
    ends = high_watermarks(bootstrap, topics)
    for service, engine in engines.items():
        with engine.connect() as conn:
            result.unsent[service] = conn.execute(
                select(func.count()).select_from(OUTBOX).where(OUTBOX.c.sent_at.is_(None))).scalar_one()
            stored = {(r.consumer, r.topic, r.partition): r.next_offset for r in conn.execute(select(OFFSETS))}
        for consumer, consumer_topics in groups[service].items():
            result.lag[consumer] = sum(max(0, end - stored.get((consumer, topic, partition), 0))
                                       for (topic, partition), end in ends.items() if topic in consumer_topics)
    return result


def wait_caught_up(platform: Platform, engines: Mapping[str, Engine], bootstrap: str, groups: Subscriptions,
                   timeout: float) -> tuple[bool, float, Backlog]:
    """Poll until nothing is left to do, twice in a row; (done, seconds waited, last backlog).

    A worker that died on its own meanwhile ends the wait at once (ProcessGroup.check raises).
    """
    started = time.monotonic()
    quiet = 0
    last = Backlog()
    while time.monotonic() - started < timeout:
        platform.processes.check()
        try:
            last = backlog(engines, bootstrap, groups)
        except (OperationalError, KafkaException) as exc:  # still coming back after a fault: ask again
            last = Backlog(unsent={f"(unreachable: {type(exc).__name__})": 1})
        quiet = quiet + 1 if last.empty else 0
        if quiet >= 2:
            return True, time.monotonic() - started, last
        time.sleep(1.0)
    return False, time.monotonic() - started, last
