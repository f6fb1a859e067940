"""Command line of ``make bench``: ``python -m crm_devstack.bench [options]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from crm_devstack.arguments import add_load_options, positive
from crm_devstack.bench.figures import DEFAULT_SCALE, BenchPlan
from crm_devstack.bench.load import LoadError
from crm_devstack.bench.runner import default_output_dir, run_bench, say
from crm_devstack.errors import DevstackError


def _assignment(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {raw!r}")
    return name.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m crm_devstack.bench",
        description="Benchmark the platform on its own PostgreSQL and Kafka against baselines from the same run.")
    env_scale = os.environ.get("BENCH_SCALE", "").strip()
    parser.add_argument("--scale", type=positive(float, "BENCH_SCALE"),
                        default=env_scale or DEFAULT_SCALE,
                        help=f"data set size, 1 = lists of 100k and 1M records; below the default also shortens "
                             f"the timed phases (default: $BENCH_SCALE or {DEFAULT_SCALE:g})")
    add_load_options(parser)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", type=_assignment,
                        help="extra environment for every platform process, for before/after comparisons "
                             "(e.g. --env CRM_WEB_THREADS=8); repeatable")
    parser.add_argument("--out", type=Path, default=None, help="where bench.json and bench.png go (.run/bench)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    plan = BenchPlan(scale=float(args.scale), concurrency=args.concurrency, web_concurrency=args.web_concurrency,
                     web_threads=args.web_threads, platform_env=tuple(args.env))
    try:
        out = args.out or default_output_dir()
        report = run_bench(plan, out)
    except (DevstackError, LoadError) as exc:
        print(f"[bench] failed: {exc}", file=sys.stderr, flush=True)
        return 1
    print()
    print(report.table)
    print()
    say(f"done in {report.seconds:.0f} s; report: {report.json_path}, chart: {report.chart_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
