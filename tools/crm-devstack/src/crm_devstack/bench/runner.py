"""``make bench`` from start to finish: its own PostgreSQL and Kafka under temporary folders, the
platform and the two baseline apps on them, every figure, the report, and a clean stop.

``run_bench`` can also measure a platform that is already running (the test suite's, at a tiny
scale): then it starts only the baseline apps and cleans up what it added to the platform.
"""

from __future__ import annotations

import contextlib
import os
import platform as host
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from crm_devstack.bench import cpu
from crm_devstack.bench.baselines import create_tables
from crm_devstack.bench.figures import Bench, BenchPlan
from crm_devstack.bench.report import Row, format_breakdown, format_table, write_chart, write_json
from crm_devstack.errors import DevstackError
from crm_devstack.kafka import KafkaBroker, ensure_kafka_jars
from crm_devstack.platform import Platform, start_platform
from crm_devstack.ports import free_port
from crm_devstack.postgres import PostgresCluster
from crm_devstack.stack import find_repo_root
from crm_devstack.supervisor import ProcessGroup, wait_http_ok

DB_PREFIX = "bench"


@dataclass(frozen=True)
class BenchReport:
    rows: list[Row]
    table: str
    json_path: Path
    chart_path: Path
    seconds: float


@dataclass(frozen=True)
class Target:
    """A running platform to measure, with the PostgreSQL cluster and broker it runs on."""

    platform: Platform
    postgres: PostgresCluster
    bootstrap: str
    db_prefix: str
    kafka: KafkaBroker | None = None  # when the bench started the broker itself


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def default_output_dir() -> Path:
    return find_repo_root() / ".run" / "bench"


def _kafka_cache() -> Path:
    configured = os.environ.get("CRM_KAFKA_CACHE")
    return Path(configured) if configured else find_repo_root() / ".run" / "kafka-cache"


@dataclass(frozen=True)
class BaselineApps:
    urls: dict[str, str]  # endpoint URLs by name (``json``, ``insert``)
    pids: dict[str, int]  # their gunicorn masters (figure 11 counts the insert app's CPU)


@contextlib.contextmanager
def baseline_apps(plan: BenchPlan, postgres: PostgresCluster, logs: Path) -> Iterator[BaselineApps]:
    """The two baseline apps under gunicorn with the platform's worker and thread counts."""
    url = postgres.create_database(f"bench_baseline_{uuid.uuid4().hex[:8]}")
    create_tables(url)
    gunicorn = Path(sys.prefix) / "bin" / "gunicorn"
    processes = ProcessGroup()
    urls = {}
    try:
        for name, factory in (("json", "create_json_app"), ("insert", "create_insert_app")):
            port = free_port()
            argv = [str(gunicorn), "--workers", str(plan.web_concurrency), "--threads", str(plan.web_threads),
                    "--worker-class", "gthread", "--keep-alive", "5", "--bind", f"127.0.0.1:{port}",
                    "--no-control-socket", "--log-level", "warning", f"crm_devstack.bench.baselines:{factory}()"]
            env = {**os.environ, "BENCH_DATABASE_URL": url}
            processes.add(f"baseline-{name}", argv, env, logs / f"baseline-{name}.log")
            urls[name] = f"http://127.0.0.1:{port}/items"
        for name in urls:
            wait_http_ok(urls[name].replace("/items", "/healthz"), timeout=60, check=processes.check)
        yield BaselineApps(urls, {name: pid for name in urls if (pid := processes.pid(f"baseline-{name}"))})
    finally:
        processes.stop_all()


@contextlib.contextmanager
def bench_stack(plan: BenchPlan, out_dir: Path, log: Callable[[str], None] = say) -> Iterator[Target]:
    """PostgreSQL and Kafka under temporary folders and the platform on them.

    Raises ``DevstackError`` saying which part could not start; everything started is stopped
    on the way out, and after a failure the platform's logs are kept in ``out_dir/logs``.
    """
    # Not under the caller's tmp dir: the postgres OS user must be able to reach its folder.
    pg_dir = Path(tempfile.mkdtemp(prefix="crm-bench-pg-"))
    kafka_dir = Path(tempfile.mkdtemp(prefix="crm-bench-kafka-"))
    postgres: PostgresCluster | None = None
    kafka: KafkaBroker | None = None
    running: Platform | None = None
    try:
        log("starting PostgreSQL")
        try:
            postgres = PostgresCluster(pg_dir)
            postgres.start()
        except DevstackError as exc:
            raise DevstackError(f"PostgreSQL could not start, so the bench cannot run:\n{exc}") from None
        log("starting Kafka (jars from the Maven cache in .run/kafka-cache, fetched once)")
        try:
            kafka = KafkaBroker(kafka_dir, ensure_kafka_jars(_kafka_cache()))
            kafka.start(timeout=120)
        except DevstackError as exc:
            raise DevstackError(f"Kafka could not start, so the bench cannot run:\n{exc}") from None
        log("starting the platform (migrations, every api and worker, the gateway)")
        env = {
            "CRM_WEB_CONCURRENCY": str(plan.web_concurrency),
            "CRM_WEB_THREADS": str(plan.web_threads),
            # The gateway limits each token; the load generator is one token.
            "CRM_RATE_LIMIT": "1000000/second",
            **dict(plan.platform_env),
        }
        running = start_platform(kafka, postgres, db_prefix=DB_PREFIX, env=env, ready_timeout=240)
        try:
            yield Target(running, postgres, kafka.bootstrap, DB_PREFIX, kafka)
        except BaseException:
            keep = out_dir / "logs" / "platform"
            shutil.copytree(running.config.logs_dir, keep, dirs_exist_ok=True)
            log(f"the platform's logs are kept in {keep}")
            raise
    finally:
        log("stopping everything")
        if running is not None:
            running.stop()
        if kafka is not None:
            kafka.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(kafka_dir, ignore_errors=True)


def measure(plan: BenchPlan, target: Target, baselines: BaselineApps, log: Callable[[str], None], *,
            clean_up: bool = False) -> tuple[list[Row], dict[str, object]]:
    """Every figure, in an order that keeps them apart: the latency figures on a quiet platform
    first, the load figures next, the catch-up (which stops the workers) last. ``clean_up``
    takes the bench's trigger and bulk-loaded rows out again (for a platform that stays up)."""
    bench = Bench(plan, target.platform, target.postgres, target.bootstrap, baselines.urls, target.db_prefix, log,
                  baseline_pids=baselines.pids, kafka_pid=target.kafka.pid if target.kafka is not None else None)
    try:
        bench.setup()
        outbox = bench.figure_outbox()
        trigger = bench.figure_trigger()
        ryw = bench.figure_read_your_writes()
        create = bench.figure_create()
        bulk = bench.figure_bulk()
        bench.settle("figures 1 and 5")
        cpu_use = bench.figure_cpu()
        trigger_load = bench.figure_trigger_under_load()
        webhooks = bench.figure_webhooks()
        listing = bench.figure_list()
        bench.settle("figure 4")
        imports = bench.figure_import()
        bench.settle("figure 9")
        catchup = bench.figure_catchup()
        board = bench.figure_board()  # last: its 500 leads' events need no settling before anything
    finally:
        if clean_up:
            bench.clean_up()
    return (create + trigger + trigger_load + outbox + listing + bulk + catchup + ryw + board + imports + cpu_use
            + webhooks, bench.details)


def run_bench(plan: BenchPlan, out_dir: Path, *, log: Callable[[str], None] = say,
              target: Target | None = None) -> BenchReport:
    """Measure every figure and write ``bench.json`` and ``bench.png`` in ``out_dir``.

    Without ``target`` it starts (and stops) its own PostgreSQL, Kafka and platform. Raises
    ``DevstackError`` with the reason when something cannot start or a figure cannot be
    measured; everything it started is stopped either way.
    """
    began = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    log(f"BENCH_SCALE={plan.scale:g}: list data sets of {plan.list_sizes[0]:,} and {plan.list_sizes[1]:,} records, "
        f"{plan.load_seconds:g} s load phases, {plan.samples} latency samples, {plan.catchup_seconds:g} s "
        f"catch-up backlog; web processes: {plan.web_concurrency} workers x {plan.web_threads} threads")
    own = target is None
    with contextlib.ExitStack() as stack:
        if target is None:
            target = stack.enter_context(bench_stack(plan, out_dir, log))
        log("starting the baseline apps")
        baselines = stack.enter_context(baseline_apps(plan, target.postgres, logs))
        rows, details = measure(plan, target, baselines, log, clean_up=not own)
    if own:  # figure 10 starts make run's platform of its own, once the bench's has stopped
        from crm_devstack.bench.memory_figure import figure_memory

        rows += figure_memory(plan.load_seconds, plan.concurrency, log, details)

    seconds = time.monotonic() - began
    json_path, chart_path = out_dir / "bench.json", out_dir / "bench.png"
    meta = {
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "system": host.platform(),
                    "load_average_at_end": list(os.getloadavg())},
        "plan": {**asdict(plan), "list_sizes": plan.list_sizes, "load_seconds": plan.load_seconds,
                 "warmup_seconds": plan.warmup_seconds, "samples": plan.samples,
                 "catchup_seconds": plan.catchup_seconds},
        "details": details,
    }
    write_json(json_path, rows, meta)
    breakdown = cpu.breakdown(details)
    write_chart(chart_path, rows, f"make bench, BENCH_SCALE={plan.scale:g}, {os.cpu_count()} CPUs: "
                                  "each figure against its baseline from the same run", breakdown)
    table = format_table(rows) + (f"\n\n{format_breakdown(breakdown)}" if breakdown is not None else "")
    return BenchReport(rows, table, json_path, chart_path, seconds)
