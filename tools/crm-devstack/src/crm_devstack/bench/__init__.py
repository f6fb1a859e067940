"""``make bench``: the platform's speed as ratios to baselines measured in the same run.

It starts its own PostgreSQL and Kafka (temporary folders), the whole platform on them and
two bare baseline apps, drives them with an asyncio load generator (aiohttp) and reports its
figures, each next to its baseline: create-lead throughput and latency, stage change ->
trigger action, outbox commit -> Kafka, a list page at 100k and 1M records, bulk creation,
catch-up after the workers were stopped, a read carrying the consistency token of the write
just before it (read-your-writes) against the same read without one, the console's board,
an import, memory, CPU by part, and a lead's commit -> its webhook on a loopback receiver with
the deliveries/s against the creates/s. The table is printed and written to
``.run/bench/bench.json`` and ``.run/bench/bench.png``. ``BENCH_SCALE`` sizes it (see
``BenchPlan``); ``python -m crm_devstack.bench --help`` lists the options.
"""

from crm_devstack.bench.figures import DEFAULT_SCALE, BenchPlan
from crm_devstack.bench.report import FIGURES, Row
from crm_devstack.bench.runner import BenchReport, run_bench

__all__ = ["DEFAULT_SCALE", "FIGURES", "BenchPlan", "BenchReport", "Row", "run_bench"]
