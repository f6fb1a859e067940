"""Prometheus metrics, correct under gunicorn's multiprocess mode.

With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn api processes), values are written to files
in that directory and ``/metrics`` merges them with a fresh registry per scrape; the
gunicorn hooks in ``crm_kit.web.gunicorn_conf`` wipe the directory at start and mark dead
workers. Without it (the worker process, tests) the default registry is served.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Buckets with one at 0.25 s: the latency SLO the alert rules use.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "crm_http_requests_total", "HTTP requests handled, by route template and status.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "crm_http_request_duration_seconds", "HTTP request duration by route template.",
    ["service", "method", "route"], buckets=LATENCY_BUCKETS,
)
EVENTS_PUBLISHED = Counter("crm_events_published_total", "Events the outbox relay delivered to Kafka.",
                           ["service", "topic"])
EVENTS_CONSUMED = Counter("crm_events_consumed_total", "Events a consumer finished, by result (applied, "
                          "duplicate, dead_lettered; ignored: a type the consumer does not act on).",
                          ["service", "consumer", "topic", "result"])
EVENT_RETRIES = Counter("crm_event_retries_total", "Failed attempts at an event that were retried.",
                        ["service", "consumer", "topic"])
DLQ_MESSAGES = Counter("crm_dlq_messages_total", "Messages sent to a dead-letter topic.",
                       ["service", "consumer", "topic"])
OUTBOX_BACKLOG = Gauge("crm_outbox_backlog", "Outbox rows not yet delivered to Kafka.", ["service"],
                       multiprocess_mode="max")
OUTBOX_OLDEST_AGE = Gauge("crm_outbox_oldest_age_seconds", "Age of the oldest undelivered outbox row.",
                          ["service"], multiprocess_mode="max")
OUTBOX_PUBLISH_LATENCY = Histogram("crm_outbox_publish_latency_seconds",
                                   "Time from an outbox row's commit to its confirmed delivery.", ["service"],
                                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
CONSUMER_LAG = Gauge("crm_consumer_lag", "Messages behind the end of each partition, per consumer group.",
                     ["service", "consumer", "topic", "partition"], multiprocess_mode="max")
CONSISTENCY_CHECKS = Counter(
    "crm_consistency_checks_total", "Read-your-writes checks, by stage (read_models: this service's copies "
    "against a client's token; outbox: this service's events on Kafka) and result (fresh: no wait; waited; "
    "timeout: answered 503; stale: answered from older state, for a request without a token).",
    ["service", "stage", "result"],
)
CONSISTENCY_WAIT = Histogram(
    "crm_consistency_wait_seconds", "Time a request waited for read models or the outbox to be as fresh as asked.",
    ["service", "stage"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WORKER_HEARTBEAT = Gauge("crm_worker_heartbeat_timestamp_seconds", "Last time each worker loop made progress.",
                         ["service", "loop"], multiprocess_mode="max")


def fresh_multiprocess_directory() -> None:
    """Empty ``PROMETHEUS_MULTIPROC_DIR`` (creating it if needed): files of a previous run
    would be summed in. Call before any metric is touched - an unlabelled metric writes its
    file at import time."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


class _MultiProcessFiles:
    """prometheus-client's multiprocess merge, minus a known race (client_python #1199):
    a process creates its file before sizing it, so a scrape can meet a 0-byte file and fail
    as a whole - for good, if that process was killed in between. Files too small to hold
    the header are skipped (they hold no values yet); a file removed mid-scrape (a worker
    marked dead, #425) makes the scrape try again."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        for attempt in range(3):
            files = []
            for name in glob.glob(os.path.join(self.path, "*.db")):
                try:
                    if os.path.getsize(name) >= 8:
                        files.append(name)
                except FileNotFoundError:
                    continue
            try:
                return MultiProcessCollector.merge(files, accumulate=True)
            except FileNotFoundError:
                if attempt == 2:
                    raise
        return []


def render_latest() -> tuple[bytes, str]:
    """The exposition text of this process (or of every gunicorn worker, merged)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        registry.register(_MultiProcessFiles(directory))  # type: ignore[arg-type]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
